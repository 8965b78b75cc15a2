"""Training-recipe variants at the apps' default budget: one ``flwr run`` per variant, 10 IID clients.

Each variant is a set of run-config overrides of ``simulations/visualmixer_cifar`` or
``simulations/dp_fedavg_cifar`` on CIFAR-10 (or MNIST), seed 42. A variant whose run folder
already exists under ``--output-dir`` is read, not run again, so an interrupted study resumes.

    python -m benchmarks.recipe_probes --data-root ../shared/datasets --output-dir /tmp/probes

writes ``experiments/training_recipe/recipe_probes.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from flwr_privshare.results import atomic_write_json, atomic_write_text, package_versions

from .app_runs import command_line, run_summary

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "training_recipe"
PLAIN = {"protection": "none"}
NO_AUGMENTATION = {"augmentation": "none", "label-smoothing": 0.0}

# name: (app, data folder, overrides)
VARIANTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "plainA": (
        "visualmixer_cifar", "cifar10",
        {**PLAIN, "num-server-rounds": 10, "batch-size": 64, "learning-rate": 0.05, "augmentation": "crop-flip",
         "label-smoothing": 0.1},
    ),
    "plainB": (
        "visualmixer_cifar", "cifar10",
        {**PLAIN, "num-server-rounds": 8, "batch-size": 32, "learning-rate": 0.1, "augmentation": "crop-flip",
         "label-smoothing": 0.1},
    ),
    "plainC": (
        "visualmixer_cifar", "cifar10",
        {**PLAIN, "num-server-rounds": 8, "batch-size": 32, "learning-rate": 0.05, "augmentation": "crop-flip",
         "label-smoothing": 0.1, "server-momentum": 0.9},
    ),
    "plainD": (
        "visualmixer_cifar", "cifar10",
        {**PLAIN, **NO_AUGMENTATION, "num-server-rounds": 8, "batch-size": 32, "learning-rate": 0.05},
    ),
    "plainG": (
        "visualmixer_cifar", "cifar10",
        {**PLAIN, **NO_AUGMENTATION, "num-server-rounds": 8, "batch-size": 16, "learning-rate": 0.05},
    ),
    "dpE": (
        "dp_fedavg_cifar", "cifar10",
        {"protection": "dp-sgd", "target-epsilon": 8.0, "num-server-rounds": 8, "batch-size": 128,
         "learning-rate": 0.1, "augmentation": "crop-flip", "label-smoothing": 0.1},
    ),
    "dpI": (
        "dp_fedavg_cifar", "cifar10",
        {"protection": "dp-sgd", "target-epsilon": 8.0, "num-server-rounds": 8, "batch-size": 128,
         "learning-rate": 0.4, **NO_AUGMENTATION},
    ),
    "mnistF": (
        "visualmixer_cifar", "mnist",
        {**PLAIN, "dataset": "ylecun/mnist", "num-server-rounds": 8, "batch-size": 32, "learning-rate": 0.05,
         "augmentation": "auto", "label-smoothing": 0.1},
    ),
    "mnistJ": (
        "visualmixer_cifar", "mnist",
        {**PLAIN, **NO_AUGMENTATION, "dataset": "ylecun/mnist", "num-server-rounds": 10, "batch-size": 16,
         "learning-rate": 0.05},
    ),
    "vmH": (
        "visualmixer_cifar", "cifar10",
        {**NO_AUGMENTATION, "num-server-rounds": 10, "batch-size": 16, "learning-rate": 0.05},
    ),
    "vmH2": (
        "visualmixer_cifar", "cifar10",
        {"augmentation": "crop-flip", "label-smoothing": 0.0, "num-server-rounds": 10, "batch-size": 16,
         "learning-rate": 0.05},
    ),
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True, help="folder with cifar10/ and mnist/")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the run folders go")
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--num-clients", type=int, default=10)
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    for name, (app, data, overrides) in VARIANTS.items():
        if args.only and name not in args.only.split(","):
            continue
        folder = args.output_dir / name
        config = {**overrides, "data-dir": str((args.data_root / data).resolve()), "seed": 42}
        summary = run_summary(app, name, config, args.num_clients, args.output_dir)
        settings = ", ".join(f"{key}={value}" for key, value in overrides.items())
        with (folder / "rounds.csv").open() as handle:
            train_loss = float(list(csv.DictReader(handle))[-1]["train_loss"])  # the clients' mean, last round
        rows.append({"name": name, "app": app, "data": data, "overrides": overrides,
                     "accuracy": summary.final_accuracy, "wall_time_s": summary.wall_time_s,
                     "final_train_loss": train_loss, "epsilon": summary.epsilon})  # fmt: skip
        print(f"{name}: {summary.final_accuracy:.1%} in {summary.wall_time_s:.0f} s ({settings})", flush=True)
    command = command_line("benchmarks.recipe_probes", vars(args))
    lines = [
        f"`{command}`",
        "",
        "| variant | data | settings | accuracy | last round's training loss | wall time |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        settings = ", ".join(f"`{key}={value}`" for key, value in row["overrides"].items())
        lines.append(
            f"| {row['name']} | {row['data']} | {settings} | {row['accuracy']:.1%} | {row['final_train_loss']:.2f} "
            f"| {row['wall_time_s']:.0f} s |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "recipe_probes.md", "\n".join(lines) + "\n")
    atomic_write_json(
        RESULTS / "recipe_probes.json", {"command": command, "runs": rows, "versions": package_versions()}
    )


if __name__ == "__main__":
    main()
