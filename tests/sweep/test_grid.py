"""Grid files: expansion into named cells, and validation against the real `cmpt fit` parser."""

from pathlib import Path

import pytest
import yaml

from cmpt_lightning.sweep.grid import (
    ConfigResolver,
    Grid,
    expand_grid,
    is_seed_key,
    key_aliases,
    load_grid,
)
from cmpt_lightning.sweep.plan import SweepSettings, plan_sweep
from tests.helpers import cmpt as main

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo_random.yaml"
RATE = "data.init_args.train_missing.rate"


@pytest.fixture(scope="module")
def resolver():
    return ConfigResolver([DEMO])


def _grid_file(tmp_path, axes, name="grid.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(axes, sort_keys=False))
    return path


def test_expansion_is_the_product_in_file_order_with_readable_names():
    grid = Grid({RATE: [0.1, 0.5, 0.7], "seed_everything": [0, 1], "trainer.max_epochs": [3]})
    cells = expand_grid(grid)
    assert len(cells) == 6
    assert [c.index for c in cells] == list(range(6))
    assert [(c.overrides[RATE], c.overrides["seed_everything"]) for c in cells] == [
        (0.1, 0), (0.1, 1), (0.5, 0), (0.5, 1), (0.7, 0), (0.7, 1),
    ]  # fmt: skip
    assert cells[3].name == "train_missing.rate=0.5__seed_everything=1"
    assert all(c.overrides["trainer.max_epochs"] == 3 for c in cells)  # fixed, not in the name
    assert all("max_epochs" not in c.name for c in cells)
    assert expand_grid(grid)[3].name == cells[3].name  # stable
    assert grid.varying == [RATE, "seed_everything"] and grid.seed_keys == ["seed_everything"]


def test_names_stay_unique_and_path_safe():
    grid = Grid({"model.init_args.clip": ["a b", "a/b", "ViT-B-16"], "trainer.max_epochs": [1]})
    names = [c.name for c in expand_grid(grid)]
    assert len(set(names)) == 3
    assert all("/" not in n and " " not in n for n in names)
    assert expand_grid(Grid({"trainer.max_epochs": [1]}))[0].name == "default"


def test_aliases_are_short_and_unique():
    keys = [
        RATE,
        "data.init_args.eval_missing.rate",
        "model.init_args.optimizer.init_args.lr",
        "other.optimizer.lr",
        "seed_everything",
    ]
    aliases = key_aliases(keys)
    assert aliases[RATE] == "train_missing.rate"
    assert aliases["seed_everything"] == "seed_everything"
    assert aliases["model.init_args.optimizer.init_args.lr"] == "model.optimizer.lr"
    assert len(set(aliases.values())) == len(keys)


def test_seed_keys():
    assert is_seed_key("seed_everything") and is_seed_key("data.init_args.train_missing.seed")
    assert is_seed_key("model.init_args.init_seed")
    assert not is_seed_key(RATE) and not is_seed_key("data.init_args.seeds_file")


@pytest.mark.parametrize(
    ("axes", "error", "match"),
    [
        ({RATE: []}, ValueError, "train_missing.rate.*empty list"),
        ({RATE: 0.3}, TypeError, "train_missing.rate.*must map to a list"),
        ({"trainer.default_root_dir": ["x"]}, ValueError, "default_root_dir.*set by the sweep"),
        ({"model.init_args.sweep.rates": [[0, 1]]}, ValueError, "sweep.rates.*test_rates"),
        ({"model.init_args.test_grid.rates": [[0]]}, ValueError, "test_grid.rates.*test_rates"),
        ({"bad key!": [1]}, ValueError, "'bad key!' .*not a dotted config key"),
    ],
)
def test_bad_grid_files_fail_naming_the_key(tmp_path, axes, error, match):
    with pytest.raises(error, match=match):
        load_grid(_grid_file(tmp_path, axes))


def test_grid_file_must_exist_and_be_a_mapping(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_grid(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(TypeError, match="mapping"):
        load_grid(tmp_path / "list.yaml")


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("trainer.max_epoch", 3, "unrecognized"),  # no silent abbreviation to max_epochs
        ("data.init_args.train_missing.rte", 0.3, "'rte' is not accepted"),
        ("data.init_args.root", "/data", "'root' is not accepted"),  # not a SyntheticDataModule arg
        ("trainer.max_epochs", "many", "expected int or NoneType"),
        ("model.init_args.lora_rank", 1.5, "expected int"),
    ],
)
def test_keys_that_do_not_apply_fail_naming_the_key(resolver, key, value, match):
    with pytest.raises(ValueError, match=f"grid key '{key}'") as info:
        resolver.parse({"seed_everything": 1, key: value})
    assert match in str(info.value)
    assert "--print_config" in str(info.value)


def test_nested_dataclass_fields_and_class_switches_are_checked_per_class(resolver):
    config = resolver.parse({RATE: 0.3, "data.init_args.train_missing.type": "text"})
    assert config.data.init_args.train_missing.rate == 0.3
    assert config.data.init_args.train_missing.type == "text"
    # `root` applies once the cell switches the data class, whatever the key order
    config = resolver.parse(
        {
            "data.init_args.root": "/data/food101",
            "data.class_path": "cmpt_lightning.Food101DataModule",
        }
    )
    assert config.data.init_args.root == "/data/food101"
    text = resolver.dump(config)
    assert "Food101DataModule" in text and "clip_model" not in text  # link targets stay out


def test_plan_resolves_each_cell_with_its_run_dir_and_test_sweep(tmp_path):
    settings = SweepSettings(
        configs=[DEMO],
        grid=ROOT / "configs" / "grids" / "missing_rate.yaml",  # the shipped example grid
        out=tmp_path / "sweep",
        test_rates=[0, 0.5],
        test_types=["text"],
    )
    grid, planned = plan_sweep(settings)
    assert len(planned) == 9 and grid.seed_keys == ["seed_everything"]
    config = yaml.safe_load(planned[4].config)
    assert config["trainer"]["default_root_dir"] == str(tmp_path / "sweep" / planned[4].cell.name)
    assert config["test_after_fit"] is True
    assert config["model"]["init_args"]["test_grid"]["rates"] == [0.0, 0.5]
    assert config["data"]["init_args"]["train_missing"]["rate"] == 0.5
    assert config["seed_everything"] == 1
    assert not (tmp_path / "sweep").exists()  # planning writes nothing


def test_cells_that_differ_in_seeds_only_share_one_parse_and_dump_the_same_text(
    tmp_path, monkeypatch
):
    """Planning parses once per combination of the non-seed values (a parse takes about a
    second; a study has thousands of cells), and every cell's config text is still exactly
    what a full parse of that cell gives (a re-run compares the texts)."""
    seeds = {"seed_everything": [0, 3], "data.init_args.seed": [1, 2]}
    grid = _grid_file(tmp_path, {RATE: [0.5], **seeds})
    settings = SweepSettings(configs=[DEMO], grid=grid, out=tmp_path / "s")
    calls = []
    parse = ConfigResolver.parse
    monkeypatch.setattr(ConfigResolver, "parse", lambda self, o: calls.append(o) or parse(self, o))
    _, planned = plan_sweep(settings)
    assert len(planned) == 4 and len(calls) == 1  # one parse for the four seed pairs
    monkeypatch.undo()
    resolver = ConfigResolver([DEMO])
    for cell in planned[1:]:  # the copies (the first cell is the parse itself)
        full = resolver.parse(
            {**calls[0], **cell.cell.overrides, "trainer.default_root_dir": str(cell.directory)}
        )
        assert cell.config == resolver.dump(full), cell.cell.name
        loaded = yaml.safe_load(cell.config)
        assert loaded["seed_everything"] == cell.cell.overrides["seed_everything"]
        assert loaded["data"]["init_args"]["seed"] == cell.cell.overrides["data.init_args.seed"]


def test_cli_rejects_a_bad_key_before_anything_is_written(tmp_path, capsys):
    grid = _grid_file(tmp_path, {RATE: [0.1, 0.5], "data.init_args.train_misssing.rate": [0.2]})
    out = tmp_path / "sweep"
    code = main(["sweep", "run", "--config", str(DEMO), "--grid", str(grid), "--out", str(out)])
    assert code == 2
    assert "data.init_args.train_misssing.rate" in capsys.readouterr().err
    assert not out.exists()


def test_variants_are_the_first_axis_and_expand_to_their_overrides(tmp_path, resolver):
    path = _grid_file(
        tmp_path,
        {
            "variants": {"cmpt": {}, "no_align": {"model.init_args.align_weight": 0.0}},
            "seed_everything": [0, 1],
        },
    )
    grid = load_grid(path)
    assert list(grid.axes) == ["variant", "seed_everything"]
    cells = expand_grid(grid)
    assert [c.name for c in cells] == [
        "variant=cmpt__seed_everything=0", "variant=cmpt__seed_everything=1",
        "variant=no_align__seed_everything=0", "variant=no_align__seed_everything=1",
    ]  # fmt: skip
    overrides = grid.config_overrides(cells[2])
    assert overrides == {"seed_everything": 0, "model.init_args.align_weight": 0.0}
    config = resolver.parse(overrides)
    assert config.model.init_args.align_weight == 0.0


@pytest.mark.parametrize(
    ("variants", "match"),
    [
        ({"a": [1]}, "must map config keys to values"),
        ({"a b": {}}, "variant name"),
        ({"a": {"seed_everything": 1}}, "also a grid axis"),
        ({"a": {"trainer.default_root_dir": "x"}}, "set by the sweep itself"),
        ([], "must map names to overrides"),
    ],
)
def test_bad_variants_are_named(tmp_path, variants, match):
    path = _grid_file(tmp_path, {"variants": variants, "seed_everything": [0, 1]})
    with pytest.raises((TypeError, ValueError), match=match):
        load_grid(path)


def test_a_variant_key_that_does_not_apply_is_named(tmp_path):
    grid = _grid_file(tmp_path, {"variants": {"v": {"model.init_args.lora_rnak": 2}}})
    settings = SweepSettings(configs=[DEMO], grid=grid, out=tmp_path / "s")
    with pytest.raises(ValueError, match="lora_rnak"):
        plan_sweep(settings)
