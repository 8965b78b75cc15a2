"""Run every cell of a sweep as a real ``flwr run`` on one SuperLink, resumably, with progress, and attack it.

A cell whose finished run folder holds its resolved config is skipped; one whose unfinished folder
holds a round checkpoint is resumed (``resume = true``). A cell that fails is recorded with its log
(``<output-dir>/failed/<cell>.log``) and the sweep goes on. The attacks named in the spec run on every
finished cell that has not been attacked yet, through ``privshare-attack`` in a process of their own.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..launch import LocalSuperLink, run_app
from ..results import CHECKPOINT_NAME, atomic_write_text
from .spec import Cell, SweepSpec

ROUND_LINE = re.compile(r"\[ROUND (\d+)/(\d+)\]")
#: The file each attack writes into ``attacks/`` of a run folder (its presence means "attacked").
ATTACK_FILES = {"inversion": "inversion.json"}
MEMBERSHIP_FILE = "membership.json"


@dataclass(frozen=True)
class CellOutcome:
    """What became of a cell: ``"ran"``, ``"skipped"`` (finished before), ``"failed"`` (with the reason),
    ``"recorded"`` (its run folder is gone, its row kept from the earlier report), or ``"not run"`` (not selected
    this time, and not finished)."""

    cell: Cell
    status: str
    reason: str = ""

    @property
    def passed(self) -> bool:
        return self.status != "failed"


def finished_config_differences(folder: Path, cell: Cell) -> list[str] | None:
    """None when ``folder`` holds no finished run; else the keys whose recorded value differs from the cell's."""
    if not (folder / "summary.json").is_file():
        return None
    recorded = json.loads((folder / "config.json").read_text())["config"]
    return sorted(key for key, value in cell.run_config.items() if key != "resume" and recorded.get(key) != value)


def attack_command(spec: SweepSpec, folder: Path) -> list[str] | None:
    """The ``privshare-attack`` command for ``folder``, or None when the spec names no attack or it was attacked."""
    names = [
        name for name in spec.attacks if not (folder / "attacks" / ATTACK_FILES.get(name, MEMBERSHIP_FILE)).exists()
    ]
    if not names:
        return None
    options = [f"--{key}={value}" for key, value in spec.attack_options.items()]
    return [sys.executable, "-m", "flwr_privshare.attacks.cli", str(folder), "--attack", ",".join(names), *options]


def run_cell(spec: SweepSpec, cell: Cell, superlink: LocalSuperLink, on_line: Callable[[str], None]) -> CellOutcome:
    """Run (or skip, or resume) one cell, then its attacks."""
    folder = spec.runs_dir / cell.name
    differing = finished_config_differences(folder, cell)
    if differing:
        return CellOutcome(
            cell, "failed", f"{folder} holds a finished run of another config ({', '.join(differing)} differ)"
        )
    status = "skipped"
    if differing is None:
        config = dict(cell.run_config)
        if (spec.runs_dir / f".{cell.name}.incomplete" / CHECKPOINT_NAME).is_file():
            config["resume"] = True
        outcome = run_app(
            spec.app, config, spec.federation_config(cell.num_clients), superlink=superlink, on_line=on_line
        )
        if not outcome.completed:
            log = spec.output_dir / "failed" / f"{cell.name}.log"
            atomic_write_text(log, outcome.log)
            return CellOutcome(cell, "failed", f"the run ended {outcome.status}; its log is {log}")
        status = "ran"
    command = attack_command(spec, folder)
    if command is not None:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            log = spec.output_dir / "failed" / f"{cell.name}.attack.log"
            atomic_write_text(log, done.stdout + done.stderr)
            return CellOutcome(cell, "failed", f"the attacks failed (exit {done.returncode}); their log is {log}")
    return CellOutcome(cell, status)


def outcome_on_disk(spec: SweepSpec, cell: Cell) -> CellOutcome:
    """The state of a cell that was not run now: ``"skipped"`` when its finished folder is there, else ``"not run"``."""
    return CellOutcome(cell, "skipped" if (spec.runs_dir / cell.name / "summary.json").is_file() else "not run")


def run_sweep(spec: SweepSpec, *, progress: bool = True) -> list[CellOutcome]:
    """Run the selected cells of ``spec`` on one private SuperLink; return each cell's outcome."""
    cells = spec.selected_cells()
    outcomes: list[CellOutcome] = []
    with LocalSuperLink() as superlink, tqdm(total=len(cells), unit="cell", disable=not progress) as bar:
        for cell in cells:
            bar.set_postfix_str(cell.name)

            def show_round(line: str, name: str = cell.name) -> None:
                found = ROUND_LINE.search(line)
                if found:
                    bar.set_postfix_str(f"{name}, round {found[1]}/{found[2]}")

            outcome = run_cell(spec, cell, superlink, show_round)
            outcomes.append(outcome)
            if not outcome.passed:
                bar.write(f"{cell.name}: FAILED: {outcome.reason}")
            bar.update()
    return outcomes
