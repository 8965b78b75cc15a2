"""Client training throughput with Opacus DP-SGD against plain training, measured in one run.

Same model (the CIFAR GroupNorm CNN), same batch size, same data (real CIFAR-10 images
when a data folder is given) and the same optimizer; DP-SGD uses Poisson sampling with the
expected batch size. Every Opacus per-example-gradient mode is timed; the ratio reported
is that of the mode ``train_dp_sgd`` uses by default (``DEFAULT_GRAD_SAMPLE_MODE``).

    python -m benchmarks.dp_overhead --data-dir ../shared/datasets/cifar10

writes ``benchmarks/results/dp_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from flwr_privshare.dp.dpsgd import DEFAULT_GRAD_SAMPLE_MODE, GRAD_SAMPLE_MODES, train_dp_sgd
from flwr_privshare.models import build_model
from flwr_privshare.results import atomic_write_json, package_versions
from flwr_privshare.train import describe_device, get_device, train

from .images import benchmark_images

RESULTS = Path(__file__).resolve().parent / "results" / "dp_overhead.json"


def images_per_second(run: object, count: int, repeats: int) -> float:
    """Best of ``repeats`` timed calls of ``run`` (one untimed warm-up call first)."""
    assert callable(run)
    run()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="", help="folder with CIFAR-10 test.parquet (default: random images)")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    data = benchmark_images(args.data_dir, args.images)
    device = get_device()
    model = build_model("cifar-cnn")
    common = {"epochs": 1, "batch_size": args.batch_size, "optimizer": "sgd", "learning_rate": 0.05, "device": device}

    def plain() -> None:
        train(model, data, generator=torch.Generator().manual_seed(0), **common)  # type: ignore[arg-type]

    def dp(mode: str) -> None:
        train_dp_sgd(
            model, data, noise_multiplier=1.0, max_grad_norm=1.0, delta=1e-5, history=[], seed=0,
            grad_sample_mode=mode, **common,  # type: ignore[arg-type]
        )  # fmt: skip

    plain_rate = images_per_second(plain, len(data), args.repeats)
    dp_rates = {mode: images_per_second(lambda m=mode: dp(m), len(data), args.repeats) for mode in GRAD_SAMPLE_MODES}
    result = {
        "plain_images_per_second": round(plain_rate, 1),
        "dp_images_per_second": round(dp_rates[DEFAULT_GRAD_SAMPLE_MODE], 1),
        "ratio": round(dp_rates[DEFAULT_GRAD_SAMPLE_MODE] / plain_rate, 3),
        "grad_sample_mode": DEFAULT_GRAD_SAMPLE_MODE,
        "dp_images_per_second_by_mode": {mode: round(rate, 1) for mode, rate in dp_rates.items()},
        "device": describe_device(device),
        "batch_size": args.batch_size,
        "images": len(data),
        "model": "cifar-cnn",
        "versions": package_versions(),
    }
    print(f"{'training':<22}{'images/s':>10}{'ratio':>8}")
    print(f"{'plain':<22}{plain_rate:>10,.0f}{1:>8.2f}")
    for mode, rate in dp_rates.items():
        print(f"{'DP-SGD (' + mode + ')':<22}{rate:>10,.0f}{rate / plain_rate:>8.2f}")
    atomic_write_json(args.output, result)
    print(json.dumps({k: result[k] for k in ("plain_images_per_second", "dp_images_per_second", "ratio")}))


if __name__ == "__main__":
    main()
