"""Plain vs VisualMixer FedAvg with identical settings: the utility table with its privacy side.

Every row is one ``flwr run`` of ``simulations/visualmixer_cifar`` (10 IID clients by
default) through :func:`flwr_privshare.launch.run_app`. Beside each VisualMixer row stand
the window bounds, the mean VFE gain (shuffled / plain) and the oracle recognition: the
accuracy of a classifier trained on the plain public split when shown the shuffled test
images (near 10% = chance; near the oracle's plain accuracy = nothing hidden); the plain
rows show the oracle's plain accuracy there. Settings not named here are the app's defaults.

    python -m benchmarks.utility_table --data-root ../shared/datasets --output-dir /tmp/utility-runs

writes ``experiments/utility_table/utility_table.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flwr_privshare.results import atomic_write_json, atomic_write_text, package_versions
from flwr_privshare.summary import RunSummary

from .app_runs import app_defaults, command_line, run_summary

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "utility_table"

# (data folder, protection, window min, window max)
SETTINGS = [
    ("mnist", "none", 2, 8),
    ("mnist", "visualmixer", 2, 4),
    ("mnist", "visualmixer", 2, 8),
    ("mnist", "visualmixer", 8, 16),
    ("cifar10", "none", 2, 8),
    ("cifar10", "visualmixer", 2, 8),
    ("cifar10", "visualmixer", 8, 32),
]


def table_rows(summaries: list[RunSummary]) -> list[str]:
    """Markdown rows, one per run."""
    lines = [
        "| data | protection | windows | accuracy (protected test) | accuracy (plain test) | VFE gain "
        "| oracle on plain | oracle recognition | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        mixer, oracle = s.privacy.get("visualmixer"), s.privacy.get("oracle")
        windows = f"{mixer['window_min']}-{mixer['window_max']}" if mixer else "-"
        gain = f"{mixer['vfe_gain']:.2f}x" if mixer else "-"
        oracle_plain = f"{oracle['plain_accuracy']:.1%}" if oracle else "-"
        recognition = f"{oracle['recognition']:.1%}" if oracle else "-"
        lines.append(
            f"| {Path(s.dataset).name} | {s.protection} | {windows} | {s.final_accuracy:.1%} "
            f"| {s.details['final_plain_accuracy']:.1%} | {gain} | {oracle_plain} | {recognition} "
            f"| {s.wall_time_s:.0f} s |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True, help="folder with cifar10/ and mnist/")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the run folders go")
    parser.add_argument("--num-clients", type=int, default=10)
    parser.add_argument("--num-server-rounds", type=int, default=app_defaults("visualmixer_cifar")["num-server-rounds"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--oracle-epochs", type=int, default=10)
    parser.add_argument("--only", default="", help="comma-separated data folders to run (default: all)")
    args = parser.parse_args()

    summaries = []
    for data, protection, window_min, window_max in SETTINGS:
        if args.only and data not in args.only.split(","):
            continue
        name = f"{data}-{protection}-{window_min}-{window_max}-s{args.seed}"
        config = {
            "data-dir": str((args.data_root / data).resolve()),
            "protection": protection,
            "vim-window-min": window_min,
            "vim-window-max": window_max,
            "num-server-rounds": args.num_server_rounds,
            "seed": args.seed,
            "oracle-epochs": args.oracle_epochs,
        }
        summary = run_summary("visualmixer_cifar", name, config, args.num_clients, args.output_dir)
        summaries.append(summary)
        print("\n".join(table_rows([summary])[2:]), flush=True)

    command = command_line("benchmarks.utility_table", vars(args))
    text = "\n".join(
        [
            f"Produced by `{command}`",
            f"({args.num_clients} IID clients, {args.num_server_rounds} rounds, seed {args.seed}).",
            "",
            *table_rows(summaries),
            "",
        ]
    )
    atomic_write_text(RESULTS / "utility_table.md", text)
    runs = [summary.to_json() for summary in summaries]
    atomic_write_json(RESULTS / "utility_table.json", {"runs": runs, "versions": package_versions()})
    print(text)


if __name__ == "__main__":
    main()
