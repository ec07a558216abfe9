"""The procedural world, its three tasks, and the pretraining script (tiny sizes)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cmpt_lightning.datasets.world import GREYSCALE, MENTION, VALUES, WORDS, World
from cmpt_lightning.datasets.world_tasks import (
    TAGS,
    WorldClaimsDataset,
    WorldObjectsDataset,
    WorldPairs,
    WorldScenesDataset,
    WorldTagsDataset,
    ceilings,
)
from cmpt_lightning.models import build_image_transform

N = 400  # samples for the rate checks: a rate of 0.5 has a standard error of 0.025


def _phrases(attribute: str, value: str) -> list[str]:
    forms = WORDS[attribute][value]
    flat = [f for form in forms for f in (form if isinstance(form, tuple) else (form,))]
    return [re.escape(f) for f in flat]


def said_values(text: str, attribute: str) -> set[str]:
    """The values of ``attribute`` whose words occur in ``text`` (a reader's oracle)."""
    return {
        value
        for value in VALUES[attribute]
        if re.search(r"(?<![\w'])(" + "|".join(_phrases(attribute, value)) + r")(?!\w)", text)
    }


@pytest.fixture(scope="module")
def transform():
    return build_image_transform("cmpt-tiny")


@pytest.fixture(scope="module")
def captions():
    world = World(seed=1)
    return [world.caption("check", i) for i in range(N)]


def test_samples_are_pure_functions_of_seed_split_index():
    a, b = World(seed=3), World(seed=3)
    assert np.array_equal(np.asarray(a.image("train", 5)), np.asarray(b.image("train", 5)))
    assert a.caption("train", 5) == b.caption("train", 5)
    assert a.scene("train", 5) == b.scene("train", 5)
    others = [a.image("train", 6), a.image("val", 5), World(seed=4).image("train", 5)]
    first = np.asarray(a.image("train", 5))
    assert all(not np.array_equal(first, np.asarray(image)) for image in others)


def test_documented_rates_hold(captions):
    for name, p in MENTION.items():
        rate = np.mean([name in c.mentioned for c in captions])
        assert abs(rate - p) < 0.09, (name, rate, p)
    grey = np.mean([c.scene.greyscale for c in captions])
    assert abs(grey - GREYSCALE) < 0.07
    for name in ("colour", "shape", "material"):  # uniform values
        counts = np.bincount([c.scene.index(name) for c in captions], minlength=len(VALUES[name]))
        assert counts.min() > 0.5 * N / len(VALUES[name]), (name, counts)


def test_captions_state_exactly_what_they_mention(captions):
    for caption in captions:
        for name in VALUES:
            seen = said_values(caption.text, name)
            expected = {getattr(caption.scene, name)} if name in caption.mentioned else set()
            assert seen == expected, (caption.text, name, seen, expected)


def test_captions_fit_the_context(captions, tokenizer):
    ids = tokenizer([c.text for c in captions])  # [N, 32]
    assert int((ids != 0).sum(1).max()) < ids.shape[1]  # the end-of-text token is kept


def test_greyscale_images_show_no_colour():
    world = World(seed=2, greyscale=0.5)
    for i in range(40):
        pixels = np.asarray(world.image("g", i)).astype(int)  # [64, 64, 3]
        grey = bool(
            (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
        )
        assert grey == world.scene("g", i).greyscale


def test_the_caption_oracle_reaches_the_documented_text_ceiling(transform, tokenizer):
    data = WorldObjectsDataset(N, "train", transform, tokenizer, (32, 32), seed=0)
    rng = np.random.default_rng(0)
    hits = 0
    for i in range(N):
        text = data.load_text(i)
        colours = sorted(said_values(text, "colour")) or list(VALUES["colour"])
        shapes = sorted(said_values(text, "shape")) or list(VALUES["shape"])
        guess = VALUES["colour"].index(rng.choice(colours)) * 4 + VALUES["shape"].index(
            rng.choice(shapes)
        )
        hits += guess == int(data.target(i))
    assert abs(hits / N - ceilings("objects", data.world)["text"]) < 0.08


def test_objects_task(transform, tokenizer):
    data = WorldObjectsDataset(30, "val", transform, tokenizer, (32, 32))
    assert data.num_classes == 24 and data.kind.value == "multiclass"
    sample = data[3]
    assert sample["image"].shape == (3, 32, 32) and sample["text"].shape == (32,)
    scene = data.scene(3)
    assert data.classes[int(sample["label"])] == f"{scene.colour} {scene.shape}"
    assert len(set(data.ids)) == 30 and data.ids[0] == "world-objects-val-000000"


def test_scenes_task(transform, tokenizer):
    data = WorldScenesDataset(60, "val", transform, tokenizer, (32, 32))
    assert data.num_classes == 32 and data.kind.value == "multiclass"
    assert data.classes[0] == "wood circle on light" and len(set(data.classes)) == 32
    labels = [int(data.target(i)) for i in range(60)]
    for i, label in enumerate(labels):
        scene = data.scene(i)
        assert data.classes[label] == f"{scene.material} {scene.shape} on {scene.background}"
    assert len(set(labels)) > 16 and data.ids[0] == "world-scenes-val-000000"
    assert data[0]["label"].dtype == torch.long


def test_tags_task(transform, tokenizer):
    data = WorldTagsDataset(200, "train", transform, tokenizer, (32, 32))
    labels = torch.stack([data.target(i) for i in range(200)])  # [200, 18]
    assert labels.shape == (200, len(TAGS)) == (200, data.num_classes)
    assert labels.dtype == torch.float32 and set(labels.unique().tolist()) <= {0.0, 1.0}
    for group in ("colour", "shape", "material"):
        columns = [TAGS.index(v) for v in VALUES[group]]
        assert (labels[:, columns].sum(1) == 1).all()
    assert 3 <= labels.sum(1).min() and labels.sum(1).max() <= 7
    assert labels.sum(0).min() > 0  # every tag occurs


def test_claims_task(transform, tokenizer):
    data = WorldClaimsDataset(200, "train", transform, tokenizer, (32, 32))
    labels = [int(data.target(i)) for i in range(200)]
    assert 60 < sum(labels) < 140 and data.kind.value == "binary"
    for i, label in enumerate(labels):
        true, (_, attribute, claimed) = data.scene(i), data.claim(i)
        caption = data.caption(i)
        assert attribute in caption.mentioned
        stated = said_values(caption.text, attribute)
        assert stated == {getattr(claimed, attribute)}
        assert (stated != {getattr(true, attribute)}) == bool(label)
        assert data.load_image(i).size == (64, 64)
    with pytest.raises(ValueError, match="claim_attributes"):
        WorldClaimsDataset(2, "x", transform, tokenizer, (32, 32), claim_attributes=("owner",))


def test_ceilings_match_the_documented_table():
    world = World()
    rounded = {
        t: {k: round(v, 3) for k, v in ceilings(t, world).items()}
        for t in ("objects", "tags", "claims", "scenes")
    }
    assert rounded["objects"] == {"image": 0.833, "text": 0.643, "both": 0.958, "chance": 0.042}
    assert rounded["tags"] == {"image": 0.830, "text": 0.802, "both": 0.917, "chance": 0.429}
    assert rounded["claims"] == {"image": 0.5, "text": 0.5, "both": 0.991, "chance": 0.5}
    assert rounded["scenes"] == {"image": 0.25, "text": 0.33, "both": 0.625, "chance": 0.031}
    assert ceilings("claims", world, ("shape",))["both"] == 1.0
    with pytest.raises(ValueError, match="task must be one of"):
        ceilings("nope", world)


def test_pairs_and_bad_settings(transform):
    pairs = WorldPairs(World(), "pretrain", 5, transform)
    item = pairs[2]
    assert item["image"].shape == (3, 32, 32) and isinstance(item["caption"], str)
    with pytest.raises(ValueError, match="unknown attributes"):
        World(mention={"flavour": 0.5})
    with pytest.raises(ValueError, match="must be in"):
        World(greyscale=1.5)


@pytest.fixture
def script(pretrain_script):
    return pretrain_script


def test_bayes_recall_breaks_ties_at_random(script):
    world = World()
    caption = world.caption("x", 0)
    twins = script.bayes_recall([caption, caption], ks=(1,))
    assert twins == {"image_to_text": {"r1": 0.5}, "text_to_image": {"r1": 0.5}}


def test_pretraining_runs_and_reports_recall(script, tmp_path):
    config = script.PretrainConfig(
        steps=3,
        batch_size=16,
        warmup=1,
        eval_pairs=32,
        eval_every=0,
        num_workers=0,
        out_dir=str(tmp_path),
    )
    report = script.pretrain(config)
    assert len(report["loss"]["curve"]) == 3 and all(
        math.isfinite(v) for v in report["loss"]["curve"]
    )
    for direction in ("image_to_text", "text_to_image"):
        for k in ("r1", "r5"):
            assert 0.0 <= report["recall"][direction][k] <= 1.0
            assert report["chance"][k] <= report["ceiling"][direction][k] <= 1.0
    weights = Path(report["weights"]["path"])
    assert weights.is_file() and (tmp_path / "cmpt-tiny-world.json").is_file()
