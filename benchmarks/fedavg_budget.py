"""What more rounds buy: plain FedAvg accuracy against wall time on this machine.

One ``flwr run`` of ``simulations/visualmixer_cifar`` with ``protection = "none"`` per round
budget, each with the app's default recipe (so each run anneals its learning rate over its own
budget). The plot shows every run's per-round test accuracy against the wall time since the
ServerApp started (``rounds.csv``'s ``elapsed_s``), and each run's final point.

    python -m benchmarks.fedavg_budget --data-dir ../shared/datasets/cifar10 --output-dir /tmp/budget-runs

writes ``experiments/training_recipe/fedavg_budget.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from flwr_privshare.results import atomic_write_json, atomic_write_text, package_versions

from .app_runs import command_line, run_summary

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "training_recipe"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="CIFAR-10 folder")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the run folders go")
    parser.add_argument("--rounds", default="3,6,12", help="comma-separated round budgets")
    parser.add_argument("--num-clients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    runs: list[dict[str, Any]] = []
    for rounds in (int(value) for value in args.rounds.split(",")):
        name = f"fedavg-budget-r{rounds}-s{args.seed}"
        config = {
            "data-dir": str(args.data_dir.resolve()),
            "protection": "none",
            "num-server-rounds": rounds,
            "seed": args.seed,
        }
        summary = run_summary("visualmixer_cifar", name, config, args.num_clients, args.output_dir)
        with (args.output_dir / name / "rounds.csv").open() as handle:
            curve = [(float(row["elapsed_s"]), float(row["accuracy"])) for row in csv.DictReader(handle)]
        runs.append({"rounds": rounds, "final_accuracy": summary.final_accuracy, "wall_time_s": summary.wall_time_s,
                     "curve": curve})  # fmt: skip
        print(f"{rounds:>3} rounds: {summary.final_accuracy:.1%} in {summary.wall_time_s:.0f} s", flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for run in runs:
        seconds, accuracy = zip(*run["curve"], strict=True)
        axes.plot(seconds, accuracy, marker=".", label=f"{run['rounds']} rounds")
        axes.scatter([run["wall_time_s"]], [run["final_accuracy"]], color="black", zorder=3)
    axes.set_xlabel("wall time since the ServerApp started (s)")
    axes.set_ylabel("test accuracy")
    axes.set_title(f"Plain FedAvg, CIFAR-10, {args.num_clients} IID clients")
    axes.legend()
    axes.grid(alpha=0.3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    figure.savefig(RESULTS / "fedavg_budget.png", dpi=120, bbox_inches="tight")
    command = command_line("benchmarks.fedavg_budget", vars(args))
    lines = [f"`{command}`", "", "| rounds | final accuracy | wall time |", "|---|---|---|"]
    lines += [f"| {r['rounds']} | {r['final_accuracy']:.1%} | {r['wall_time_s']:.0f} s |" for r in runs]
    atomic_write_text(RESULTS / "fedavg_budget.md", "\n".join(lines) + "\n")
    record = {"command": command, "runs": runs, "versions": package_versions()}
    atomic_write_json(RESULTS / "fedavg_budget.json", record)


if __name__ == "__main__":
    main()
