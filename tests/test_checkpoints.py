"""Checkpoints: last.ckpt after every epoch, whole files, failed saves that fail the run.

Plain ``BoringModel`` runs (no package model) with :class:`CMPTCheckpoint` and
:class:`AtomicCheckpointIO`. A read-only folder is simulated by patching the ``os`` calls
that create, rename or remove a folder's entries (root ignores ``chmod``), and for real with
``chmod`` (not root) or a read-only bind mount (root); a full disk by patching ``os.write``, and
for real with a small tmpfs. The real variants skip where they cannot mount.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel, RandomDataset
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch.utils.data import DataLoader

from cmpt_lightning.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointIOError,
    verify_archive,
    with_atomic_io,
)
from cmpt_lightning.checkpoints import CMPTCheckpoint


class ScoredModel(BoringModel):
    """Logs ``val/score = scores[epoch]`` (the last one repeated).

    Raises in training batch ``fail_at = (epoch, batch)`` or in validation ``("val", epoch)``.
    """

    def __init__(self, scores=(0.5,), fail_at=None, ballast=0):
        super().__init__()
        self.scores = list(scores)
        self.fail_at = fail_at
        self.interrupt_at = None
        self.validated = []  # the epochs validated so far, saved in each checkpoint
        self.register_buffer("ballast", torch.zeros(ballast))  # a bigger checkpoint

    def interrupt(self):
        self.interrupt_at = "now"

    def training_step(self, batch, batch_idx):
        if self.fail_at == (self.current_epoch, batch_idx):
            msg = "boom in training_step"
            raise RuntimeError(msg)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        if self.fail_at == ("val", self.current_epoch):
            msg = "boom in validation_step"
            raise RuntimeError(msg)
        self.log("val/score", self.scores[min(self.current_epoch, len(self.scores) - 1)])
        return super().validation_step(batch, batch_idx)

    def on_validation_epoch_end(self):
        self.validated.append(self.current_epoch)

    def on_save_checkpoint(self, checkpoint):
        checkpoint["validated"] = list(self.validated)

    def train_dataloader(self):
        return DataLoader(_Interruptible(self), batch_size=2)


class _Interruptible(RandomDataset):
    """Raises KeyboardInterrupt on a fetch once ``model.interrupt_at == (epoch, batch)`` passed."""

    def __init__(self, model):
        super().__init__(32, 64)
        self.model = model

    def __getitem__(self, index):
        if self.model.interrupt_at == "now":
            raise KeyboardInterrupt
        return super().__getitem__(index)


class _At(Callback):
    """Runs ``action`` once, at the start of the first training batch where ``when`` holds."""

    def __init__(self, when: Callable[[Trainer, int], bool], action: Callable[[], None]):
        self.when, self.action, self.done = when, action, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not self.done and self.when(trainer, batch_idx):
            self.done = True
            self.action()


class _Epochs(Callback):
    def __init__(self):
        self.started = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.started.append(trainer.current_epoch)


def make_trainer(tmp_path, callbacks, max_epochs, limit_train_batches=2, **kwargs):
    settings = {
        "default_root_dir": tmp_path,
        "max_epochs": max_epochs,
        "limit_train_batches": limit_train_batches,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "callbacks": callbacks,
        "plugins": with_atomic_io(None),
    }
    return Trainer(**{**settings, **kwargs})


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def whole_files(folder: Path, ignore=()) -> list[str]:
    """The names in ``folder``, each checked: a non-empty checkpoint that loads (weights only)."""
    names = sorted(p.name for p in folder.iterdir() if p.name not in ignore)
    for name in names:
        assert name.endswith(".ckpt"), f"stray file {name!r} in {folder}"
        assert (folder / name).stat().st_size > 0, f"{name} is empty"
        load(folder / name)
    return names


# --- last.ckpt ---------------------------------------------------------------------------------


@pytest.mark.parametrize("val_every", [1, 2])
def test_last_is_the_final_epoch_when_the_metric_never_improves(tmp_path, val_every):
    folder = tmp_path / "ckpt"
    callback = CMPTCheckpoint(dirpath=folder)
    trainer = make_trainer(tmp_path, [callback], 4, check_val_every_n_epoch=val_every)
    trainer.fit(ScoredModel(scores=[0.5]))
    last = load(folder / "last.ckpt")
    assert last["epoch"] == 3
    assert last["global_step"] == 8
    assert last["validated"] == list(range(val_every - 1, 4, val_every))  # after validation
    first_validated = val_every - 1  # the best is the first validation's: 0.5 never improves
    assert whole_files(folder) == [f"best-{first_validated:02d}.ckpt", "last.ckpt"]
    assert callback.best_model_path == str(folder / f"best-{first_validated:02d}.ckpt")


def test_keyboard_interrupt_between_batches_saves_last(tmp_path):
    folder = tmp_path / "ckpt"
    model = ScoredModel(scores=[0.5])
    arm = _At(lambda t, i: (t.current_epoch, i) == (2, 1), lambda: model.interrupt())
    trainer = make_trainer(tmp_path, [CMPTCheckpoint(dirpath=folder), arm], 4, 4)
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as info:  # Lightning exits 1 on Ctrl+C
            trainer.fit(model)
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores SIGINT from then on
    assert info.value.code == 1
    last = load(folder / "last.ckpt")
    assert last["epoch"] == 2
    assert 8 < trainer.global_step < 12  # in the middle of epoch 2
    assert last["global_step"] == trainer.global_step
    progress = last["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert progress["ready"] == progress["completed"]  # no batch was in flight
    whole_files(folder)


def test_exception_inside_a_batch_keeps_the_previous_last(tmp_path):
    folder = tmp_path / "ckpt"
    trainer = make_trainer(tmp_path, [CMPTCheckpoint(dirpath=folder)], 4)
    with pytest.raises(RuntimeError, match="boom in training_step"):
        trainer.fit(ScoredModel(scores=[0.5], fail_at=(2, 1)))
    last = load(folder / "last.ckpt")
    assert (last["epoch"], last["global_step"]) == (1, 4)  # the end of epoch 1, untouched
    assert whole_files(folder) == ["best-00.ckpt", "last.ckpt"]


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_exception_during_validation_saves_last_and_resume_validates_again(tmp_path):
    folder = tmp_path / "ckpt"
    scores = [0.1, 0.2, 0.9, 0.3]
    model = ScoredModel(scores, fail_at=("val", 2))
    trainer = make_trainer(tmp_path, [CMPTCheckpoint(dirpath=folder)], 4)
    with pytest.raises(RuntimeError, match="boom in validation_step"):
        trainer.fit(model)
    last = load(folder / "last.ckpt")
    assert (last["epoch"], last["global_step"], last["validated"]) == (2, 6, [0, 1])

    callback, epochs, model = CMPTCheckpoint(dirpath=folder), _Epochs(), ScoredModel(scores)
    make_trainer(tmp_path, [callback, epochs], 4).fit(model, ckpt_path=folder / "last.ckpt")
    assert epochs.started == [3]  # epoch 2's training is not repeated...
    assert model.validated == [2, 3]  # ...its validation is
    assert callback.best_model_path == str(folder / "best-02.ckpt")
    assert callback.best_model_score == pytest.approx(0.9)


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_resume_keeps_best_score_and_path(tmp_path):
    folder = tmp_path / "ckpt"
    scores = [0.8, 0.3, 0.5, 0.6]  # the best is in the first fit, which ends without improving
    make_trainer(tmp_path, [CMPTCheckpoint(dirpath=folder)], 2).fit(ScoredModel(scores))
    assert load(folder / "last.ckpt")["epoch"] == 1

    callback, epochs = CMPTCheckpoint(dirpath=folder), _Epochs()
    trainer = make_trainer(tmp_path, [callback, epochs], 4)
    trainer.fit(ScoredModel(scores), ckpt_path=folder / "last.ckpt")
    assert epochs.started == [2, 3]  # resumed after epoch 1, nothing trained twice
    assert callback.best_model_score == pytest.approx(max(scores))
    assert callback.best_model_path == str(folder / "best-00.ckpt")
    assert Path(callback.best_model_path).exists()
    assert load(folder / "last.ckpt")["epoch"] == 3
    assert whole_files(folder) == ["best-00.ckpt", "last.ckpt"]


def test_resume_into_a_new_folder_keeps_the_best_so_far(tmp_path):
    """As `cmpt fit --ckpt_path .../version_0/checkpoints/last.ckpt` does: a new logger version."""
    first, second = tmp_path / "version_0", tmp_path / "version_1"
    scores = [0.8, 0.3, 0.5, 0.6]
    make_trainer(tmp_path, [CMPTCheckpoint(dirpath=first)], 2).fit(ScoredModel(scores))
    before = sorted(p.name for p in first.iterdir())
    callback = CMPTCheckpoint(dirpath=second)
    make_trainer(tmp_path, [callback], 4).fit(ScoredModel(scores), ckpt_path=first / "last.ckpt")
    assert callback.best_model_score == pytest.approx(0.8)  # not the 0.6 of the resumed run
    assert callback.best_model_path == str(first / "best-00.ckpt")
    assert sorted(p.name for p in first.iterdir()) == before  # the first run's files are kept
    assert load(second / "last.ckpt")["epoch"] == 3


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_resume_reads_the_state_of_a_plain_model_checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    scores = [0.3, 0.8, 0.5, 0.6]
    plain = ModelCheckpoint(
        dirpath=folder,
        monitor="val/score",
        mode="max",
        save_last=True,
        filename="best-{epoch:02d}",
        auto_insert_metric_name=False,
    )
    make_trainer(tmp_path, [plain], 2).fit(ScoredModel(scores))
    callback = CMPTCheckpoint(dirpath=folder)
    trainer = make_trainer(tmp_path, [callback], 4)
    with pytest.warns(UserWarning, match="callbacks used to create the checkpoint"):
        trainer.fit(ScoredModel(scores), ckpt_path=folder / "last.ckpt")
    assert callback.best_model_score == pytest.approx(0.8)
    assert callback.best_model_path == str(folder / "best-01.ckpt")


def test_link_is_refused():
    with pytest.raises(ValueError, match="'link'"):
        CMPTCheckpoint(save_last="link")


# --- read-only folder --------------------------------------------------------------------------


def _in(folder: Path, path) -> bool:
    return os.path.dirname(os.path.abspath(os.fsdecode(path))) == str(folder)


def patch_read_only(monkeypatch, folder: Path) -> None:
    """What a read-only folder refuses, as root too: creating, renaming or removing entries."""

    def refuse(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    real_open = os.open

    def open_(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and _in(folder, path):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    for name in ("replace", "rename"):
        real = getattr(os, name)

        def move(src, dst, *args, _real=real, **kwargs):
            for path in (src, dst):
                if _in(folder, path):
                    refuse(path)
            return _real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, name, move)
    for name in ("remove", "unlink", "mkdir"):
        real = getattr(os, name)

        def single(path, *args, _real=real, **kwargs):
            if _in(folder, path):
                refuse(path)
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, single)


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True, check=False).returncode == 0


@contextmanager
def real_read_only(tmp_path: Path, folder: Path) -> Iterator[Callable[[], None]]:
    """``chmod 0o555`` (not root) or a read-only bind mount (root); skips if neither works."""
    if os.geteuid() != 0:
        yield lambda: os.chmod(folder, 0o555)
        os.chmod(folder, 0o755)
        return
    probe = tmp_path / "probe"
    probe.mkdir()
    if not (
        _mount("--bind", str(probe), str(probe)) and _mount("-o", "remount,bind,ro", str(probe))
    ):
        subprocess.run(["umount", str(probe)], capture_output=True, check=False)
        pytest.skip("root cannot make a read-only bind mount here")
    subprocess.run(["umount", str(probe)], check=True)
    mounted = []

    def make_read_only():
        assert _mount("--bind", str(folder), str(folder))
        mounted.append(folder)
        assert _mount("-o", "remount,bind,ro", str(folder))

    try:
        yield make_read_only
    finally:
        for path in mounted:
            subprocess.run(["umount", str(path)], check=True)


CONFIGS = {
    # a periodic callback a user adds: every step, keep all; read-only once step 1 is saved
    "periodic": (
        lambda folder: ModelCheckpoint(dirpath=folder, every_n_train_steps=1, save_top_k=-1),
        lambda trainer, batch: trainer.global_step >= 1,
        "epoch=0-step=2.ckpt",
        ["epoch=0-step=1.ckpt"],
    ),
    # the package's defaults, improving every epoch; read-only after epoch 0
    "defaults": (
        lambda folder: CMPTCheckpoint(dirpath=folder),
        lambda trainer, batch: trainer.current_epoch >= 1,
        "best-01.ckpt",
        ["best-00.ckpt", "last.ckpt"],
    ),
}


@pytest.mark.parametrize("how", ["patched", "real"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_read_only_folder_fails_the_run_naming_the_save(tmp_path, monkeypatch, config, how):
    build, when, failed, kept = CONFIGS[config]
    folder = tmp_path / "ckpt"
    folder.mkdir()
    context = real_read_only(tmp_path, folder) if how == "real" else nullcontext()
    with context as make_real:
        make_read_only = (
            make_real if how == "real" else lambda: patch_read_only(monkeypatch, folder)
        )
        trainer = make_trainer(tmp_path, [build(folder), _At(when, make_read_only)], 3)
        with pytest.raises(CheckpointIOError) as info:
            trainer.fit(ScoredModel(scores=[0.1, 0.2, 0.3]))
        monkeypatch.undo()
        error = info.value
        assert error.errno in (errno.EACCES, errno.EROFS)
        assert error.filename == str(folder / failed)
        assert f"could not save checkpoint {str(folder / failed)!r}" in str(error)
        assert isinstance(error.__cause__, OSError)
        assert whole_files(folder) == kept  # no partial or temporary file, the old ones whole


# --- full disk ---------------------------------------------------------------------------------


def patch_disk_full(monkeypatch, folder: Path, room: int) -> None:
    """Writes into ``folder`` get ``room`` bytes (a short write), then fail with ENOSPC."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell which file a write goes to")
    real_write = os.write
    left = [room]

    def write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if not _in(folder, target):
            return real_write(fd, data)
        if left[0] == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[: left[0]]))
        left[0] -= written
        return written

    monkeypatch.setattr(os, "write", write)


@contextmanager
def small_tmpfs(folder: Path) -> Iterator[None]:
    folder.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)):
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(folder: Path, room: int) -> None:
    """Fill the file system of ``folder`` up to ``room`` free bytes."""
    with open(folder / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
        except OSError as err:
            assert err.errno == errno.ENOSPC
        filler.truncate(max(0, filler.tell() - room))


@pytest.mark.parametrize("how", ["patched", "tmpfs"])
def test_full_disk_leaves_no_partial_file(tmp_path, monkeypatch, how):
    folder = tmp_path / "ckpt"
    model = ScoredModel(scores=[0.1, 0.2, 0.3], ballast=64 * 1024)  # about 260 kB
    room = 128 * 1024
    if how == "patched":
        folder.mkdir()
        context, full = nullcontext(), lambda: patch_disk_full(monkeypatch, folder, room)
    else:
        context, full = small_tmpfs(folder), lambda: fill(folder, room)
    with context:
        at_epoch_1 = _At(lambda t, i: t.current_epoch >= 1, full)
        trainer = make_trainer(tmp_path, [CMPTCheckpoint(dirpath=folder), at_epoch_1], 3)
        with pytest.raises(CheckpointIOError) as info:
            trainer.fit(model)
        monkeypatch.undo()
        error = info.value
        assert error.errno == errno.ENOSPC
        assert error.filename == str(folder / "best-01.ckpt")
        assert "ENOSPC" in str(error)
        assert str(folder / "best-01.ckpt") in str(error)
        assert whole_files(folder, ignore={"filler"}) == ["best-00.ckpt", "last.ckpt"]
        assert load(folder / "last.ckpt")["epoch"] == 0


# --- the checkpoint IO on its own -------------------------------------------------------------


def test_truncated_archives_are_rejected(tmp_path):
    path = tmp_path / "a.ckpt"
    torch.save({"w": torch.randn(1000), "b": torch.randn(10)}, path)
    data = path.read_bytes()
    verify_archive(path, len(data))
    for size in (0, 1, len(data) // 2, len(data) - 1):
        path.write_bytes(data[:size])
        with pytest.raises(OSError) as info:
            verify_archive(path, len(data))
        assert info.value.errno == errno.EIO
        with pytest.raises(OSError):  # even when told the short size
            verify_archive(path, size)


def test_a_failed_check_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1}, path)

    def corrupt(temp, size):
        raise OSError(errno.EIO, "the file holds 0 bytes")

    monkeypatch.setattr("cmpt_lightning.checkpoint_io.verify_archive", corrupt)
    with pytest.raises(CheckpointIOError, match=r"last\.ckpt.*the file holds 0 bytes"):
        io.save_checkpoint({"step": 2}, path)
    assert load(path) == {"step": 1}
    assert whole_files(tmp_path) == ["last.ckpt"]


def test_remove_errors_name_the_file(tmp_path, monkeypatch):
    path = tmp_path / "best-00.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    patch_read_only(monkeypatch, tmp_path)
    with pytest.raises(CheckpointIOError, match=r"could not remove old checkpoint .*best-00\.ckpt"):
        AtomicCheckpointIO().remove_checkpoint(path)
    monkeypatch.undo()
    AtomicCheckpointIO().remove_checkpoint(path)
    AtomicCheckpointIO().remove_checkpoint(path)  # absent: nothing to do
    assert not path.exists()


def test_saved_files_keep_the_usual_permissions(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_with_atomic_io_respects_a_given_checkpoint_io():
    assert [type(p) for p in with_atomic_io(None)] == [AtomicCheckpointIO]
    given = TorchCheckpointIO()
    assert with_atomic_io([given]) == [given]
    assert with_atomic_io(given) == [given]
    strategy = SingleDeviceStrategy("cpu", checkpoint_io=given)
    assert with_atomic_io(None, strategy) == []
    trainer = Trainer(plugins=with_atomic_io(None), logger=False, enable_progress_bar=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
