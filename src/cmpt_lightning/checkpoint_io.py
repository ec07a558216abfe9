"""Checkpoint files that are always whole: :class:`AtomicCheckpointIO`.

:class:`AtomicCheckpointIO` writes every checkpoint the trainer saves (top-k, ``last.ckpt``,
periodic callbacks, SLURM's ``hpc_ckpt_<n>.ckpt``) to a temporary file in the checkpoint's own
folder, flushes and fsyncs it, checks that it is a complete torch archive and only then moves it
into place with :func:`os.replace`; a failed save raises :class:`CheckpointIOError`, which names
the file and the cause, and leaves no partial file behind. :func:`with_atomic_io` adds it to a
trainer's plugins; :class:`~cmpt_lightning.checkpoints.CMPTCheckpoint` decides when to save.
:func:`check_checkpoint` checks a checkpoint the user names (``--ckpt_path``) before anything is
built: a missing file names the checkpoints near it, a file that is not one says so.

Only ``lightning``, ``torch``, the standard library and the package's errors are imported here.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pickle
import shutil
import uuid
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .errors import UserInputError

__all__ = [
    "AtomicCheckpointIO",
    "CheckpointIOError",
    "CheckpointNotFoundError",
    "NotACheckpointError",
    "check_checkpoint",
    "verify_archive",
    "with_atomic_io",
]

log = logging.getLogger(__name__)

#: Bytes per ``os.write`` call (a single call is capped at about 2 GiB on Linux anyway).
_CHUNK = 16 * 2**20
#: Temporary files are hidden, never end in ``.ckpt`` and never contain ``ckpt_``, so that neither
#: ``ModelCheckpoint`` (``last*.ckpt``) nor Lightning's SLURM resume (``hpc_ckpt_<n>``) nor a
#: ``*.ckpt`` glob ever takes one for a checkpoint.
_TEMP_PREFIX = ".partial-"
_TEMP_SUFFIX = ".tmp"


class CheckpointIOError(OSError):
    """A checkpoint could not be saved or removed.

    ``filename`` is the checkpoint, ``errno`` the cause's (``ENOSPC``, ``EACCES``, ``EROFS``, ...)
    or ``EIO`` when the written file failed the completeness check; the original error is chained
    as ``__cause__``.
    """

    def __str__(self) -> str:
        return str(self.strerror)


def _failure(path: _PATH, err: BaseException, action: str, outcome: str) -> CheckpointIOError:
    """The :class:`CheckpointIOError` for ``err``, naming the file, the cause and what is left."""
    code = err.errno if isinstance(err, OSError) and err.errno else errno.EIO
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    name = errno.errorcode.get(code, str(code))
    msg = f"could not {action} checkpoint {os.fspath(path)!r}: {reason} ({name}); {outcome}"
    return CheckpointIOError(code, msg, os.fspath(path))


def _local_path(path: _PATH) -> Path | None:
    """``path`` as a local path, or None for a remote URL (``s3://``, ``gs://``, ``a::b``...)."""
    text = os.fspath(path)
    if text.startswith("file://"):
        return Path(text[len("file://") :])
    if "://" in text or "::" in text:
        return None
    return Path(text)


def _write_all(fd: int, data: memoryview) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    offset = 0
    while offset < len(data):
        written = os.write(fd, data[offset : offset + _CHUNK])
        if written <= 0:
            raise OSError(errno.EIO, f"write returned {written} after {offset} bytes")
        offset += written


def verify_archive(path: _PATH, size: int) -> None:
    """Check that ``path`` is a complete torch archive of ``size`` bytes, without unpickling it.

    Cheap (it reads the zip's central directory and ``data.pkl``, not the tensors): the size
    must match what was written, the zip directory at the end of the file must parse, every
    record must lie inside the file, and ``data.pkl`` must be there with a valid CRC.

    Args:
        path: the written file.
        size: the number of bytes that were written.

    Raises:
        OSError: ``EIO`` with what is wrong.
    """
    actual = os.stat(path).st_size
    if actual != size or size == 0:
        raise OSError(errno.EIO, f"the file holds {actual} bytes, {size} were written")
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
            pickles = [r for r in records if r.filename.rsplit("/", 1)[-1] == "data.pkl"]
            if not pickles:
                raise OSError(errno.EIO, "not a torch archive: it has no data.pkl record")
            for record in records:
                if record.header_offset + record.compress_size > actual:
                    msg = f"record {record.filename!r} runs past the end of the file"
                    raise OSError(errno.EIO, msg)
            archive.read(pickles[0])  # raises on a bad CRC
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise OSError(errno.EIO, f"not a complete torch archive: {err}") from err


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; file systems without it are skipped)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _replace_atomically(data: memoryview, path: Path, verify: bool) -> None:
    """Write ``data`` to a temporary file beside ``path``, check it, then move it to ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was. The folder is
    not synced here (see :func:`_fsync_folder`).
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f"{_TEMP_PREFIX}{uuid.uuid4().hex}{_TEMP_SUFFIX}"
    # 0o666 and the umask, like any new file (mkstemp would make it 0o600)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(temp, flags, 0o666)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if verify:
            verify_archive(temp, len(data))
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temp)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are whole or absent, and whose failures are errors.

    A local save serializes the checkpoint in memory (as Lightning's own IO does), writes it to a
    hidden temporary file in the checkpoint's folder (``.partial-<hex>.tmp``), flushes and fsyncs
    it, checks it with :func:`verify_archive` and moves it into place with :func:`os.replace`
    (atomic within one file system), then fsyncs the folder. On any failure (read-only folder,
    full disk, quota, an incomplete file) the temporary file is removed, the file that was there
    before is untouched and :class:`CheckpointIOError` names the file and the cause. Since
    ``ModelCheckpoint`` removes an old checkpoint only after the new one is saved, a failed save
    never costs an old file. A process killed during a save (SIGKILL, power loss) can leave a
    ``.partial-*.tmp`` file, never a partial checkpoint.

    Remote URLs (``s3://``, ``gs://``, any fsspec protocol other than ``file``) fall back to
    Lightning's ``TorchCheckpointIO`` (an fsspec transaction, without the fsync and the check).

    Args:
        verify: check each written file before moving it into place (a few milliseconds,
            growing with the number of tensors, not their size); False skips the check.
    """

    def __init__(self, verify: bool = True) -> None:
        super().__init__()
        self.verify = verify

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        """Save ``checkpoint`` to ``path``, whole or not at all.

        Args:
            checkpoint: the trainer's checkpoint dict.
            path: where to save it.
            storage_options: not supported (as in ``TorchCheckpointIO``).

        Raises:
            TypeError: if ``storage_options`` is given.
            CheckpointIOError: if the file could not be written, checked or moved into place.
        """
        local = _local_path(path)
        if local is None:
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            msg = (
                f"{type(self).__name__}.save_checkpoint does not take storage_options, got "
                f"{storage_options!r}; use a custom CheckpointIO to use them"
            )
            raise TypeError(msg)
        buffer = BytesIO()
        torch.save(checkpoint, buffer)
        with buffer.getbuffer() as data:
            try:
                _replace_atomically(data, local, self.verify)
            except OSError as err:
                outcome = "no partial file was left and the previous files are untouched"
                raise _failure(local, err, action="save", outcome=outcome) from err
        try:
            _fsync_folder(local.parent)
        except OSError as err:
            outcome = "the new file is in place but a crash now could lose it"
            raise _failure(local, err, action="sync the folder of", outcome=outcome) from err
        log.debug("Saved checkpoint %s", local)

    def remove_checkpoint(self, path: _PATH) -> None:
        """Remove the checkpoint file (or sharded checkpoint folder) at ``path``, if it exists.

        Args:
            path: the checkpoint.

        Raises:
            CheckpointIOError: if it exists and could not be removed.
        """
        local = _local_path(path)
        try:
            if local is None:
                super().remove_checkpoint(path)
            elif local.is_dir() and not local.is_symlink():
                shutil.rmtree(local)
            else:
                local.unlink(missing_ok=True)
        except OSError as err:
            raise _failure(path, err, action="remove old", outcome="it is still there") from err


def with_atomic_io(plugins: Any = None, strategy: Any = None) -> list[Any]:
    """The trainer's ``plugins`` with an :class:`AtomicCheckpointIO` added.

    Nothing is added when the plugins or the strategy already set a ``CheckpointIO`` (the user's
    choice wins; Lightning refuses one in both places). Not for XLA (TPU) strategies, which need
    their own checkpoint IO.

    Args:
        plugins: the ``plugins`` argument of the ``Trainer`` (None, one plugin or a list).
        strategy: the ``strategy`` argument of the ``Trainer``, if any.

    Returns:
        A new list for ``Trainer(plugins=...)``.
    """
    if plugins is None:
        items: list[Any] = []
    elif isinstance(plugins, (list, tuple)):
        items = list(plugins)
    else:
        items = [plugins]
    if any(isinstance(p, CheckpointIO) for p in items):
        return items
    if getattr(strategy, "_checkpoint_io", None) is not None:
        return items
    return [*items, AtomicCheckpointIO()]


class CheckpointNotFoundError(UserInputError, FileNotFoundError):
    """A checkpoint the user named is not there; the message lists the checkpoints near it."""


class NotACheckpointError(UserInputError, ValueError):
    """A file given as a checkpoint that is not one (another file, cut short, not Lightning's)."""


#: The ``ckpt_path`` values that Lightning resolves itself, not paths.
_SPECIAL_CKPT = ("best", "last", "hpc", "registry")
#: The most checkpoints a message lists, and the folders searched for them.
_LISTED, _SEARCHED = 8, 200


def _checkpoints_near(path: Path) -> tuple[Path | None, list[Path]]:
    """The nearest existing folder above ``path`` and the ``*.ckpt`` files in or below it.

    Below it, the search goes at most three levels down (``version_0/checkpoints/x.ckpt``)
    and visits at most :data:`_SEARCHED` folders, so a path under a large tree stays quick.
    """
    folder = path.parent
    while not folder.is_dir():
        if folder == folder.parent:
            return None, []
        folder = folder.parent
    found = sorted(p for p in folder.glob("*.ckpt") if p.is_file())
    if found:
        return folder, found
    visited = 0
    for current, subfolders, files in os.walk(folder):
        visited += 1
        depth = len(Path(current).relative_to(folder).parts)
        found += [Path(current, name) for name in sorted(files) if name.endswith(".ckpt")]
        subfolders[:] = sorted(subfolders) if depth < 3 else []
        if visited >= _SEARCHED or len(found) > _LISTED:
            break
    return folder, found


def _missing_message(path: Path) -> str:
    folder, found = _checkpoints_near(path)
    msg = f"ckpt_path: no checkpoint at {str(path)!r}"
    if folder is None or not found:
        where = f" (none in or below {str(folder)!r} either)" if folder is not None else ""
        return f"{msg}{where}; give the path of a .ckpt file that `cmpt fit` saved"
    names = [str(p.relative_to(folder)) for p in found[:_LISTED]]
    more = f" and {len(found) - _LISTED} more" if len(found) > _LISTED else ""
    listed = ", ".join(names) + more
    return f"{msg}. The checkpoints in {str(folder)!r}: {listed}"


def check_checkpoint(ckpt_path: _PATH) -> None:
    """Check that ``ckpt_path`` names a Lightning checkpoint file, before the run is built.

    Lightning's special values (``best``, ``last``, ``hpc``, ``registry[:...]``), remote URLs
    and folders (sharded checkpoints) are left to Lightning. A local file must exist, be a
    complete torch archive (:func:`verify_archive`) and hold a dict with a ``state_dict``; it is
    read with memory-mapped tensors, so the check costs about the size of its pickle. A
    checkpoint that ``weights_only`` loading refuses (objects of other classes) is left to
    Lightning, which says how to load it.

    Raises:
        CheckpointNotFoundError: if there is no file there, listing the checkpoints near it.
        NotACheckpointError: if the file is not a checkpoint (a text file, a truncated file,
            a plain ``state_dict`` saved with ``torch.save``), naming it and the reason.
    """
    text = os.fspath(ckpt_path)
    local = _local_path(ckpt_path)
    if local is None or text in _SPECIAL_CKPT or text.startswith("registry:") or local.is_dir():
        return
    if not local.is_file():
        raise CheckpointNotFoundError(_missing_message(local))
    fix = "give a .ckpt file that `cmpt fit` saved (its checkpoints folder lists them)"
    try:
        verify_archive(local, local.stat().st_size)
    except OSError as err:
        msg = f"ckpt_path: {text!r} is not a checkpoint ({err.strerror}); {fix}"
        raise NotACheckpointError(msg) from err
    try:
        content = torch.load(local, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            return  # other classes inside: Lightning's load decides and explains
        msg = f"ckpt_path: {text!r} cannot be read as a checkpoint ({err}); {fix}"
        raise NotACheckpointError(msg) from err
    except (RuntimeError, EOFError, ValueError) as err:
        msg = f"ckpt_path: {text!r} cannot be read as a checkpoint ({err}); {fix}"
        raise NotACheckpointError(msg) from err
    if not isinstance(content, dict) or "state_dict" not in content:
        if isinstance(content, dict):
            kind = "a dict without 'state_dict': weights saved with torch.save?"
        else:
            kind = f"a {type(content).__name__}"
        msg = f"ckpt_path: {text!r} is not a Lightning checkpoint (it holds {kind}); {fix}"
        raise NotACheckpointError(msg)
