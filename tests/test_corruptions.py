"""Test-time corruptions: specs, each corruption's effect, per-sample seeding, the grid's rows."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer, seed_everything

from cmpt_lightning import CMPTModule, SyntheticDataModule, TestGrid
from cmpt_lightning.corruptions import (
    Corruption,
    CorruptionKind,
    corrupt_batch,
    corrupt_images,
    corrupt_text,
    parse_corruptions,
)
from cmpt_lightning.sweep.collect import collect_sweep
from cmpt_lightning.sweep.plan import SweepSettings, plan_sweep

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo_random.yaml"
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
SOT, EOT = 49406, 49407


def _normalise(pixels):
    return (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _pixels(images):
    return images * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def _images(spec, images, index=None, seed=0, present=None):
    index = torch.arange(images.shape[0]) if index is None else index
    corruption = Corruption.parse(spec)
    return corrupt_images(images, index, corruption, seed=seed, mean=MEAN, std=STD, present=present)


def _tokens(lengths, length=40):
    """Token rows [SOT, 1..n, EOT, 0 ..] (content ids 1..n, so their order shows)."""
    rows = torch.zeros(len(lengths), length, dtype=torch.long)
    for row, n in enumerate(lengths):
        rows[row, 0], rows[row, 1 : n + 1], rows[row, n + 1] = SOT, torch.arange(1, n + 1), EOT
    return rows


def _content(row):
    end = int((row == EOT).nonzero()[0])
    assert row[0] == SOT and bool((row[end + 1 :] == 0).all())
    return row[1:end].tolist()


def test_specs_parse_to_a_canonical_form():
    assert Corruption.parse(" image_noise:0.10 ") == Corruption("image_noise", 0.1)
    assert str(Corruption.parse("image_blur:2")) == "image_blur:2.0"
    assert Corruption.parse("text_truncate:1").kind is CorruptionKind.TEXT_TRUNCATE
    assert CorruptionKind.TEXT_DROPOUT.modality == "text"
    grid = TestGrid(corruptions=["image_occlusion:0.25", "text_dropout:.3"])
    assert grid.corruptions == ["image_occlusion:0.25", "text_dropout:0.3"]
    assert TestGrid().corruptions == []


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (
            "image_noise",
            r"'image_noise' must be KIND:LEVEL, e\.g\. image_noise:0\.1; kinds: image_",
        ),
        ("image_nosie:0.1", r"kind of corruption 'image_nosie:0.1' must be one of image_noise"),
        ("image_noise:1.5", r"'image_noise:1.5'.*must be in \[0, 1\], got 1\.5"),
        ("image_blur:40", r"'image_blur:40'.*must be in \[0, 32\]"),
        ("text_dropout:-0.1", r"'text_dropout:-0.1'.*must be in \[0, 1\]"),
        ("text_truncate:nan", r"'text_truncate:nan'.*must be in \[0, 1\]"),
        ("image_occlusion:half", r"'image_occlusion:half': the level 'half' is not a number"),
    ],
)
def test_bad_specs_name_the_spec_and_the_allowed_range(spec, match):
    with pytest.raises(ValueError, match=match):
        TestGrid(corruptions=[spec])


def test_a_corruption_listed_twice_or_a_bare_string_is_refused():
    with pytest.raises(ValueError, match=r"lists image_noise:0\.1 twice"):
        parse_corruptions(["image_noise:0.1", "image_noise:0.10"])
    with pytest.raises(TypeError, match="must be a list of KIND:LEVEL specs"):
        parse_corruptions("image_noise:0.1")
    with pytest.raises(ValueError, match=r"'image_noise:3'.*must be in \[0, 1\]"):
        SweepSettings(configs=[DEMO], grid="g.yaml", out="o", test_corruptions=["image_noise:3"])


def test_noise_has_the_level_as_its_pixel_sd_and_spares_absent_images():
    images = _normalise(torch.full((4, 3, 32, 32), 0.5))  # mid grey: the clamp barely acts
    present = torch.tensor([True, True, True, False])
    out = _images("image_noise:0.1", images, present=present)
    noise = _pixels(out[:3]) - 0.5
    assert float(noise.std()) == pytest.approx(0.1, rel=0.03)
    assert abs(float(noise.mean())) < 0.005
    assert torch.equal(out[3], images[3])  # absent: as it was
    assert _images("image_noise:0.0", images) is images  # level 0 is the identity
    strong = _pixels(_images("image_noise:1.0", images))
    assert float(strong.min()) >= -1e-6 and float(strong.max()) <= 1 + 1e-6  # clamped


def _high_frequency_energy(images):
    spectrum = torch.fft.fft2(images).abs() ** 2  # shape = [B, C, H, W]
    freq = torch.fft.fftfreq(images.shape[-1]).abs()
    high = (freq.view(-1, 1) > 0.25) | (freq.view(1, -1) > 0.25)
    return float(spectrum[..., high].sum())


def test_blur_removes_high_frequencies_and_keeps_the_mean():
    images = _normalise(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    energies = [_high_frequency_energy(_pixels(_images(f"image_blur:{s}", images))) for s in (0, 1)]
    assert energies[1] < 0.05 * energies[0]
    blurred = _pixels(_images("image_blur:1.5", images))
    assert float(blurred.mean()) == pytest.approx(float(_pixels(images).mean()), abs=0.01)
    assert _images("image_blur:32", images).shape == images.shape  # sigma over the image side


def test_occlusion_covers_the_level_of_the_area_with_the_mean_grey():
    images = _normalise(torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    out = _images("image_occlusion:0.25", images)
    grey = (out == 0).all(dim=1)  # 0 after normalisation: the normalisation mean
    assert grey.float().mean(dim=(1, 2)).tolist() == [0.25] * 8  # a 16 x 16 square each
    assert len({tuple(g.nonzero()[0].tolist()) for g in grey}) > 1  # at different positions
    assert torch.equal(
        out[~grey.unsqueeze(1).expand_as(out)], images[~grey.unsqueeze(1).expand_as(out)]
    )
    assert bool((_images("image_occlusion:1.0", images) == 0).all())


def test_dropout_drops_the_level_of_the_content_tokens_in_order():
    tokens = _tokens([30] * 64 + [0])
    out = corrupt_text(tokens, torch.arange(65), Corruption.parse("text_dropout:0.3"), seed=0)
    kept = [_content(row) for row in out]
    assert sum(len(k) for k in kept[:64]) / (64 * 30) == pytest.approx(0.7, abs=0.03)
    assert all(k == sorted(k) and set(k) <= set(range(1, 31)) for k in kept)  # a subsequence
    assert kept[64] == []  # no content: nothing to keep
    everything = corrupt_text(tokens, torch.arange(65), Corruption.parse("text_dropout:1"), seed=0)
    assert [len(_content(r)) for r in everything] == [1] * 64 + [0]  # at least one token kept


def test_truncation_keeps_the_first_ceil_of_the_remaining_fraction():
    tokens = _tokens([10, 7, 1, 0])
    for level, lengths in [(0.7, [3, 3, 1, 0]), (0.5, [5, 4, 1, 0]), (1.0, [1, 1, 1, 0])]:
        out = corrupt_text(tokens, torch.arange(4), Corruption("text_truncate", level), seed=0)
        assert [_content(row) for row in out] == [list(range(1, n + 1)) for n in lengths], level
    absent = corrupt_text(
        tokens,
        torch.arange(4),
        Corruption("text_truncate", 0.5),
        seed=0,
        present=torch.tensor([False, True, True, True]),
    )
    assert torch.equal(absent[0], tokens[0])


@pytest.mark.parametrize("spec", ["image_noise:0.2", "image_occlusion:0.3", "text_dropout:0.5"])
def test_a_samples_corruption_depends_on_its_index_not_the_batching(spec):
    gen = torch.Generator().manual_seed(2)
    batch = {
        "image": _normalise(torch.rand(6, 3, 16, 16, generator=gen)),
        "text": _tokens([12] * 6),
        "index": torch.tensor([10, 11, 12, 13, 14, 15]),
    }
    corruption, state = Corruption.parse(spec), torch.get_rng_state()
    whole = corrupt_batch(batch, corruption, seed=3, mean=MEAN, std=STD)
    order = torch.tensor([4, 1, 5])  # other batches, in another order
    parts = {key: value[order] for key, value in batch.items()}
    part = corrupt_batch(parts, corruption, seed=3, mean=MEAN, std=STD)
    key = "image" if spec.startswith("image") else "text"
    assert torch.equal(part[key], whole[key][order])
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    other = corrupt_batch(batch, corruption, seed=4, mean=MEAN, std=STD)
    assert not torch.equal(other[key], whole[key])  # the seed matters


STRONG = ["image_occlusion:1.0", "text_truncate:1.0"]


def _data():
    return SyntheticDataModule(train_size=32, val_size=8, test_size=40, batch_size=16)


@pytest.fixture(scope="module")
def grid_rows(tmp_path_factory):
    """sweep.csv of a tiny fit + test with three corruptions (one equivalent to none)."""
    seed_everything(0)
    module = CMPTModule(num_classes=6)
    options = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False}
    options |= {"enable_checkpointing": False, "enable_model_summary": False}
    root = tmp_path_factory.mktemp("corrupt")
    Trainer(max_steps=2, limit_val_batches=0, default_root_dir=root, **options).fit(
        module, datamodule=_data()
    )
    specs = ["text_dropout:0.0", *STRONG]
    module.test_grid = TestGrid(rates=[0.0, 0.5, 1.0], corruptions=specs)
    Trainer(default_root_dir=root, **options).test(module, datamodule=_data(), verbose=False)
    with (root / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    payload = json.loads((root / "sweep.json").read_text())
    return rows, payload, module.test_grid_results


CASES = [("both", "0.0"), ("text", "1.0"), ("image", "1.0")]  # complete, image only, text only


def _metrics(row):
    return {k: v for k, v in row.items() if "proxy_" not in k and k not in ("corruption", "level")}


def test_corruption_rows_join_the_test_grid(grid_rows):
    rows, payload, results = grid_rows
    assert list(rows[0])[:5] == ["type", "rate", "corruption", "level", "acc"]
    clean = {(r["type"], r["rate"]): r for r in rows if r["corruption"] == "none"}
    assert len(clean) == 9 and {r["level"] for r in clean.values()} == {"0.0"}
    by = {(r["corruption"], r["level"], r["type"], r["rate"]): r for r in rows}
    assert len(rows) == 9 + 3 * 3 and len(payload["cells"]) == len(results) == len(rows)
    assert payload["settings"]["corruptions"] == ["text_dropout:0.0", *STRONG]
    for test_type, rate in CASES:  # level 0: exactly the clean metrics and counts
        same = by[("text_dropout", "0.0", test_type, rate)]
        assert _metrics(same) == _metrics(clean[(test_type, rate)])
        assert math.isnan(float(same["proxy_cos_text"])) and same["count_proxy_text"] == "0"
    # an absent modality cannot change a prediction: the other modality's case is the clean one
    assert _metrics(by[("image_occlusion", "1.0", "image", "1.0")]) == _metrics(
        clean[("image", "1.0")]
    )
    assert _metrics(by[("text_truncate", "1.0", "text", "1.0")]) == _metrics(clean[("text", "1.0")])
    changed = [
        by[(kind, "1.0", t, r)]["acc"] != clean[(t, r)]["acc"]
        for kind in ("image_occlusion", "text_truncate")
        for t, r in CASES
    ]
    assert any(changed)


def test_sweep_settings_put_the_corruptions_in_every_cells_config(tmp_path):
    base = tmp_path / "base.yaml"  # from YAML: the base config's own corruptions parse
    base.write_text(
        yaml.safe_dump({"model": {"init_args": {"test_grid": {"corruptions": ["image_blur:1"]}}}})
    )
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"seed_everything": [0]}))
    kept = SweepSettings(configs=[DEMO, base], grid=grid, out=tmp_path / "a")
    config = yaml.safe_load(plan_sweep(kept)[1][0].config)
    assert config["model"]["init_args"]["test_grid"]["corruptions"] == ["image_blur:1"]
    given = SweepSettings(
        configs=[DEMO, base], grid=grid, out=tmp_path / "b", test_corruptions=["text_dropout:.3"]
    )
    config = yaml.safe_load(plan_sweep(given)[1][0].config)  # from the command line's flags
    assert config["model"]["init_args"]["test_grid"]["corruptions"] == ["text_dropout:0.3"]
    base.write_text(
        yaml.safe_dump({"model": {"init_args": {"test_grid": {"corruptions": ["x:1"]}}}})
    )
    with pytest.raises(ValueError, match=r"corruption 'x:1'"):
        plan_sweep(SweepSettings(configs=[DEMO, base], grid=grid, out=tmp_path / "c"))


def _sweep_dir(tmp_path, corrupted_seeds):
    """A finished sweep of two seeds; the seeds in ``corrupted_seeds`` have corruption rows."""
    out, cells = tmp_path / "sweep", []
    for seed in (0, 1):
        name = f"seed_everything={seed}"
        cells.append({"name": name, "overrides": {"seed_everything": seed}})
        (out / name).mkdir(parents=True)
        rows = [{"type": "both", "rate": 0.0, "acc": 0.8 + seed / 10, "count_complete": 5}]
        if seed in corrupted_seeds:
            rows = [{**r, "corruption": "none", "level": 0.0} for r in rows]
            rows.append(
                {"type": "both", "rate": 0.0, "corruption": "image_noise", "level": 0.5}
                | {"acc": 0.5 + seed / 10, "count_complete": 5}
            )
        with (out / name / "sweep.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[-1]))
            writer.writeheader()
            writer.writerows(rows)
        (out / name / "DONE").write_text(json.dumps({"sweep_csv": "sweep.csv"}))
    manifest = {"varying": ["seed_everything"], "seed_keys": ["seed_everything"]}
    manifest |= {"aliases": {"seed_everything": "seed_everything"}, "cells": cells}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_collect_groups_corruption_rows_over_seeds_old_files_as_clean(tmp_path):
    corrupted_seeds = (1,)  # seed 0's sweep.csv has no corruption columns (an older run)
    out = _sweep_dir(tmp_path, corrupted_seeds)
    result = collect_sweep(out)
    assert result.metrics == ["acc"]
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:4] == ["test_type", "test_rate", "corruption", "level"]
    clean, noisy = rows
    assert (clean["corruption"], clean["n_seeds"], float(clean["acc_mean"])) == ("none", "2", 0.85)
    assert (noisy["corruption"], float(noisy["level"])) == ("image_noise", 0.5)
    assert noisy["n_seeds"] == str(len(corrupted_seeds))
    assert "| image_noise | 0.5 |" in (out / "results.md").read_text()
