"""No known-harmless library notice in a normal run, through the CLI or the Python API.

Issue 20, item 15: `Total FLOPs: 0`, Lightning's "Loading `train_dataloader` to estimate ...",
its litlogger / litmodels tips, torch's LeafSpec deprecation, a predict row reported twice, and
RST markup or a cut sentence in the help pages. Each test captures everything a run can say
(file descriptors, log records, warnings) and looks for each notice by its own words.
"""

import csv
import logging
import warnings
from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from cmpt_lightning import CMPTModule, MissingConfig, SyntheticDataModule, notices
from tests.helpers import cmpt

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--config", str(ROOT / "configs" / "demo_random.yaml"),
    "--trainer.max_epochs", "1",
    "--trainer.enable_progress_bar", "false",
    "--data.init_args.train_size", "32",
    "--data.init_args.val_size", "16",
    "--data.init_args.test_size", "16",
    "--data.init_args.batch_size", "16",
]  # fmt: skip
#: Each notice, by words of its own message.
NOISE = {
    "zero FLOPs": "Total FLOPs",
    "the stepping-batches note": "to estimate number of stepping batches",
    "the litlogger tip": "try installing [litlogger]",
    "the litmodels tip": "try installing [litmodels]",
    "the LeafSpec deprecation": "LeafSpec",
}


class _Everything:
    """What a block printed (stdout, stderr), logged and warned, as one text."""

    def __init__(self, capfd, caplog) -> None:
        self.capfd, self.caplog = capfd, caplog
        self.warned: list[warnings.WarningMessage] = []

    def __enter__(self):
        self.caplog.set_level(logging.INFO)
        self._catch = warnings.catch_warnings(record=True)
        self.warned = self._catch.__enter__()
        warnings.simplefilter("always")  # pytest's own ignore of LeafSpec does not count here
        return self

    def __exit__(self, *exc) -> None:
        self._catch.__exit__(*exc)
        out, err = self.capfd.readouterr()
        self.streams, self.logged = out + err, self.caplog.text
        self.text = "\n".join([out, err, self.caplog.text, *(str(w.message) for w in self.warned)])

    def times(self, words: str) -> int:
        """How often ``words`` was said on one channel (a log record that a handler of another
        library also writes to stderr is the same report, seen twice)."""
        return max(self.streams.count(words), self.logged.count(words))


def _assert_quiet(text: str) -> None:
    said = [name for name, words in NOISE.items() if words in text]
    assert not said, f"the run printed {said}"


def test_a_tiny_cmpt_fit_prints_none_of_the_known_notices(tmp_path, capfd, caplog):
    with _Everything(capfd, caplog) as run:
        code = cmpt(["fit", *TINY, "--trainer.default_root_dir", tmp_path])
    assert code == 0
    _assert_quiet(run.text)
    assert "Trainable params" in run.text  # the model summary is there, without FLOPs
    assert "test/acc_complete" in run.text  # and so are the test metrics


def test_a_python_api_fit_prints_none_of_the_known_notices(tmp_path, capfd, caplog):
    """A user's own Trainer: the filters are set where the package's module is used."""
    with _Everything(capfd, caplog) as run:
        data = SyntheticDataModule(
            clip_model="cmpt-tiny",
            train_size=32,
            val_size=16,
            test_size=16,
            batch_size=16,
            train_missing=MissingConfig(rate=0.5, type="both"),
        )
        model = CMPTModule(clip="cmpt-tiny", num_classes=data.num_classes, task=data.task)
        trainer = Trainer(
            max_epochs=1,
            accelerator="cpu",
            default_root_dir=tmp_path,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, datamodule=data)
    _assert_quiet(run.text)
    # scoped: after the fit the LeafSpec filter is gone, and only the tips stay dropped
    assert notices._LEAFSPEC_FILTER not in warnings.filters
    rank_zero = logging.getLogger(notices.RANK_ZERO_LOGGER)
    kept = logging.LogRecord("x", logging.INFO, __file__, 1, "train split: 32", None, None)
    assert all(f.filter(kept) for f in rank_zero.filters)


def test_predict_reports_each_row_once(tmp_path, capfd, caplog):
    data = ROOT / "tests" / "data" / "csv"
    common = [
        *TINY,
        "--data", "MultimodalCSVDataModule",
        "--data.root", data,
        "--data.data_file", "data.csv",
        "--data.predict_file", "predict.csv",
        "--data.batch_size", "4",
        "--trainer.default_root_dir", tmp_path,
    ]  # fmt: skip
    assert cmpt(["fit", *common, "--trainer.max_steps", "1", "--test_after_fit", "false"]) == 0
    (ckpt,) = tmp_path.rglob("last.ckpt")
    capfd.readouterr()
    caplog.clear()
    with _Everything(capfd, caplog) as run:
        assert cmpt(["predict", *common, "--ckpt_path", ckpt]) == 0
    (path,) = tmp_path.rglob("predictions.csv")
    with path.open() as f:
        ids = [row["id"] for row in csv.DictReader(f)]
    assert sorted(ids) == ["p0", "p1", "p2", "p3"]  # each row once in the file
    # p3 has neither an image nor a text: said once (at setup, by id), not again when written
    assert run.times("neither an image nor a text") == 1, run.text
    assert run.times("predictions written to") == 1, run.text
    assert "1 row(s) without inputs listed with a note" in run.text


@pytest.mark.parametrize(
    "path", [("fit",), ("test",), ("predict",), ("study",), ("sweep", "collect"),
             ("data", "cache"), ("data", "check", "food101"), ()],
)  # fmt: skip
def test_help_pages_have_no_rst_markup_and_no_cut_sentence(path):
    from cmpt_lightning.main import render_help

    text = render_help(path)
    assert text is not None
    assert "``" not in text
    for role in (":class:`", ":func:`", ":meth:`", ":mod:`", ":data:`", ":paramref:`"):
        assert role not in text, role
    flat = " ".join(text.split())
    whole = {
        ("test",): "It's separated from fit to make sure you never run on your test set until you "
        "want to.",
        ("predict",): "Useful to perform distributed and batched predictions.",
        (): "test Perform one evaluation epoch over the test set. predict Run inference on your "
        "data. sweep",
    }
    assert whole.get(path, "") in flat  # Lightning's descriptions, not cut at a line's end
    assert "never run on your:" not in flat and "never run on your predict" not in flat
    assert "Args: root:" not in flat  # a class docstring's Args section is not the description


def test_plain_markup_renders_rst_as_plain_text():
    from cmpt_lightning.help_text import plain_markup

    assert plain_markup("``local`` or :class:`~a.b.TestGrid`") == "`local` or `TestGrid`"
    assert plain_markup(":func:`torch.no_grad` and ``a\nb``") == "`torch.no_grad` and `a\nb`"
    assert plain_markup("`docs <https://x.org>`_") == "docs (https://x.org)"
