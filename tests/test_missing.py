import pytest
import torch

from cmpt_lightning import MissingConfig, missing_mask
from cmpt_lightning.missing import exact_floor, ranking


@pytest.mark.parametrize(
    "n,rate,expected", [(100, 0.29, 29), (100, 0.57, 57), (7, 0.5, 3), (10, 1.0, 10), (10, 0.0, 0)]
)
def test_exact_counts(n, rate, expected):
    assert exact_floor(n, rate) == expected
    img, txt = missing_mask(n, rate, "text")
    assert int((~txt).sum()) == expected and bool(img.all())
    img, txt = missing_mask(n, rate, "image")
    assert int((~img).sum()) == expected and bool(txt.all())


def test_both_split_and_no_sample_loses_both():
    img, txt = missing_mask(1000, 0.7, "both", both_ratio=0.3, seed=4)
    assert int((~img).sum()) == exact_floor(700, 0.3) == 210
    assert int((~txt).sum()) == 490
    assert not bool((~img & ~txt).any())


def test_nested_across_rates_and_type_kept():
    ids = [f"sample-{i}" for i in range(500)]
    prev_img, prev_txt = missing_mask(ids, 0.0, "both")
    for rate in (0.1, 0.3, 0.5, 0.7, 0.9, 1.0):
        img, txt = missing_mask(ids, rate, "both")
        missing_now, missing_before = ~img | ~txt, ~prev_img | ~prev_txt
        assert bool((missing_now | ~missing_before).all()), "not nested"
        assert not bool((~prev_img & img).any()), "a sample that lost its image got it back"
        assert not bool((~prev_txt & txt).any()), "a sample that lost its text got it back"
        prev_img, prev_txt = img, txt


def test_order_of_ids_does_not_matter():
    ids = [str(i) for i in range(200)]
    img, txt = missing_mask(ids, 0.4, "both", seed=3)
    rev_img, rev_txt = missing_mask(ids[::-1], 0.4, "both", seed=3)
    assert torch.equal(img, rev_img.flip(0)) and torch.equal(txt, rev_txt.flip(0))


def test_seed_and_epoch_change_the_draw():
    a = missing_mask(300, 0.5, "text", seed=0)[1]
    b = missing_mask(300, 0.5, "text", seed=1)[1]
    c = missing_mask(300, 0.5, "text", seed=0, epoch=1)[1]
    assert not torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, missing_mask(300, 0.5, "text", seed=0)[1])


def test_ids_may_be_ints_or_strings_and_must_be_unique():
    assert torch.equal(missing_mask([0, 1, 2, 3], 0.5, "text")[1], missing_mask(4, 0.5, "text")[1])
    with pytest.raises(ValueError, match="unique"):
        missing_mask(["a", "b", "a"], 0.5, "text")
    assert len(ranking(["x", "y"])) == 2


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"rate": 1.5, "missing_type": "text"}, "missing rate must be in \\[0, 1\\], got 1.5"),
        ({"rate": -0.1, "missing_type": "text"}, "missing rate must be in \\[0, 1\\]"),
        ({"rate": 0.5, "missing_type": "audio"}, "unknown missing type 'audio'"),
        (
            {"rate": 0.5, "missing_type": "both", "both_ratio": 2.0},
            "both_ratio must be in \\[0, 1\\]",
        ),
    ],
)
def test_bad_settings_fail_with_the_field_named(kwargs, error):
    with pytest.raises(ValueError, match=error):
        missing_mask(10, **kwargs)


def test_config_validates_and_resamples():
    with pytest.raises(ValueError, match="missing rate"):
        MissingConfig(rate=2.0)
    with pytest.raises(ValueError, match="unknown missing type"):
        MissingConfig(type="video")
    fixed = MissingConfig(rate=0.5, type="image")
    assert torch.equal(fixed.masks(50, epoch=0)[0], fixed.masks(50, epoch=3)[0])
    redraw = MissingConfig(rate=0.5, type="image", resample_each_epoch=True)
    assert not torch.equal(redraw.masks(50, epoch=0)[0], redraw.masks(50, epoch=3)[0])
