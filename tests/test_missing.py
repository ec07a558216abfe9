import hashlib

import pytest
import torch

from cmpt_lightning import AvailabilityCase, MissingConfig, MissingPlan, missing_mask
from cmpt_lightning.missing import (
    CASE_ORDER,
    availability_counts,
    case_index,
    exact_floor,
    rank_key,
    ranking,
)


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


def test_rank_key_is_the_protocol_hash_and_orders_the_ranking():
    assert rank_key("tt01", 3) == hashlib.blake2b(b"3:tt01", digest_size=8).digest()
    assert rank_key("tt01", 3, epoch=2) == hashlib.blake2b(b"3:2:tt01", digest_size=8).digest()
    keys = [f"s{i}" for i in range(50)]
    expected = sorted(range(50), key=lambda i: (rank_key(keys[i], 5, 1), keys[i]))
    assert ranking(keys, seed=5, epoch=1) == expected


def test_draws_are_unchanged():
    """Pinned draws: a change of the hash, the salt or the tie-break would move them."""
    assert ranking(10, seed=0) == [3, 7, 9, 8, 5, 4, 2, 6, 0, 1]
    assert ranking(["a", "b", "c", "d"], seed=3, epoch=2) == [3, 0, 1, 2]
    img, txt = missing_mask(10, 0.5, "both", seed=7)
    assert (~img).nonzero().flatten().tolist() == [1, 5]
    assert (~txt).nonzero().flatten().tolist() == [2, 4, 6]


# MM-IMDb's plots of one movie: 7 movies, 13 samples, shuffled
GROUPED_IDS = [
    "tt001#0", "tt005#1", "tt005#0", "tt002#2", "tt005#2", "tt001#1", "tt002#0",
    "tt004#0", "tt004#1", "tt002#1", "tt000#0", "tt006#0", "tt003#0",
]  # fmt: skip
MOVIES = [sample.split("#")[0] for sample in GROUPED_IDS]


@pytest.mark.parametrize(
    "rate,kind,epoch,no_image,no_text",
    [  # the draws of 0.1's MoviePlan on these ids (seed 2)
        (0.5, "both", None, [11], [0, 1, 2, 4, 5]),
        (0.3, "text", None, [], [1, 2, 4, 11]),
        (1.0, "image", None, list(range(13)), []),
        (0.5, "both", 3, [3, 6, 9], [7, 8, 11]),
    ],
)
def test_grouped_plan_ranks_groups(rate, kind, epoch, no_image, no_text):
    plan = MissingPlan(GROUPED_IDS, seed=2, epoch=epoch, groups=MOVIES)
    img, txt = plan.masks(rate, kind)
    assert len(plan) == len(img) == 13
    assert (~img).nonzero().flatten().tolist() == no_image
    assert (~txt).nonzero().flatten().tolist() == no_text
    unique = list(dict.fromkeys(MOVIES))
    movie_img, movie_txt = MissingPlan(unique, seed=2, epoch=epoch).masks(rate, kind)
    rows = torch.tensor([unique.index(m) for m in MOVIES])
    assert torch.equal(img, movie_img[rows]) and torch.equal(txt, movie_txt[rows])
    missing_movies = {m for m, i, t in zip(MOVIES, img, txt, strict=True) if not (i and t)}
    assert len(missing_movies) == exact_floor(7, rate)  # the rate counts movies


def test_grouped_plan_needs_one_group_per_id():
    with pytest.raises(ValueError, match="one group key per id: got 2 keys for 3 ids"):
        MissingPlan(["a", "b", "c"], groups=["g", "g"])


def test_case_index_and_counts():
    img = torch.tensor([True, True, False, False, True])
    txt = torch.tensor([True, False, True, False, True])
    assert case_index(img, txt).tolist() == [0, 1, 2, -1, 0]
    assert CASE_ORDER == (
        AvailabilityCase.COMPLETE,
        AvailabilityCase.IMAGE_ONLY,
        AvailabilityCase.TEXT_ONLY,
    )
    assert availability_counts(img, txt) == {
        "complete": 2,
        "image_only": 1,
        "text_only": 1,
        "neither": 1,
        "total": 5,
    }


#: sha256 of today's (mcar) masks over seeds, types, rates, epochs and groups, as computed by
#: the code before missing.mechanism existed: the default must stay bit-identical.
MCAR_MASKS_SHA256 = "d3f1178fe68a0eadf98d69f35317ae0748f44938820e3daf9399a3cba5bdbd80"


def test_default_mechanism_keeps_todays_masks_bit_identical():
    digest = hashlib.sha256()
    ids = [f"s{i}" for i in range(257)]
    for seed in (0, 7):
        for kind in ("text", "image", "both"):
            for rate in (0.0, 0.29, 0.5, 1.0):
                for epoch in (None, 3):
                    config = MissingConfig(
                        rate=rate, type=kind, seed=seed, resample_each_epoch=epoch is not None
                    )
                    assert config.mechanism == "mcar"
                    img, txt = config.masks(ids, epoch=epoch)
                    digest.update(img.numpy().tobytes())
                    digest.update(txt.numpy().tobytes())
    groups = [i // 3 for i in range(257)]
    img, txt = MissingPlan(ids, seed=1, groups=groups).masks(0.4, "both", both_ratio=0.3)
    digest.update(img.numpy().tobytes())
    digest.update(txt.numpy().tobytes())
    assert digest.hexdigest() == MCAR_MASKS_SHA256
