"""Sweeps: test-time missing cells from one pass; grids of training settings over submitit.

``onepass``: every test-time (missing rate, type) cell from one evaluation pass. ``grid``,
``plan``, ``launch``, ``job``: ``cmpt sweep`` runs a grid of training settings through submitit;
``collect``: ``cmpt sweep collect`` aggregates it.
"""

from .collect import SweepResults, collect_sweep
from .grid import Cell, ConfigResolver, Grid, expand_grid, load_grid
from .launch import CellFailure, SweepReport, launch_sweep
from .onepass import CASE_ORDER, evaluate_cells, select_case_logits, write_sweep
from .plan import ExecutorKind, SlurmSettings, SweepSettings, plan_sweep

__all__ = [
    "CASE_ORDER",
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
    "evaluate_cells",
    "expand_grid",
    "launch_sweep",
    "load_grid",
    "plan_sweep",
    "select_case_logits",
    "write_sweep",
]
