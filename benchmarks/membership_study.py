"""Membership inference on every method: the privacy side of the privacy-utility table.

Every row is one ``flwr run`` of a project app (10 IID clients, seed 42, the app's defaults
otherwise: plain FedAvg, VisualMixer with small and large windows, DP-SGD at epsilon 8 and 3,
DP-FedAvg at epsilon 8, DPM feature sharing) followed by ``privshare-attack`` with all four
attacks (LOSS, shadow models, LiRA, RMIA) on 1,000 members and 1,000 non-members with 8
reference models. One further row is a deliberately overfit plain run (2 clients with 500
images each, 60 local epochs), where the attacks must succeed. Finished run folders and
finished attacks are reused, so an interrupted study resumes where it stopped.

    python -m benchmarks.membership_study --data-root ../shared/datasets --output-dir /tmp/membership-runs

writes ``experiments/membership/membership.md``, ``.csv`` and ``.png`` (through
``privshare-report``) and each run's ROC plot under ``experiments/membership/roc/``.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr_privshare.attacks.membership.attack import MembershipInference, MembershipOptions
from flwr_privshare.attacks.run_folder import load_run_folder
from flwr_privshare.report import write_report

from .app_runs import run_summary

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "membership"


@dataclass(frozen=True)
class StudyRun:
    """One run of the study and how it is attacked."""

    name: str
    app: str
    config: dict[str, Any]
    num_clients: int
    options: MembershipOptions


def study_runs(data_root: Path, num_clients: int, seed: int, reference_models: int) -> list[StudyRun]:
    """Every run of the study, CIFAR-10 first (run names match the utility and DP tables' folders)."""
    options = MembershipOptions(reference_models=reference_models)
    runs = []
    for data in ("cifar10", "mnist"):
        common = {"data-dir": str((data_root / data).resolve()), "seed": seed, "oracle-epochs": 10}
        large_windows = (8, 32) if data == "cifar10" else (8, 16)
        for protection, (low, high) in (("none", (2, 8)), ("visualmixer", (2, 8)), ("visualmixer", large_windows)):
            config = {**common, "protection": protection, "vim-window-min": low, "vim-window-max": high}
            name = f"{data}-{protection}-{low}-{high}-s{seed}"
            runs.append(StudyRun(name, "visualmixer_cifar", config, num_clients, options))
        for protection, epsilon in (("dp-sgd", 8.0), ("dp-sgd", 3.0), ("dp-fedavg", 8.0)):
            config = {**common, "protection": protection, "target-epsilon": epsilon, "delta": 1e-5}
            name = f"{data}-{protection}-eps{epsilon:g}-s{seed}"
            runs.append(StudyRun(name, "dp_fedavg_cifar", config, num_clients, options))
        dpm = {"data-dir": common["data-dir"], "seed": seed}
        runs.append(StudyRun(f"{data}-dpm-s{seed}", "dpm_cifar", dpm, num_clients, options))
    overfit = {
        "data-dir": str((data_root / "cifar10").resolve()),
        "seed": seed,
        "protection": "none",
        "samples-per-client": 500,
        "num-server-rounds": 20,
        "local-epochs": 3,
        "optimizer": "adam",
        "learning-rate": 0.001,
        "lr-schedule": "constant",
        "oracle-epochs": 0,
    }
    # the reference models train on halves of the 2,000 candidates: 1,000 rows, as many as the two clients had
    overfit_options = MembershipOptions(reference_models=reference_models, extra_pool=0)
    runs.insert(6, StudyRun(f"cifar10-overfit-s{seed}", "visualmixer_cifar", overfit, 2, overfit_options))
    return runs


def attack(folder: Path, options: MembershipOptions) -> None:
    """Attack one finished run folder, unless it was attacked already."""
    if (folder / "attacks" / "membership.json").is_file():
        return
    loaded = load_run_folder(folder)
    inference = MembershipInference(options)
    inference.run(loaded.finished, loaded.summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True, help="folder with cifar10/ and mnist/")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the run folders go")
    parser.add_argument("--num-clients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--reference-models", type=int, default=8)
    parser.add_argument("--only", default="", help="comma-separated run names to run (default: all)")
    args = parser.parse_args()

    for run in study_runs(args.data_root, args.num_clients, args.seed, args.reference_models):
        if args.only and run.name not in args.only.split(","):
            continue
        run_summary(run.app, run.name, run.config, run.num_clients, args.output_dir)
        attack(args.output_dir / run.name, run.options)
        print(f"{run.name}: attacked", flush=True)
        roc = RESULTS / "roc"
        roc.mkdir(parents=True, exist_ok=True)
        for plot in sorted((args.output_dir / run.name / "attacks").glob("membership_roc*.png")):
            shutil.copyfile(plot, roc / plot.name.replace("membership", run.name))
    write_report([args.output_dir], RESULTS / "membership")


if __name__ == "__main__":
    main()
