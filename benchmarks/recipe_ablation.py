"""What each part of the training recipe buys, on plain and on VisualMixer-shuffled images.

One process trains the app's CIFAR CNN centrally (the upper bound of IID FedAvg with one local
epoch per round) on ``--train-rows`` client rows for ``--epochs`` epochs, once per recipe
variant, and evaluates it on the matching test view: the plain test set for plain training, the
test set shuffled with the server's own key for VisualMixer training (the deployed setting of
``simulations/visualmixer_cifar``). For VisualMixer the augmentation acts on the shuffled images
the client holds.

    python -m benchmarks.recipe_ablation --data-dir ../shared/datasets/cifar10

writes ``experiments/training_recipe/recipe_ablation.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from flwr_privshare.data import ImageDataset, load_split
from flwr_privshare.models import build_model
from flwr_privshare.recipe import Augmentation, LearningRateSchedule, Recipe
from flwr_privshare.results import atomic_write_json, atomic_write_text, package_versions
from flwr_privshare.seeding import seeded
from flwr_privshare.train import describe_device, evaluate, get_device, train
from flwr_privshare.visualmixer import visual_mix

from .app_runs import command_line

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "training_recipe"

# name: (augmentation, schedule, label smoothing)
VARIANTS: dict[str, tuple[str, str, float]] = {
    "plain loop": ("none", "constant", 0.0),
    "+ one-cycle": ("none", "one-cycle", 0.0),
    "+ label smoothing": ("none", "one-cycle", 0.1),
    "+ flip": ("flip", "one-cycle", 0.1),
    "+ crop-flip (full recipe)": ("crop-flip", "one-cycle", 0.1),
}


def mixed(data: ImageDataset, seed: int, window_max: int) -> ImageDataset:
    """``data`` shuffled by VisualMixer with windows 2..``window_max`` under the key ``seed``."""
    result = visual_mix(data.images, 2, window_max, generator=torch.Generator().manual_seed(seed))
    return ImageDataset(result.images, data.labels, data.num_classes)


def run_variant(
    train_data: ImageDataset, test: ImageDataset, variant: tuple[str, str, float], args: argparse.Namespace
) -> dict[str, Any]:
    augmentation, schedule, smoothing = variant
    recipe = Recipe(Augmentation.named(augmentation), LearningRateSchedule(schedule), smoothing)
    with seeded(args.seed):
        model = build_model("cifar-cnn")
    started = time.perf_counter()
    train(
        model, train_data, epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd",
        learning_rate=args.learning_rate, device=get_device(), generator=torch.Generator().manual_seed(args.seed),
        recipe=recipe,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    _, accuracy = evaluate(model, test, device=get_device())
    return {"accuracy": accuracy, "train_seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="CIFAR-10 folder with train.parquet and test.parquet")
    parser.add_argument("--train-rows", type=int, default=20000)
    parser.add_argument("--test-rows", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--window-max", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args()

    train_rows = load_split("", "train", args.data_dir).head(args.train_rows)
    test = load_split("", "test", args.data_dir).head(args.test_rows)
    views = {
        "plain": (train_rows, test),
        f"visualmixer 2-{args.window_max}": (
            mixed(train_rows, args.seed, args.window_max),
            mixed(test, args.seed + 1, args.window_max),
        ),
    }
    rows = []
    for view, (train_data, test_data) in views.items():
        for name, variant in VARIANTS.items():
            outcome = run_variant(train_data, test_data, variant, args)
            rows.append({"images": view, "variant": name, **outcome})
            print(f"{view:<18} {name:<28} {outcome['accuracy']:.1%} {outcome['train_seconds']:>7.1f} s", flush=True)
    command = command_line("benchmarks.recipe_ablation", vars(args) | {"output_dir": ""})
    lines = [
        f"`{command}` ({args.train_rows} training rows, {args.epochs} epochs, batch {args.batch_size}, peak learning "
        f"rate {args.learning_rate}, {describe_device(get_device())})",
        "",
        "| images | recipe | test accuracy | training time |",
        "|---|---|---|---|",
        *(f"| {r['images']} | {r['variant']} | {r['accuracy']:.1%} | {r['train_seconds']:.0f} s |" for r in rows),
    ]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output_dir / "recipe_ablation.md", "\n".join(lines) + "\n")
    atomic_write_json(
        args.output_dir / "recipe_ablation.json",
        {"command": command, "rows": rows, "settings": {k: str(v) for k, v in vars(args).items()},
         "versions": package_versions()},
    )  # fmt: skip


if __name__ == "__main__":
    main()
