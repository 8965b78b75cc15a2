"""MDP's PGD throughput: images per second per PGD step (one forward and one backward pass of f per image).

The CIFAR GroupNorm CNN as f, real CIFAR-10 images when a data folder is given, both distances,
several PGD batch sizes; best of ``--repeats`` timed calls after a warm-up. The client-side cost
of MDP is ``T x partition size x mdp-steps / rate`` seconds.

    python -m benchmarks.mdp_pgd --data-dir ../shared/datasets/cifar10

writes ``benchmarks/results/mdp_pgd.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from flwr_privshare.mdp import map_distort
from flwr_privshare.models import build_model
from flwr_privshare.results import atomic_write_json, package_versions
from flwr_privshare.train import describe_device, get_device

from .images import benchmark_images

RESULTS = Path(__file__).resolve().parent / "results" / "mdp_pgd.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="", help="folder with CIFAR-10 test.parquet (default: random images)")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-sizes", default="64,256,512")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    data = benchmark_images(args.data_dir, args.images)
    device = get_device()
    torch.manual_seed(0)
    network = build_model("cifar-cnn")
    rates: dict[str, dict[str, float]] = {}
    for distance in ("mse", "linf"):
        rates[distance] = {}
        for batch_size in (int(size) for size in args.batch_sizes.split(",")):

            def run(size: int = batch_size, name: str = distance) -> None:
                map_distort(
                    data, network, copies=1, steps=args.steps, step_size=0.1, distance=name,
                    generator=torch.Generator().manual_seed(0), device=device, batch_size=size,
                )  # fmt: skip

            run()
            best = float("inf")
            for _ in range(args.repeats):
                started = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - started)
            rates[distance][str(batch_size)] = round(len(data) * args.steps / best, 1)
    result = {
        "image_steps_per_second": rates,
        "best_image_steps_per_second": max(rate for by_batch in rates.values() for rate in by_batch.values()),
        "device": describe_device(device),
        "threads": torch.get_num_threads(),
        "images": len(data),
        "steps": args.steps,
        "model": "cifar-cnn",
        "versions": package_versions(),
    }
    atomic_write_json(args.output, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
