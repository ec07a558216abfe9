"""Known-harmless notices of the libraries under cmpt, silenced by their exact messages.

Never a blanket filter: each notice is matched by its own message (and, for a warning, the
module that raises it where that is known), and only where cmpt is at work:

- :func:`quiet_known_noise`: every notice below, while a ``cmpt`` command runs (the entry
  point, :mod:`cmpt_lightning.main`, and a sweep's job, :func:`~cmpt_lightning.cli.run_fit`).
- Through the Python API (a user's own ``Trainer`` with :class:`~cmpt_lightning.CMPTModule`),
  in the narrowest place that is reached:

  - :func:`quiet_stepping_estimate` around the module's own ``estimated_stepping_batches``;
  - :func:`hide_leafspec_warning` from the module's ``setup`` to its ``teardown`` (the
    warning is raised by Lightning's own loader code, while a stage runs);
  - :func:`drop_lightning_tips` when a module is built: Lightning logs its adverts in
    ``Trainer.__init__``, before any hook of the module can run, so this one filter stays on
    Lightning's ``rank_zero`` logger; it drops those two adverts and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import cast

__all__ = [
    "KNOWN_LOGS",
    "KNOWN_WARNINGS",
    "LIGHTNING_TIPS",
    "STEPPING_ESTIMATE",
    "drop_lightning_tips",
    "hide_leafspec_warning",
    "quiet_known_noise",
    "quiet_stepping_estimate",
    "show_leafspec_warning",
]

#: The logger Lightning's ``rank_zero_info`` writes to.
RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"

#: Lightning's adverts for litlogger and litmodels, logged when a ``Trainer`` is built.
LIGHTNING_TIPS = (
    "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]",
    "💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]",
)
#: What Lightning logs when ``configure_optimizers`` asks for the number of steps (the schedule).
STEPPING_ESTIMATE = "Loading `train_dataloader` to estimate number of stepping batches."
#: torch's deprecation of ``LeafSpec``, raised by Lightning 2.6's own ``_pytree`` helper.
LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
LEAFSPEC_MODULE = r"lightning\.pytorch\.utilities\._pytree"

#: Warnings silenced while a ``cmpt`` command runs: Lightning's tensorboardX notice (the CSV
#: logger it falls back to is what the package uses), torch's ``LeafSpec`` deprecation,
#: jsonargparse deprecations triggered by Lightning's own CLI code, and litdata's
#: ``IterableDataset`` length notice (its StreamingDataset gives each worker its own chunks).
KNOWN_WARNINGS = (
    r"Starting from v1\.9\.0, `tensorboardX` has been removed",
    LEAFSPEC,
    r"[\s\S]*was deprecated in v4\.\d+\.0 and will be removed in v5\.0\.0",
    r"Your `IterableDataset` has `__len__` defined",
)
#: Log records silenced the same way (the beginning of their message).
KNOWN_LOGS = (*LIGHTNING_TIPS, STEPPING_ESTIMATE)


class _DropMessages(logging.Filter):
    """Drops the records whose message begins with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but the known ones."""
        return not str(record.getMessage()).startswith(self.prefixes)


@contextlib.contextmanager
def _dropping(prefixes: tuple[str, ...]) -> Iterator[None]:
    """Drop the records of :data:`RANK_ZERO_LOGGER` that begin with ``prefixes``, in the block."""
    target = logging.getLogger(RANK_ZERO_LOGGER)
    drop = _DropMessages(prefixes)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


@contextlib.contextmanager
def quiet_known_noise() -> Iterator[None]:
    """Silence the known-harmless notices of Lightning and jsonargparse, only inside the block.

    The filters are scoped to a ``cmpt`` command (the entry point), not set globally, so a
    user's own code that imports the package still sees every warning.
    """
    with _dropping(KNOWN_LOGS), warnings.catch_warnings():
        for pattern in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        # jsonargparse's deprecations of what Lightning's CLI calls (not ours to change)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="lightning")
        yield


def quiet_stepping_estimate() -> contextlib.AbstractContextManager[None]:
    """Drop Lightning's :data:`STEPPING_ESTIMATE` note in the block (nothing else)."""
    return _dropping((STEPPING_ESTIMATE,))


_TIPS = _DropMessages(LIGHTNING_TIPS)


def drop_lightning_tips() -> None:
    """Drop Lightning's :data:`LIGHTNING_TIPS` from now on (once; see the module's docstring)."""
    target = logging.getLogger(RANK_ZERO_LOGGER)
    if _TIPS not in target.filters:
        target.addFilter(_TIPS)


def _ignore_leafspec() -> None:
    warnings.filterwarnings(
        "ignore", message=LEAFSPEC, category=FutureWarning, module=LEAFSPEC_MODULE
    )


def _leafspec_filter() -> tuple[object, ...]:
    """The ``warnings.filters`` entry that ignores the ``LeafSpec`` warning of Lightning's code."""
    with warnings.catch_warnings():
        _ignore_leafspec()
        return tuple(warnings.filters[0])


_LEAFSPEC_FILTER = _leafspec_filter()


def hide_leafspec_warning() -> None:
    """Ignore torch's ``LeafSpec`` deprecation raised by Lightning's ``_pytree``, until shown again.

    Only that warning from that module; :func:`show_leafspec_warning` takes the filter away.
    """
    if _LEAFSPEC_FILTER not in warnings.filters:
        _ignore_leafspec()


def show_leafspec_warning() -> None:
    """Take away the filter of :func:`hide_leafspec_warning` (if it is there).

    An ignored warning is not recorded as shown, so nothing else needs resetting.
    """
    with contextlib.suppress(ValueError):
        cast("list[object]", warnings.filters).remove(_LEAFSPEC_FILTER)
