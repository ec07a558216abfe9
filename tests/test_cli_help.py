"""Help pages without the parser: the snapshot is the parser's output, and a miss renders live."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cmpt_lightning import cli_help
from cmpt_lightning.main import main, render_help

ROOT = Path(__file__).resolve().parents[1]


def test_help_request_takes_only_subcommand_names_and_a_final_help_flag():
    assert cli_help.help_request(["--help"]) == ()
    assert cli_help.help_request(["data", "check", "-h"]) == ("data", "check")
    assert cli_help.help_request([]) is None
    assert cli_help.help_request(["fit"]) is None
    assert cli_help.help_request(["--config", "x.yaml", "fit", "--help"]) is None
    assert cli_help.help_request(["fit", "--help", "--trainer.max_epochs=1"]) is None


def test_subcommands_are_read_from_a_page():
    page = render_help(("data", "check"))
    assert page is not None
    assert cli_help.subcommands(page) == ["food101", "mmimdb", "hateful_memes", "csv"]
    assert cli_help.subcommands(render_help(("study",)) or "") == []


def test_the_shipped_snapshot_is_the_parsers_output():
    """Fails when the sources changed without ``python scripts/snapshot_help.py``."""
    stored = json.loads(cli_help.SNAPSHOT.read_text())
    key = cli_help.help_key()
    versions = ("python", "cmpt-lightning", "jsonargparse", "lightning", "width")
    if any(stored["key"][name] != key[name] for name in versions):
        pytest.skip(f"snapshot made with {stored['key']}, installed {key}: help renders live")
    assert stored["key"]["sources"] == key["sources"], (
        "the package changed since the help snapshot: run python scripts/snapshot_help.py"
    )
    pages = cli_help.snapshot_pages()
    assert {"", "fit", "data check", "data check csv", "sweep run", "study"} <= set(pages)
    for path in [(), ("data", "check"), ("sweep", "run")]:
        assert pages[cli_help.page_name(path)] == render_help(path), path


def test_a_miss_renders_live_then_serves_from_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_help, "SNAPSHOT", tmp_path / "absent.json")
    monkeypatch.setenv("CMPT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as exc:
        main(["data", "check", "--help"])
    assert exc.value.code == 0
    live = capsys.readouterr().out
    assert "Validate a dataset download" in live
    assert len(list((tmp_path / "cache").glob("help-*.json"))) == 1

    def refuse(path):
        msg = f"rendered {path} again instead of reading the cache"
        raise AssertionError(msg)

    monkeypatch.setattr("cmpt_lightning.main.render_help", refuse)
    with pytest.raises(SystemExit):
        main(["data", "check", "--help"])
    assert capsys.readouterr().out == live


def test_a_cache_that_cannot_be_written_costs_only_speed(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_help, "SNAPSHOT", tmp_path / "absent.json")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("CMPT_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(SystemExit) as exc:
        main(["study", "--help"])
    assert exc.value.code == 0
    assert "--variants" in capsys.readouterr().out
    assert not cli_help.remember(("study",), "page")


def test_a_stale_entry_is_not_served(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_help, "SNAPSHOT", tmp_path / "absent.json")
    monkeypatch.setenv("CMPT_CACHE_DIR", str(tmp_path))
    old = {**cli_help.help_key(), "sources": "0" * 64}
    assert cli_help.remember(("study",), "an old page", key=old)
    assert cli_help.lookup(("study",), key=old) == "an old page"
    assert cli_help.lookup(("study",)) is None


def test_an_unknown_command_still_gets_the_parsers_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bogus", "--help"])
    assert exc.value.code == 2
    assert "bogus" in capsys.readouterr().err


def test_help_imports_neither_torch_nor_lightning(tmp_path):
    """The second request at the latest is served without importing PyTorch or Lightning."""
    probe = (
        "import sys\n"
        "from cmpt_lightning.main import main\n"
        "try:\n"
        "    main(['data', 'check', '--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning'})\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    env = {**os.environ, "CMPT_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "Validate a dataset download" in run.stdout
    assert "HEAVY []" in runs[1].stderr, runs[1].stderr


@pytest.mark.parametrize(
    "content",
    [
        "[" * 100_000,  # crafted: json.loads raises RecursionError
        '{"key": ',  # cut short
        "\udcff not utf-8",
        "[]",
        '{"key": KEY, "pages": ["study"]}',
        '{"key": KEY, "pages": {"study": 5}}',
        '{"key": KEY, "pages": {"study": "a page"}, "padding": "PAD"}',  # over MAX_BYTES
    ],
    ids=["deep", "cut", "not utf-8", "a list", "pages a list", "page a number", "huge"],
)
def test_a_corrupt_help_cache_entry_is_a_miss_and_is_rewritten(content, tmp_path, monkeypatch):
    monkeypatch.setattr(cli_help, "SNAPSHOT", tmp_path / "absent.json")
    monkeypatch.setattr(cli_help, "MAX_BYTES", 1000)
    monkeypatch.setenv("CMPT_CACHE_DIR", str(tmp_path))
    key = cli_help.help_key()
    file = cli_help._cache_file(key)
    text = content.replace("KEY", json.dumps(key)).replace("PAD", "x" * 1000)
    file.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    assert cli_help.lookup(("study",), key) is None
    assert cli_help.remember(("study",), "the page", key)
    assert cli_help.lookup(("study",), key) == "the page"


def test_cmpt_help_renders_over_a_crafted_cache_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli_help, "SNAPSHOT", tmp_path / "absent.json")
    monkeypatch.setenv("CMPT_CACHE_DIR", str(tmp_path))
    file = cli_help._cache_file(cli_help.help_key())
    file.write_text("[" * 100_000)
    with pytest.raises(SystemExit) as exc:
        main(["study", "--help"])
    assert exc.value.code == 0
    assert "--variants" in capsys.readouterr().out
    assert "--variants" in json.loads(file.read_text())["pages"]["study"]  # rewritten
