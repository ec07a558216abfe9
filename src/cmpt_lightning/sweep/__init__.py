"""Sweeps: every test-time (missing rate, type) cell from one evaluation pass."""

from .onepass import CASE_ORDER, evaluate_cells, select_case_logits, write_sweep

__all__ = ["CASE_ORDER", "evaluate_cells", "select_case_logits", "write_sweep"]
