"""Sweeps: methods x client counts x seeds over one app, each cell a real Flower run (``privshare-sweep``)."""

from .report import write_report
from .runner import CellOutcome, run_sweep
from .spec import Cell, SpecError, SweepSpec, load_spec

__all__ = ["Cell", "CellOutcome", "SpecError", "SweepSpec", "load_spec", "run_sweep", "write_report"]
