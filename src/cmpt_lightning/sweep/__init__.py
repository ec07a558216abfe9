"""The cluster sweep: ``cmpt sweep run`` fits a grid of training settings through submitit.

``grid`` (grid files, named variants, checked against ``cmpt fit``'s parser), ``plan`` (cells,
resolved configs, job resources), ``launch`` and ``job`` (submission, markers, resume),
``collect`` and ``plots`` (``cmpt sweep collect``), ``command`` (the subcommands of ``cmpt``).
Not to be confused with the test grid (:mod:`cmpt_lightning.evaluation`), which evaluates one
trained model over test-time missing rates and types.
"""

from .collect import collect_sweep
from .grid import Cell, ConfigResolver, Grid, expand_grid, load_grid
from .launch import CellFailure, SweepReport, launch_sweep
from .plan import ExecutorKind, SlurmSettings, SweepSettings, plan_sweep
from .results import SweepResults

__all__ = [
    "Cell",
    "CellFailure",
    "ConfigResolver",
    "ExecutorKind",
    "Grid",
    "SlurmSettings",
    "SweepReport",
    "SweepResults",
    "SweepSettings",
    "collect_sweep",
    "expand_grid",
    "launch_sweep",
    "load_grid",
    "plan_sweep",
]
