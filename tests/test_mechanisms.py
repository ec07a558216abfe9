"""missing.mechanism: label- and score-dependent missingness, exact, nested and seeded."""

import pytest
import torch
from jsonargparse import ArgumentParser

from cmpt_lightning import MissingConfig, MissingPlan, SyntheticDataModule
from cmpt_lightning.datamodules.mechanism_inputs import sample_score
from cmpt_lightning.mechanisms import label_strata
from cmpt_lightning.missing import exact_floor

RATES = (0.0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.9, 1.0)


def _missing(plan: MissingPlan, rate: float) -> torch.Tensor:
    _, txt = plan.masks(rate, "text")
    return ~txt


def _check_exact_and_nested(plan: MissingPlan, n: int) -> None:
    previous = torch.zeros(n, dtype=torch.bool)
    for rate in RATES:
        missing = _missing(plan, rate)
        assert int(missing.sum()) == exact_floor(n, rate), rate
        assert bool((missing | ~previous).all()), f"not nested at {rate}"
        previous = missing


def test_label_mechanism_gives_per_class_rates_in_proportion_to_the_weights():
    labels = [0] * 300 + [1] * 100 + [2] * 200
    config = MissingConfig(
        rate=0.3, type="text", mechanism="label", class_weights={"a": 2.0, "c": 0.5}
    )
    plan = config.plan(len(labels), labels=labels, class_names=["a", "b", "c"])
    _check_exact_and_nested(plan, len(labels))
    missing = _missing(plan, 0.3)
    per_class = [int(missing[:300].sum()), int(missing[300:400].sum()), int(missing[400:].sum())]
    # weights 2, 1, 0.5: rates r * w / mean weight, mean weight (600 + 100 + 100) / 600
    mean = (300 * 2 + 100 * 1 + 200 * 0.5) / 600
    expected = [300 * 0.3 * 2 / mean, 100 * 0.3 / mean, 200 * 0.3 * 0.5 / mean]
    assert sum(per_class) == 180
    assert all(abs(got - want) <= 1 for got, want in zip(per_class, expected, strict=True))
    # the same seed gives the same masks, another seed other ones (with the same counts)
    again = config.plan(len(labels), labels=labels, class_names=["a", "b", "c"])
    assert torch.equal(_missing(again, 0.3), missing)
    other = MissingConfig(**{**vars(config), "seed": 1}).plan(
        len(labels), labels=labels, class_names=["a", "b", "c"]
    )
    assert not torch.equal(_missing(other, 0.3), missing)


def test_label_weight_zero_spares_a_class_until_the_others_run_out():
    labels = [0] * 50 + [1] * 50
    plan = MissingConfig(mechanism="label", class_weights={"1": 0}).plan(
        100, labels=labels, class_names=["x", "y"]
    )
    assert int(_missing(plan, 0.5)[50:].sum()) == 0
    assert int(_missing(plan, 0.6)[50:].sum()) == 10
    with pytest.raises(ValueError, match=r"class_weights names the class 'z'.*\['x', 'y'\]"):
        MissingConfig(mechanism="label", class_weights={"z": 2}).plan(
            100, labels=labels, class_names=["x", "y"]
        )
    with pytest.raises(ValueError, match="class weight of 'x' must be a finite number >= 0"):
        MissingConfig(mechanism="label", class_weights={"x": -1})
    with pytest.raises(ValueError, match="needs the samples' labels"):
        MissingConfig(mechanism="label").plan(10)


def test_label_strata_of_multilabel_rows():
    strata, weights = label_strata(
        [[1, 0, 1], [0, 0, 0], [1, 0, 1], [0, 1, 0]], ["p", "q", "r"], {"p": 3.0}
    )
    assert strata == ["p+r", "(none)", "p+r", "q"]
    assert weights == {"p+r": 2.0, "(none)": 1.0, "q": 1.0}


def test_score_mechanism_takes_high_scores_first_and_is_mcar_at_strength_zero():
    n = 400
    scores = [float(i % 40) for i in range(n)]
    mcar = MissingConfig(rate=0.3, type="text").plan(n)
    flat = MissingConfig(mechanism="score", score_strength=0.0).plan(n, scores=scores)
    assert torch.equal(flat.order, mcar.order)
    score = torch.tensor(scores)
    means = {}
    for direction in ("high", "low"):
        config = MissingConfig(mechanism="score", score_strength=2.0, score_direction=direction)
        plan = config.plan(n, scores=scores)
        _check_exact_and_nested(plan, n)
        missing = _missing(plan, 0.3)
        means[direction] = float(score[missing].mean())
    assert means["high"] > 19.5 + 8 and means["low"] < 19.5 - 8, means
    with pytest.raises(ValueError, match="score_strength must be a finite number >= 0"):
        MissingConfig(mechanism="score", score_strength=-1.0)
    with pytest.raises(ValueError, match="needs each sample's text_length score"):
        MissingConfig(mechanism="score").plan(10)
    with pytest.raises(ValueError, match="unknown score name 'length'"):
        MissingConfig(mechanism="score", score="length")


def test_groups_share_masks_under_the_score_mechanism():
    ids = [f"m{i // 2}-p{i % 2}" for i in range(60)]
    groups = [i // 2 for i in range(60)]
    plan = MissingPlan(ids, seed=3, groups=groups, scores=[float(i) for i in range(60)])
    missing = _missing(plan, 0.5)
    assert int(missing.sum()) == 30 and torch.equal(missing[0::2], missing[1::2])


def test_sample_scores():
    sample = {"text": torch.tensor([49406, 320, 1929, 49407, 0, 0]), "image": torch.ones(3, 2, 2)}
    assert sample_score(sample, "text_length") == 4.0
    assert sample_score(sample, "image_brightness") == 1.0
    assert sample_score(sample, "image_contrast") == 0.0


def test_data_module_ranks_by_label_and_the_counts_follow():
    config = MissingConfig(rate=0.5, type="image", mechanism="label", class_weights={"0": 3})
    data = SyntheticDataModule(
        train_size=16, val_size=16, test_size=120, batch_size=16, eval_missing=config
    )
    data.setup("test")
    labels = torch.tensor([int(data.datasets["test"][i]["label"]) for i in range(120)])
    img, _ = data.masks("test")
    rates = {c: float((~img[labels == c]).float().mean()) for c in range(data.num_classes)}
    assert int((~img).sum()) == 60
    assert rates[0] > max(rates[c] for c in range(1, data.num_classes))
    # a test grid ranks the test split with the same mechanism
    assert torch.equal(data.plan("test", 0).masks(0.5, "image")[0], img)


def test_mechanism_settings_parse_from_a_config():
    parser = ArgumentParser()
    parser.add_argument("--missing", type=MissingConfig)
    parsed = parser.parse_args(
        [
            '--missing={"rate": 0.3, "mechanism": "label", "class_weights": {"dog": 2}}',
        ]
    )
    config = parser.instantiate(parsed).missing
    assert config.mechanism == "label" and config.class_weights == {"dog": 2.0}
    bad = parser.parse_args(['--missing={"mechanism": "mnar"}'])
    with pytest.raises(ValueError, match="unknown missing mechanism 'mnar'; choose one of"):
        parser.instantiate(bad)
