"""``privshare-report DIR ...``: one privacy-utility table (Markdown and CSV) and plot over many run folders.

Every run folder under the given folders (any depth) becomes one row: data set, method and
its parameters, clients, rounds, accuracy, epsilon, oracle recognition, and per membership
attack its AUC and true-positive rate at 0.1% false-positive rate (from
``attacks/membership.json``, when the run was attacked), the GAN attack's success (the share of
``G(z)`` the oracle labels as the victim, over the last five rounds) when a client attacked,
and the inversion's SSIM to the originals, of the shuffled and the inverted test images (from
``attacks/inversion.json``), when present. For a run attacked with more than
one query (VisualMixer: plain and shuffled records) the table shows the query that served
the attacker best, by AUC, as the defender's worst case; the CSV has every query.

    privshare-report ~/flwr-privshare-results --output report

writes ``report.md``, ``report.csv`` and ``report.png`` (accuracy against the strongest
attack's AUC and TPR at 0.1% FPR, one labelled point per run).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .protections import HeadlineColumn, registered_protections
from .results import atomic_target, atomic_write_csv, atomic_write_text
from .summary import RunSummary, load_summary

#: The membership attack variants of the Markdown table (the CSV has all).
HEADLINE_ATTACKS = ("loss", "shadow", "lira-online-fixed-variance", "lira-offline-fixed-variance", "rmia")
LOW_FPR_KEY = "tpr_at_0.001_fpr"
INVERSION_SSIM = "inversion/test/{}/ssim"  # the inversion's column of the Markdown table, by images


def run_folders(roots: Sequence[Path]) -> list[Path]:
    """Finished run folders (with ``summary.json``) under ``roots``, sorted; incomplete ones are skipped."""
    found = {
        summary.parent
        for root in roots
        for summary in Path(root).expanduser().rglob("summary.json")
        if not any(part.endswith(".incomplete") for part in summary.parent.parts)
    }
    return sorted(found)


def method_parameters(summary: RunSummary) -> str:
    """The parameters that tell two runs of one method apart (windows, noise, epsilon target)."""
    parts = []
    mixer = summary.privacy.get("visualmixer")
    if mixer:
        parts.append(f"windows {mixer['window_min']}-{mixer['window_max']}")
    dp = summary.dp
    if dp:
        if dp.get("target_epsilon"):
            parts.append(f"target eps {dp['target_epsilon']:g}")
        if dp.get("noise_multiplier") is not None:
            parts.append(f"z {dp['noise_multiplier']:.3g}")
    return ", ".join(parts)


def membership_columns(folder: Path) -> dict[str, Any]:
    """``{"<query>/<attack>/<metric>": value}`` of ``attacks/membership.json`` (empty when not attacked)."""
    path = folder / "attacks" / "membership.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    columns: dict[str, Any] = {"membership/reference_models": report["reference_models"]["count"]}
    for query, attacks in report["queries"].items():
        for attack, metrics in attacks.items():
            for metric, value in metrics.items():
                columns[f"{query}/{attack}/{metric}"] = value
    return columns


def gan_columns(summary: RunSummary) -> dict[str, Any]:
    """``{"gan/<metric>": value}``: the GAN attack's metrics over the last five rounds (empty without it)."""
    gan = summary.privacy.get("gan") or {}
    return {f"gan/{key.removeprefix('last5_')}": value for key, value in gan.items() if key.startswith("last5_")}


def inversion_columns(folder: Path) -> dict[str, Any]:
    """``{"inversion/<view>/<images>/<metric>": value}`` of ``attacks/inversion.json`` (empty when not attacked)."""
    path = folder / "attacks" / "inversion.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text())
    return {
        f"inversion/{view}/{images}/{metric}": value
        for view in ("client_data", "test")
        for images, metrics in report[view].items()
        for metric, value in metrics.items()
    }


def worst_case(columns: dict[str, Any], attack: str) -> tuple[str, float, float] | None:
    """``(query, AUC, TPR at 0.1% FPR)`` of the query where ``attack`` had the highest AUC."""
    queries = [key.split("/")[0] for key in columns if key.endswith(f"/{attack}/auc")]
    if not queries:
        return None
    best = max(queries, key=lambda query: columns[f"{query}/{attack}/auc"])
    return best, columns[f"{best}/{attack}/auc"], columns[f"{best}/{attack}/{LOW_FPR_KEY}"]


def protection_columns() -> list[HeadlineColumn]:
    """Every registered protection's headline columns (VisualMixer's VFE gain, MDP's SSIM and oracle views)."""
    return [column for protection in registered_protections().values() for column in protection.headline_columns]


def row_of(folder: Path) -> dict[str, Any]:
    """One CSV row: the run's headline and every attack metric."""
    summary = load_summary(folder)
    oracle = summary.privacy.get("oracle", {})
    return {
        "run": folder.name,
        "data": Path(summary.dataset).name,
        "method": summary.method,
        "parameters": method_parameters(summary),
        "clients": summary.num_clients,
        "rounds": summary.num_rounds,
        "accuracy": summary.final_accuracy,
        "plain_accuracy": summary.details.get("final_plain_accuracy"),
        "epsilon": summary.epsilon,
        "noise_multiplier": (summary.dp or {}).get("noise_multiplier"),
        "oracle_recognition": oracle.get("recognition"),
        **{column.key: column.value_in(summary.privacy) for column in protection_columns()},
        **membership_columns(folder),
        **gan_columns(summary),
        **inversion_columns(folder),
    }


def _percent(value: Any) -> str:
    return "-" if value is None else f"{value:.1%}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The Markdown table: headline columns, the protections' columns, AUC / TPR at 0.1% FPR per headline attack,
    and the GAN and inversion columns, each when some run has them."""
    attacks = [a for a in HEADLINE_ATTACKS if any(worst_case(row, a) for row in rows)]
    protections = [column for column in protection_columns() if any(row.get(column.key) is not None for row in rows)]
    with_gan = any("gan/oracle_share" in row for row in rows)
    with_inversion = any(INVERSION_SSIM.format("inverted") in row for row in rows)
    header = ["data", "method", "parameters", "clients", "rounds", "accuracy", "epsilon", "oracle recognition"]
    header += [column.label for column in protections]
    header += [f"{attack} AUC / TPR@0.1%" for attack in attacks]
    header += ["GAN: G(z) as victim (last 5 rounds)"] * with_gan + [
        "inversion SSIM: shuffled -> inverted"
    ] * with_inversion
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row["data"],
            row["method"],
            row["parameters"] or "-",
            str(row["clients"]),
            str(row["rounds"]),
            _percent(row["accuracy"]),
            "-" if row["epsilon"] is None else f"{row['epsilon']:.2f}",
            _percent(row["oracle_recognition"]),
        ]
        for column in protections:
            value = row.get(column.key)
            cells.append(_percent(value) if column.percent else "-" if value is None else f"{value:.3g}")
        for attack in attacks:
            found = worst_case(row, attack)
            if found is None:
                cells.append("-")
                continue
            query, auc, tpr = found
            cells.append(f"{auc:.3f} / {tpr:.1%}" + ("" if query == "plain" else f" ({query})"))
        if with_gan:
            shuffled = row.get("gan/shuffled_oracle_share")
            cells.append(
                _percent(row.get("gan/oracle_share")) + ("" if shuffled is None else f" ({shuffled:.1%} shuffled)")
            )
        if with_inversion:
            before, after = (row.get(INVERSION_SSIM.format(images)) for images in ("shuffled", "inverted"))
            cells.append("-" if after is None else f"{before:.2f} -> {after:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def scatter(rows: list[dict[str, Any]]) -> Any:
    """Accuracy against the strongest attack's AUC and TPR at 0.1% FPR, one labelled point per attacked run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 4))
    for row in rows:
        found = [f for f in (worst_case(row, a) for a in HEADLINE_ATTACKS) if f is not None]
        if not found:
            continue
        label = f"{row['method']} {row['parameters']}".strip()
        for ax, value in zip(axes, (max(f[1] for f in found), max(f[2] for f in found)), strict=True):
            ax.scatter(row["accuracy"], value)
            ax.annotate(label, (row["accuracy"], value), fontsize=6, xytext=(3, 3), textcoords="offset points")
    for ax, name in zip(axes, ("strongest attack's AUC", "strongest attack's TPR at 0.1% FPR"), strict=True):
        ax.set_xlabel("accuracy")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def write_report(roots: Sequence[Path], output: Path) -> list[dict[str, Any]]:
    """Write ``<output>.md``, ``.csv`` and ``.png`` for every run folder under ``roots``; return the rows."""
    folders = run_folders(roots)
    if not folders:
        raise FileNotFoundError(f"no finished run folder (with summary.json) under {', '.join(map(str, roots))}")
    rows = [row_of(folder) for folder in folders]
    atomic_write_csv(output.with_suffix(".csv"), rows)
    atomic_write_text(output.with_suffix(".md"), markdown(rows))
    import matplotlib.pyplot as plt

    figure = scatter(rows)
    try:
        with atomic_target(output.with_suffix(".png")) as temporary:
            figure.savefig(temporary, dpi=120, format="png")
    finally:
        plt.close(figure)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="privshare-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="folders that hold run folders")
    parser.add_argument("--output", type=Path, default=Path("report"), help="path stem of report.{md,csv,png}")
    args = parser.parse_args(argv)
    try:
        rows = write_report(args.folders, args.output)
    except FileNotFoundError as error:
        parser.error(str(error))
    print(f"{len(rows)} runs -> {args.output.with_suffix('.md')}, .csv, .png")


if __name__ == "__main__":
    main()
