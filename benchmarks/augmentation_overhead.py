"""What per-image crop-and-flip augmentation costs the training loop, measured in one run.

The client loop (:func:`flwr_privshare.train.train`) trains the CIFAR GroupNorm CNN on the same
real CIFAR-10 images with and without ``crop-flip`` (pad 4), alternating the two so that both
see the same machine state; the best of ``--repeats`` timed epochs of each is kept. The
augmentation alone (one gather per batch of ``uint8`` images) is timed too.

    python -m benchmarks.augmentation_overhead --data-dir ../shared/datasets/cifar10

writes ``benchmarks/results/augmentation_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from flwr_privshare.models import build_model
from flwr_privshare.recipe import Augmentation, Recipe
from flwr_privshare.results import atomic_write_json, package_versions
from flwr_privshare.train import describe_device, get_device, train

from .images import benchmark_images

RESULTS = Path(__file__).resolve().parent / "results" / "augmentation_overhead.json"


def seconds(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="", help="folder with CIFAR-10 test.parquet (default: random images)")
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    data = benchmark_images(args.data_dir, args.images)
    device = get_device()
    model = build_model("cifar-cnn")
    augmentation = Augmentation.named("crop-flip", 4)
    settings = {"epochs": 1, "batch_size": args.batch_size, "optimizer": "sgd", "learning_rate": 0.05, "device": device}

    def epoch(recipe: Recipe) -> None:
        train(model, data, generator=torch.Generator().manual_seed(0), recipe=recipe, **settings)  # type: ignore[arg-type]

    def augment_only() -> None:
        generator = torch.Generator().manual_seed(0)
        for start in range(0, len(data), args.batch_size):
            augmentation(data.images[start : start + args.batch_size].to(device), generator)

    epoch(Recipe())  # warm-up
    plain, augmented, alone = [], [], []
    for _ in range(args.repeats):
        plain.append(seconds(lambda: epoch(Recipe())))
        augmented.append(seconds(lambda: epoch(Recipe(augmentation=augmentation))))
        alone.append(seconds(augment_only))
    plain_rate, augmented_rate = len(data) / min(plain), len(data) / min(augmented)
    result = {
        "plain_images_per_second": round(plain_rate, 1),
        "augmented_images_per_second": round(augmented_rate, 1),
        "ratio": round(augmented_rate / plain_rate, 3),
        "augmentation_alone_images_per_second": round(len(data) / min(alone), 1),
        "augmentation": "crop-flip, padding 4",
        "device": describe_device(device),
        "batch_size": args.batch_size,
        "images": len(data),
        "model": "cifar-cnn",
        "versions": package_versions(),
    }
    print(json.dumps({key: value for key, value in result.items() if key != "versions"}, indent=1))
    atomic_write_json(args.output, result)


if __name__ == "__main__":
    main()
