import json
import logging

import numpy as np
import pytest
import torch

from cmpt_lightning.datamodules.synthetic import SyntheticDataModule
from cmpt_lightning.mask_files import (
    MasksFile,
    MasksFileError,
    SplitMasks,
    read_masks,
    sidecar_path,
    write_masks,
)
from cmpt_lightning.mask_import import from_missing_types, read_missing_types
from cmpt_lightning.masks_command import export_masks, masks_import
from cmpt_lightning.missing import MissingConfig
from tests.helpers import cmpt as main

SIZES = {"train_size": 12, "val_size": 8, "test_size": 10, "batch_size": 4}


def _data(train_seed=1, eval_seed=2, masks_file=None):
    return SyntheticDataModule(
        **SIZES,
        train_missing=MissingConfig(rate=0.5, type="both", seed=train_seed, masks_file=masks_file),
        eval_missing=MissingConfig(rate=0.6, type="both", seed=eval_seed, masks_file=masks_file),
    )


def _availability(data, split):
    data.setup({"train": "fit", "val": "validate", "test": "test"}[split])
    return data.availability(split)


def test_exported_masks_come_back_exactly_under_another_seed(tmp_path):
    exported = export_masks(_data())
    path = tmp_path / "masks.csv"
    assert write_masks(path, exported) == [path, sidecar_path(path)]
    assert read_masks(path).sha256() == exported.sha256()
    imported, simulated = _data(7, 8, masks_file=str(path)), _data(7, 8)
    differs = False
    for split, masks in exported.splits.items():
        img, txt = _availability(imported, split)
        assert torch.equal(img, masks.image_present) and torch.equal(txt, masks.text_present)
        sim_img, sim_txt = _availability(simulated, split)
        differs |= not (torch.equal(sim_img, img) and torch.equal(sim_txt, txt))
    assert differs  # seed 7/8 would have drawn other masks: the file decided them
    assert exported.settings["train"] == {
        "rate": 0.5,
        "type": "both",
        "seed": 1,
        "mechanism": "mcar",
        "both_ratio": 0.5,
    }


def test_hashes_do_not_depend_on_row_order_and_tell_masks_apart():
    ids = ("a", "b", "c")
    one = SplitMasks(ids, torch.tensor([1, 0, 1]).bool(), torch.tensor([1, 1, 0]).bool())
    flipped = SplitMasks(ids[::-1], one.image_present.flip(0), one.text_present.flip(0))
    other = SplitMasks(ids, torch.tensor([1, 1, 1]).bool(), torch.tensor([1, 1, 0]).bool())
    assert one.sha256() == flipped.sha256()
    assert one.sha256()["ids"] == other.sha256()["ids"]
    assert one.sha256()["masks"] != other.sha256()["masks"]


def test_missing_and_extra_ids_of_a_masks_file(tmp_path, caplog):
    exported = export_masks(_data(), ["test"])
    test = exported.splits["test"]
    short = SplitMasks(test.ids[1:], test.image_present[1:], test.text_present[1:])
    write_masks(tmp_path / "short.csv", MasksFile({"test": short}))
    with pytest.raises(MasksFileError, match=r"short.csv' has no row for 1 of the 10 samples"):
        _availability(_data(masks_file=str(tmp_path / "short.csv")), "test")
    extra = SplitMasks(
        (*test.ids, "not-a-sample"),
        torch.cat([test.image_present, torch.tensor([True])]),
        torch.cat([test.text_present, torch.tensor([False])]),
    )
    write_masks(tmp_path / "extra.csv", MasksFile({"test": extra}))
    data = _data(masks_file=str(tmp_path / "extra.csv"))
    with caplog.at_level(logging.WARNING):
        assert torch.equal(_availability(data, "test")[0], test.image_present)
        data.availability("test")
    reports = [r for r in caplog.records if "not samples of the split" in r.getMessage()]
    assert len(reports) == 1 and "1 of its 11 test rows" in reports[0].getMessage()
    with pytest.raises(MasksFileError, match=r"has no 'val' split \(it has: test\)"):
        _availability(data, "val")
    with pytest.raises(ValueError, match="cannot be redrawn each epoch"):
        MissingConfig(masks_file="m.csv", resample_each_epoch=True)


HEADER = "split,id,image_present,text_present\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEADER.replace("\n", ",extra\n") + "test,a,1,1,1\n", "line 1: unknown column 'extra'"),
        ("split,id,image_present\ntest,a,1\n", "line 1: the columns"),
        (HEADER + "test,a,1,1\ntest,b,2,1\n", "line 3: image_present is '2'; write 0"),
        (HEADER + "test,a,1,yes\n", "line 2: text_present is 'yes'"),
        (HEADER + "test,a,1,1\ntest,b,1,0\ntest,a,0,1\n", "line 4: sample id 'a' of split 'test'"),
        (HEADER + "test,a,0,0\n", "line 2: sample 'a' of split 'test' has image_present 0 and"),
        (HEADER + "predict,a,1,1\n", "line 2: split is 'predict'; use one of train, val, test"),
        (HEADER + "test,a,1\n", "line 2: 3 values"),
        (HEADER, "has no rows"),
    ],
)
def test_bad_csv_names_the_file_line_and_value(tmp_path, text, expected):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(MasksFileError) as error:
        read_masks(path)
    assert str(path) in str(error.value) and expected in str(error.value)


def test_bad_json_and_edited_files(tmp_path):
    masks = export_masks(_data(), ["test"])
    path = tmp_path / "m.json"
    write_masks(path, masks)
    document = json.loads(path.read_text())
    document["splits"]["test"]["text_present"][1] = 5
    path.write_text(json.dumps(document))
    with pytest.raises(MasksFileError, match="split 'test' entry 1: text_present is 5"):
        read_masks(path)
    path.write_text(json.dumps([0, 1, 2]))
    with pytest.raises(MasksFileError, match="--format map"):
        read_masks(path)
    csv = tmp_path / "m.csv"
    write_masks(csv, masks)
    lines = csv.read_text().splitlines()
    row = lines[1].rsplit(",", 2)
    lines[1] = f"{row[0]},1,{1 - int(row[2])}" if row[1] == "1" else f"{row[0]},1,{row[2]}"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(MasksFileError, match=r"the masks sha256 is .* records .* changed after"):
        read_masks(csv)
    sidecar_path(csv).unlink()  # without its sidecar an edited file is taken as it is
    assert read_masks(csv).splits["test"].ids == masks.splits["test"].ids


def test_published_missing_types(tmp_path):
    pt = tmp_path / "food101_test_missing_both_07.pt"
    torch.save(torch.tensor([0.0, 1.0, 2.0, 0.0]), pt)  # as missing_aware_prompts saves them
    np.save(tmp_path / "types.npy", np.array([2, 2, 0, 1]))
    (tmp_path / "types.txt").write_text("0 1\n2, 0\n")
    (tmp_path / "types.json").write_text(json.dumps({"val": [1, 1, 0, 0]}))
    assert read_missing_types(pt) == {None: [0, 1, 2, 0]}
    assert read_missing_types(tmp_path / "types.npy") == {None: [2, 2, 0, 1]}
    assert read_missing_types(tmp_path / "types.txt") == {None: [0, 1, 2, 0]}
    assert read_missing_types(tmp_path / "types.json") == {"val": [1, 1, 0, 0]}
    masks = from_missing_types([0, 1, 2, 0], ["a", "b", "c", "d"], file="f", split="test")
    assert masks.image_present.tolist() == [True, True, False, True]
    assert masks.text_present.tolist() == [True, False, True, True]
    ids, groups = ["m1-p0", "m1-p1", "m2-p0"], ["m1", "m1", "m2"]  # one type per movie
    grouped = from_missing_types([2, 0], ids, groups=groups, file="f", split="test")
    assert grouped.image_present.tolist() == [False, False, True]
    (tmp_path / "bad.txt").write_text("0 1\n0 3\n")
    with pytest.raises(MasksFileError, match=r"bad.txt' line 2: the value is 3.0; use 0"):
        read_missing_types(tmp_path / "bad.txt")
    (tmp_path / "t.pkl").write_bytes(b"")
    with pytest.raises(MasksFileError, match="pickles are not read"):
        read_missing_types(tmp_path / "t.pkl")
    np.save(tmp_path / "obj.npy", np.array([object()]), allow_pickle=True)
    with pytest.raises(MasksFileError, match=r"not a numeric \.npy array"):
        read_missing_types(tmp_path / "obj.npy")
    with pytest.raises(MasksFileError, match="3 types for split 'test' of 4 samples"):
        from_missing_types([0, 0, 0], ["a", "b", "c", "d"], file="f", split="test")


def test_cli_exports_and_imports_a_published_map(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(
        "model:\n  class_path: cmpt_lightning.CMPTModule\n  init_args: {clip: cmpt-tiny}\n"
        "data:\n  class_path: cmpt_lightning.SyntheticDataModule\n  init_args:\n"
        "    train_size: 12\n    val_size: 8\n    test_size: 10\n"
        "    eval_missing: {rate: 0.5, type: both, seed: 3}\n"
    )
    out = tmp_path / "masks.csv"
    assert main(["data", "masks", "export", "--config", config, "--out", out]) == 0
    printed = capsys.readouterr().out
    exported = read_masks(out)
    assert f"sha256 masks {exported.splits['test'].sha256()['masks']}" in printed
    assert "test: 10 samples, 5 complete" in printed
    codes = torch.tensor([0, 1, 2, 0, 0, 1, 2, 0, 0, 0], dtype=torch.float)
    torch.save(codes, tmp_path / "test.pt")
    mapped = tmp_path / "mapped.csv"
    pt = str(tmp_path / "test.pt")
    assert masks_import(str(config), [pt], str(mapped), format="map", splits=["test"]) == 0
    printed = capsys.readouterr().out
    assert f"eval_missing:\n    masks_file: {mapped}" in printed and "has no val split" in printed
    test = read_masks(mapped).splits["test"]
    assert test.ids == exported.splits["test"].ids  # in the data module's order
    assert test.text_present.tolist() == [c != 1 for c in codes.tolist()]
    assert test.image_present.tolist() == [c != 2 for c in codes.tolist()]
    again = tmp_path / "again.json"
    assert masks_import(str(config), [str(out)], str(again)) == 0
    assert read_masks(again).sha256() == exported.sha256()
    with pytest.raises(ValueError, match=r"1 list\(s\) of missing types without a split name"):
        masks_import(str(config), [pt], str(again), format="map")
