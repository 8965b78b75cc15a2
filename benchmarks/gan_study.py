"""The GAN attack under every protection, and the learned inversion of VisualMixer over window settings.

GAN part: each row is one ``flwr run`` of ``simulations/dp_fedavg_cifar`` (the app that declares
every protection) with 3 clients, partition 0 malicious, the victim class 3 (MNIST) or person 0
(AT&T faces), the attack from round 2, and the app's defaults otherwise (the faces get a recipe
and a generator budget for about 66 images per client, see ``GAN_DATA``): plain FedAvg, the control
run (no client holds the victim class), VisualMixer 2-8 and 8-16, DP-SGD at epsilon 8 and 1, and
DP-FedAvg at epsilon 8, MDP and AugMDP (T = 2; the feature network pre-trained on the public split).
The table gives every audit metric averaged over the last five rounds;
one plot per data set shows the oracle's share of ``G(z)`` against round, one line per row.

Inversion part: for every window setting (2-4, 2-8, 8-16, 8-32 on CIFAR-10; the same up to 8-16 on
MNIST, whose 28-pixel images hold no 32-pixel window) a one-round VisualMixer run (the attack
uses only the public split, the window settings and the clients' shuffled images, not the
model) is attacked with ``privshare-attack --attack inversion`` at its defaults.

    python -m benchmarks.gan_study --data-root ../shared/datasets --output-dir /tmp/gan-runs

writes ``experiments/gan_attack/gan.md`` (or into ``--results``), ``gan_success_<data>.png`` and every
run's last-round grid of ``G(z)``, and ``inversion.md`` with every setting's example figure. Finished run folders
and attacks are reused, so an interrupted study resumes.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from flwr_privshare.attacks.inversion import InversionAttack, InversionOptions
from flwr_privshare.attacks.run_folder import load_run_folder
from flwr_privshare.results import RunFolder, atomic_write_text

from .app_runs import command_line, run_summary

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "gan_attack"
GAN_DATA: dict[str, dict[str, Any]] = {
    "mnist": {"gan-victim-class": 3, "samples-per-client": 3000, "public-size": 5000, "test-size": 2000},
    # 320 training faces: 120 public (3 per person on average, the oracle's), about 66 per client;
    # small batches, 5 local epochs and Adam so that a client's few images give 20 steps per round;
    # the generator: 300 steps of 16 images per round (a quarter of the default batch, as the images
    # are 13 times MNIST's; three times the default steps), 100 fakes per round (a client's real
    # images are 66, not 3,000); the oracle: 100 epochs, as 120 images give 2 steps per epoch
    "att_faces": {
        "gan-victim-class": 0,
        "public-size": 120,
        "samples-per-client": 0,
        "batch-size": 16,
        "local-epochs": 5,
        "gan-batch-size": 16,
        "gan-generator-steps": 300,
        "gan-fake-images": 100,
        "optimizer": "adam",
        "learning-rate": 0.001,
        "lr-schedule": "constant",
        "gan-oracle-epochs": 100,
    },
}
PROTECTIONS: dict[str, dict[str, Any]] = {
    "none": {"protection": "none"},
    "control": {"protection": "none", "gan-control": True},
    "visualmixer-2-8": {"protection": "visualmixer", "vim-window-min": 2, "vim-window-max": 8},
    "visualmixer-8-16": {"protection": "visualmixer", "vim-window-min": 8, "vim-window-max": 16},
    "dp-sgd-eps8": {"protection": "dp-sgd", "target-epsilon": 8.0, "delta": 1e-5},
    "dp-sgd-eps1": {"protection": "dp-sgd", "target-epsilon": 1.0, "delta": 1e-5},
    "dp-fedavg-eps8": {"protection": "dp-fedavg", "target-epsilon": 8.0, "delta": 1e-5},
    "mdp": {"protection": "mdp"},
    "augmdp": {"protection": "mdp", "mdp-copies": 2},
}
INVERSION_WINDOWS = {"cifar10": [(2, 4), (2, 8), (8, 16), (8, 32)], "mnist": [(2, 4), (2, 8), (8, 16)]}
GAN_METRICS = ("oracle_share", "shuffled_oracle_share", "best_ssim", "pairwise_ssim")


def gan_rows(args: argparse.Namespace) -> list[str]:
    """Run (or reuse) every GAN row; return the Markdown table's lines (each metric the mean of the last five
    rounds) and draw the per-round plots."""
    lines = [
        "| data | protection | accuracy | " + " | ".join(GAN_METRICS) + " | wall time |",
        "|---|---|---|" + "---|" * len(GAN_METRICS) + "---|",
    ]
    for data, settings in GAN_DATA.items():
        if args.data and data not in args.data.split(","):
            continue
        histories = {}
        for label, protection in PROTECTIONS.items():
            if args.protections and label not in args.protections.split(","):
                continue
            name = f"gan-{data}-{label}-s{args.seed}"
            config = {
                "data-dir": str((args.data_root / data).resolve()),
                "seed": args.seed,
                "num-server-rounds": args.rounds,
                "gan-attacker": 0,
                "gan-start-round": 2,
                "oracle-epochs": 0,
                **settings,
                **protection,
            }
            summary = run_summary("dp_fedavg_cifar", name, config, args.num_clients, args.output_dir)
            report = json.loads((args.output_dir / name / "attacks" / "gan.json").read_text())
            histories[label] = report["rounds"]
            gan = summary.privacy["gan"]
            cells = [f"{gan[f'last5_{m}']:.2f}" if f"last5_{m}" in gan else "-" for m in GAN_METRICS]
            lines.append(
                f"| {data} | {label} | {summary.final_accuracy:.1%} | "
                + " | ".join(cells)
                + f" | {summary.wall_time_s:.0f} s |"
            )
            last = max(entry["round"] for entry in report["rounds"])
            shutil.copyfile(
                args.output_dir / name / "attacks" / "gan" / f"round-{last:03d}.png",
                args.results / f"{name}-last-round.png",
            )
        success_plot(data, histories, args.results)
    return lines


def success_plot(data: str, histories: dict[str, list[dict[str, Any]]], results: Path) -> None:
    """``gan_success_<data>.png``: the oracle's share of ``G(z)`` against round, one line per protection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 4))
    for label, history in histories.items():
        points = [(entry["round"], entry["oracle_share"]) for entry in history if "oracle_share" in entry]
        ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("share of G(z) the oracle labels as the victim")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    figure.tight_layout()
    RunFolder.existing(results).save_figure(f"gan_success_{data}", figure)


def inversion_rows(args: argparse.Namespace) -> list[str]:
    """Run (or reuse) every inversion row; return the Markdown table's lines."""
    lines = [
        "| data | windows | SSIM shuffled | SSIM inverted | PSNR shuffled | PSNR inverted "
        "| oracle: original / shuffled / inverted | leaked client images: SSIM shuffled -> inverted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for data, windows in INVERSION_WINDOWS.items():
        if args.data and data not in args.data.split(","):
            continue
        for low, high in windows:
            name = f"inversion-{data}-{low}-{high}-s{args.seed}"
            config = {
                "data-dir": str((args.data_root / data).resolve()),
                "seed": args.seed,
                "protection": "visualmixer",
                "vim-window-min": low,
                "vim-window-max": high,
                "num-server-rounds": 1,
                "oracle-epochs": 0,
            }
            run_summary("visualmixer_cifar", name, config, args.num_clients, args.output_dir)
            folder = args.output_dir / name
            if not (folder / "attacks" / "inversion.json").is_file():
                InversionAttack(InversionOptions()).run(load_run_folder(folder).finished)
            report = json.loads((folder / "attacks" / "inversion.json").read_text())
            test, leaked = report["test"], report["client_data"]
            lines.append(
                f"| {data} | {low}-{high} | {test['shuffled']['ssim']:.3f} | {test['inverted']['ssim']:.3f} "
                f"| {test['shuffled']['psnr']:.1f} dB | {test['inverted']['psnr']:.1f} dB "
                f"| {test['original']['oracle_accuracy']:.1%} / {test['shuffled']['oracle_accuracy']:.1%} / "
                f"{test['inverted']['oracle_accuracy']:.1%} "
                f"| {leaked['shuffled']['ssim']:.3f} -> {leaked['inverted']['ssim']:.3f} |"
            )
            shutil.copyfile(folder / "attacks" / "inversion_examples.png", args.results / f"{name}.png")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True, help="folder with mnist/, cifar10/ and att_faces/")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the run folders go")
    parser.add_argument("--num-clients", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15, help="rounds of the GAN runs")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--part", default="gan,inversion", help="gan, inversion or both")
    parser.add_argument("--data", default="", help="comma-separated data folders (default: all)")
    parser.add_argument("--protections", default="", help="comma-separated GAN rows (default: all)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the tables and figures go")
    args = parser.parse_args()
    for option, given, allowed in (
        ("--data", args.data, {*GAN_DATA, *INVERSION_WINDOWS}),
        ("--protections", args.protections, set(PROTECTIONS)),
        ("--part", args.part, {"gan", "inversion"}),
    ):
        unknown = sorted(set(filter(None, given.split(","))) - allowed)
        if unknown:
            parser.error(f"{option} names {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")

    args.results.mkdir(parents=True, exist_ok=True)
    command = command_line("benchmarks.gan_study", vars(args))
    if "gan" in args.part.split(","):
        atomic_write_text(args.results / "gan.md", "\n".join([f"`{command}`", "", *gan_rows(args)]) + "\n")
    if "inversion" in args.part.split(","):
        atomic_write_text(args.results / "inversion.md", "\n".join([f"`{command}`", "", *inversion_rows(args)]) + "\n")
    print(f"written to {args.results}")


if __name__ == "__main__":
    main()
