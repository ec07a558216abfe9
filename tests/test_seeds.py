"""Which seed drives what: the run seed, ``init_seed`` and ``tower_seed`` (docs/protocol.md)."""

import fnmatch
import re
from pathlib import Path

import lightning
import pytest
import torch
from lightning.pytorch import seed_everything

from cmpt_lightning import CMPTModule, SyntheticDataModule
from cmpt_lightning.checkpoint_state import init_seeds
from cmpt_lightning.models import build_clip

DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def _trainable(module: CMPTModule) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.model.named_parameters() if p.requires_grad}


def _frozen(module: CMPTModule) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in module.model.named_parameters() if not p.requires_grad}


def _differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> set[str]:
    assert a.keys() == b.keys()
    return {name for name in a if not torch.equal(a[name], b[name])}


def _built(run_seed: int, **kwargs) -> CMPTModule:
    seed_everything(run_seed)
    return CMPTModule(**{"num_classes": 3, **kwargs})


def test_two_run_seeds_give_different_initial_trainable_weights_unless_init_seed_is_pinned():
    one, two = _built(1), _built(2)
    assert (one.hparams.init_seed, two.hparams.init_seed) == (1, 2)
    assert one.hparams.tower_seed == two.hparams.tower_seed == 0
    changed = _differ(_trainable(one), _trainable(two))
    assert any("lora_A" in n for n in changed) and "head.classifier.weight" in changed
    assert not _differ(_frozen(one), _frozen(two)), "the random frozen towers must not move"
    pinned_one, pinned_two = _built(1, init_seed=4), _built(2, init_seed=4)
    assert not _differ(_trainable(pinned_one), _trainable(pinned_two))
    assert pinned_one.hparams.init_seed == pinned_two.hparams.init_seed == 4


def test_tower_seed_drives_the_random_towers_only():
    base, other = _built(1, tower_seed=5), _built(1, tower_seed=6)
    assert _differ(_frozen(base), _frozen(other))
    reference = build_clip("cmpt-tiny", init_seed=5)
    assert torch.equal(base.model.clip.visual.conv1.weight, reference.visual.conv1.weight)
    # the trainable parts that do not start from the towers' own tokens stay the same
    changed = _differ(_trainable(base), _trainable(other))
    assert changed and all("proxy_token" in n for n in changed), changed


def test_init_seeds_resolution_rules(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "9")
    assert init_seeds({}) == {"init_seed": 9, "tower_seed": 0}
    # a pinned init_seed keeps today's meaning: it also seeds random towers
    assert init_seeds({"init_seed": 3}) == {"init_seed": 3, "tower_seed": 3}
    assert init_seeds({"init_seed": 3, "tower_seed": 1}) == {"init_seed": 3, "tower_seed": 1}
    assert init_seeds({"tower_seed": 1, "lora_rank": 2}) == {
        "init_seed": 9,
        "tower_seed": 1,
        "lora_rank": 2,
    }
    monkeypatch.delenv("PL_GLOBAL_SEED")
    assert init_seeds({}) == {"init_seed": 0, "tower_seed": 0}  # no seed_everything: as before


def _batch(data: SyntheticDataModule) -> dict:
    return data.apply_missing(next(iter(data.test_dataloader())), "test")


def _checkpoint(module: CMPTModule, path: Path, drop: tuple[str, ...] = ()) -> Path:
    """Save ``module`` as Lightning does (trainable weights, hparams), leaving out ``drop``."""
    hparams = {k: v for k, v in module.hparams.items() if k not in drop}
    state = {f"model.{n}": p for n, p in module.model.named_parameters() if p.requires_grad}
    torch.save({"state_dict": state, "hyper_parameters": hparams, **_VERSION}, path)
    return path


_VERSION = {"pytorch-lightning_version": lightning.__version__}


def test_checkpoints_rebuild_the_same_model_whatever_the_loading_seed(tmp_path):
    data = SyntheticDataModule(train_size=16, val_size=16, test_size=16, batch_size=16)
    module = _built(11, num_classes=data.num_classes)
    with torch.no_grad():  # as if trained: every trainable weight moves
        for param in module.model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    path = _checkpoint(module, tmp_path / "new.ckpt")
    hparams = torch.load(path, weights_only=True)["hyper_parameters"]
    assert (hparams["init_seed"], hparams["tower_seed"]) == (11, 0)
    data.setup("test")
    batch = _batch(data)
    with torch.no_grad():
        expected = module.eval()(batch).logits
        for loading_seed in (0, 3):
            seed_everything(loading_seed)
            reloaded = CMPTModule.load_from_checkpoint(path).eval()
            assert reloaded.hparams.init_seed == 11
            assert torch.equal(reloaded(batch).logits, expected)


def test_checkpoint_from_before_tower_seed_rebuilds_its_towers_from_init_seed(tmp_path):
    # before tower_seed existed, init_seed (always saved) seeded the towers and the rest
    seed_everything(3)
    old = CMPTModule(num_classes=3, init_seed=7)
    path = _checkpoint(old, tmp_path / "old.ckpt", drop=("tower_seed",))
    seed_everything(5)
    reloaded = CMPTModule.load_from_checkpoint(path)
    assert reloaded.hparams.tower_seed == 7
    assert not _differ(_frozen(reloaded), _frozen(old))
    assert not _differ(_trainable(reloaded), _trainable(old))


def _seed_table() -> list[tuple[list[str], str, bool]]:
    """The docs' "Which seed drives what" rows: (parameter patterns, drawn from, frozen)."""
    text = DOCS.read_text()
    section = text.split("## Which seed drives what", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not line.lstrip().startswith("|") or set(cells[0]) <= {"-", " "}:
            continue
        patterns = re.findall(r"`([^`]+)`", cells[1])
        if patterns:
            rows.append((patterns, cells[2], "frozen" in cells[1]))
    return rows


@pytest.mark.parametrize("method", ["cmpt", "learned_token"])
def test_the_docs_table_matches_the_code(method):
    rows = _seed_table()
    assert rows, f"no table under '## Which seed drives what' in {DOCS}"
    one, two = _built(1, method=method), _built(2, method=method)
    changed = _differ(_trainable(one), _trainable(two))
    for name in _trainable(one):
        drawn = [
            src
            for pats, src, frozen in rows
            if not frozen and any(fnmatch.fnmatch(name, p) for p in pats)
        ]
        assert len(drawn) == 1, f"{name} is in {len(drawn)} rows of the table in {DOCS}"
        says_run_seed = drawn[0].startswith("the init seed")
        assert says_run_seed == (name in changed), f"{DOCS} is wrong about {name}: {drawn[0]}"
    assert not _differ(_frozen(one), _frozen(two))
    tower_rows = [src for pats, src, frozen in rows if frozen and "clip.*" in pats]
    assert tower_rows and tower_rows[0].startswith("the tower seed")
