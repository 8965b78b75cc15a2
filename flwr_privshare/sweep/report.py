"""The sweep's tables and plots: one row per cell, and per method and client count the mean and spread over seeds.

Writes into the sweep's output folder: ``sweep.csv`` (one row per cell, every column of
``privshare-report`` plus the round time), ``sweep.json`` (the cells, the aggregates, the spec's path relative to it and
package versions), ``sweep.md`` (the aggregate table) and the plots ``accuracy_vs_clients.png``,
``epsilon_vs_clients.png`` (DP methods), ``round_time_vs_clients.png`` and ``attack_vs_clients.png``
(when some cell was attacked).

Run folders are large (checkpoints, attack models) and may be deleted once reported: a cell whose
folder is gone keeps its row from the ``sweep.json`` already there, as ``"recorded"``, as long as
its settings (:meth:`~flwr_privshare.sweep.spec.SweepSpec.settings`) are unchanged.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..report import HEADLINE_ATTACKS, protection_columns, row_of, worst_case
from ..results import RunFolder, atomic_write_csv, atomic_write_json, atomic_write_text, package_versions
from .runner import CellOutcome, outcome_on_disk
from .spec import SweepSpec

#: Per (method, clients): the columns averaged over seeds, and their labels (``sweep.md`` shows those with data).
AGGREGATED = {
    "accuracy": "accuracy",
    "plain_accuracy": "accuracy (plain test)",
    "epsilon": "epsilon",
    "noise_multiplier": "noise multiplier",
    "oracle_recognition": "oracle recognition",
    "round_time_s": "round time (s)",
    "attack_auc": "strongest membership AUC",
}
#: Columns shown as percentages.
PERCENT = ("accuracy", "plain_accuracy", "oracle_recognition")


def aggregated_columns() -> dict[str, str]:
    """:data:`AGGREGATED` with every registered protection's headline columns after oracle recognition (read when
    the report is written, so protections registered after this module was imported count too)."""
    columns = list(AGGREGATED.items())
    at = list(AGGREGATED).index("oracle_recognition") + 1
    columns[at:at] = [(column.key, column.label) for column in protection_columns()]
    return dict(columns)


def percent_columns() -> set[str]:
    """:data:`PERCENT` and the protections' headline columns shown as percentages."""
    return {*PERCENT, *(column.key for column in protection_columns() if column.percent)}


def round_time(folder: Path) -> float | None:
    """Mean seconds per round from ``rounds.csv``'s ``elapsed_s`` (round 0 to the last round)."""
    rows = list(csv.DictReader((folder / "rounds.csv").open()))
    if len(rows) < 2:
        return None
    return (float(rows[-1]["elapsed_s"]) - float(rows[0]["elapsed_s"])) / (len(rows) - 1)


def cell_row(spec: SweepSpec, outcome: CellOutcome) -> dict[str, Any]:
    """One CSV row: the cell, its status, and for a finished cell everything ``privshare-report`` reads."""
    cell = outcome.cell
    row: dict[str, Any] = {
        "cell": cell.name,
        "method_name": cell.method,
        "num_clients": cell.num_clients,
        "seed": cell.seed,
        "status": outcome.status,
        "reason": outcome.reason,
        "settings": spec.settings(cell),
    }
    folder = spec.runs_dir / cell.name
    if (folder / "summary.json").is_file():
        row.update(row_of(folder))
        if row["plain_accuracy"] == row["accuracy"]:
            row["plain_accuracy"] = None  # a column only where a protection changes the test images
        row["round_time_s"] = round_time(folder)
        aucs = [found[1] for attack in HEADLINE_ATTACKS if (found := worst_case(row, attack))]
        row["attack_auc"] = max(aucs) if aucs else None
    return row


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method and client count: the number of finished seeds and, per :func:`aggregated_columns` column, mean and
    std."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method_name"], row["num_clients"]), []).append(row)
    table = []
    for (method, clients), members in groups.items():
        entry: dict[str, Any] = {"method_name": method, "num_clients": clients, "seeds": len(members)}
        entry["finished"] = sum(1 for row in members if "accuracy" in row)
        for column in aggregated_columns():
            values = [float(row[column]) for row in members if row.get(column) is not None]
            entry[f"{column}_mean"] = statistics.fmean(values) if values else None
            entry[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
        table.append(entry)
    return table


def markdown(spec: SweepSpec, table: Sequence[dict[str, Any]], outcomes: Sequence[CellOutcome]) -> str:
    """The aggregate table (mean ± std over seeds; the mean alone where one seed finished), and the failed cells."""
    labels, percent = aggregated_columns(), percent_columns()
    columns = [column for column in labels if any(row[f"{column}_mean"] is not None for row in table)]
    header = ["method", "clients", "seeds finished", *(labels[column] for column in columns)]
    lines = [
        f"Sweep `{spec.path.name}` of `{spec.app.name}`: {len(spec.methods)} methods x clients {spec.clients} x "
        f"seeds {spec.seeds}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in table:
        cells = [row["method_name"], str(row["num_clients"]), f"{row['finished']}/{row['seeds']}"]
        spread = row["finished"] > 1  # one seed has no spread to show
        for column in columns:
            mean, std = row[f"{column}_mean"], row[f"{column}_std"]
            if mean is None:
                cells.append("-")
            elif column in percent:
                cells.append(f"{mean:.1%} ± {std:.1%}" if spread else f"{mean:.1%}")
            else:
                cells.append(f"{mean:.3g} ± {std:.2g}" if spread else f"{mean:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    failed = [outcome for outcome in outcomes if not outcome.passed]
    if failed:
        lines += ["", "Failed cells:", ""] + [f"- `{outcome.cell.name}`: {outcome.reason}" for outcome in failed]
    recorded = [outcome.cell.name for outcome in outcomes if outcome.status == "recorded"]
    if recorded:
        names = ", ".join(f"`{name}`" for name in recorded)
        lines += ["", f"Kept from the earlier report (run folders gone): {names}."]
    missing = [outcome.cell.name for outcome in outcomes if outcome.status == "not run"]
    if missing:
        lines += ["", f"Not run yet: {', '.join(f'`{name}`' for name in missing)}."]
    return "\n".join(lines) + "\n"


def plot_against_clients(spec: SweepSpec, table: Sequence[dict[str, Any]], column: str, stem: str) -> bool:
    """One line per method: ``column``'s mean against the client count, the std as error bars; False if no data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = {row["method_name"] for row in table if row[f"{column}_mean"] is not None}
    if not methods:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method in sorted(methods):
        points = sorted(
            (row["num_clients"], row[f"{column}_mean"], row[f"{column}_std"])
            for row in table
            if row["method_name"] == method and row[f"{column}_mean"] is not None
        )
        xs, ys, errors = zip(*points, strict=True)
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("clients")
    ax.set_ylabel(aggregated_columns()[column])
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    RunFolder.existing(spec.output_dir).save_figure(stem, fig)
    return True


def earlier_rows(spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """The finished cells' rows of the ``sweep.json`` in the output folder, by cell name (none when there is none)."""
    path = spec.output_dir / "sweep.json"
    if not path.is_file():
        return {}
    return {row["cell"]: row for row in json.loads(path.read_text())["cells"] if "accuracy" in row}


def keep_earlier(spec: SweepSpec, outcome: CellOutcome, earlier: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The earlier row of a cell whose run folder is gone, marked ``"recorded"``, if its settings are the cell's."""
    row = earlier.get(outcome.cell.name)
    if outcome.status != "not run" or row is None:
        return None
    if row.get("settings") != spec.settings(outcome.cell):
        return None
    return {**row, "status": "recorded", "reason": "its run folder is gone; the row is kept from the earlier report"}


def write_report(spec: SweepSpec, outcomes: Sequence[CellOutcome] = ()) -> Path:
    """Write every output of the sweep (see the module docstring) over all the spec's cells, those not in
    ``outcomes`` (not selected now) as their folders stand or as the earlier report recorded them; return
    ``sweep.md``'s path."""
    known = {outcome.cell.name: outcome for outcome in outcomes}
    earlier = earlier_rows(spec)
    outcomes = []
    rows: list[dict[str, Any]] = []
    for cell in spec.cells():
        outcome = known.get(cell.name) or outcome_on_disk(spec, cell)
        row = keep_earlier(spec, outcome, earlier)
        if row is not None:
            outcome = CellOutcome(cell, "recorded", row["reason"])
        outcomes.append(outcome)
        rows.append(row or cell_row(spec, outcome))
    table = aggregate(rows)
    atomic_write_csv(spec.output_dir / "sweep.csv", rows)
    atomic_write_json(
        spec.output_dir / "sweep.json",
        {
            "spec": os.path.relpath(spec.path, spec.output_dir),  # like the settings, portable with the folders
            "cells": rows,
            "aggregates": table,
            "versions": package_versions(),
        },
    )
    for column, stem in (
        ("accuracy", "accuracy_vs_clients"),
        ("epsilon", "epsilon_vs_clients"),
        ("round_time_s", "round_time_vs_clients"),
        ("attack_auc", "attack_vs_clients"),
    ):
        plot_against_clients(spec, table, column, stem)
    path = spec.output_dir / "sweep.md"
    atomic_write_text(path, markdown(spec, table, outcomes))
    return path
