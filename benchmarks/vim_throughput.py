"""Throughput of the vectorised VisualMixer against a per-image, per-window loop reference.

Both are timed in the same run on CIFAR-sized batches (real CIFAR-10 test images when a
data folder is given, uniform random uint8 otherwise). The full mixer includes the VFE of
every block, the window assignment (Algorithm 1) and the shuffle; the rate with the
achieved-VFE report (image VFE before and after, Eq. 4) is measured as well.

    python -m benchmarks.vim_throughput --data-dir ../shared/datasets/cifar10

writes ``benchmarks/results/vim_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from flwr_privshare.data import load_split
from flwr_privshare.results import atomic_write_json, package_versions
from flwr_privshare.train import describe_device, get_device
from flwr_privshare.visualmixer import visual_mix
from flwr_privshare.visualmixer.reference import reference_visual_mix

RESULTS = Path(__file__).resolve().parent / "results" / "vim_throughput.json"


def best_rate(images_per_call: int, call: object, repeats: int) -> float:
    """Images per second of the fastest of ``repeats`` calls (after one warm-up call)."""
    assert callable(call)
    call()
    fastest = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        call()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        fastest = min(fastest, time.perf_counter() - started)
    return images_per_call / fastest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="", help="folder with CIFAR-10 test.parquet (default: random images)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--reference-images", type=int, default=32)
    parser.add_argument("--window-min", type=int, default=2)
    parser.add_argument("--window-max", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    if args.data_dir:
        images = load_split("", "test", args.data_dir).images[: args.batch_size]
    else:
        images = torch.randint(0, 256, (args.batch_size, 3, 32, 32), dtype=torch.uint8, generator=generator)
    device = get_device()
    batch = images.to(device)
    device_generator = torch.Generator(device=device).manual_seed(0)

    def full_mixer() -> None:
        visual_mix(batch, args.window_min, args.window_max, generator=device_generator)

    def full_mixer_with_report() -> None:
        result = visual_mix(batch, args.window_min, args.window_max, generator=device_generator)
        (result.vfe_after / result.vfe_before).mean().item()

    def reference() -> None:
        for image in images[: args.reference_images]:
            reference_visual_mix(image, args.window_min, args.window_max, generator)

    rate = best_rate(len(batch), full_mixer, args.repeats)
    report_rate = best_rate(len(batch), full_mixer_with_report, args.repeats)
    reference_rate = best_rate(args.reference_images, reference, max(1, args.repeats // 2))
    result = {
        "images_per_second": round(rate, 1),
        "images_per_second_with_vfe_report": round(report_rate, 1),
        "reference_images_per_second": round(reference_rate, 1),
        "speedup": round(rate / reference_rate, 1),
        "device": describe_device(device),
        "batch_size": len(batch),
        "window_min": args.window_min,
        "window_max": args.window_max,
        "images": "cifar10 test" if args.data_dir else "random uint8",
        "versions": package_versions(),
    }
    print(f"{'implementation':<28}{'images/s':>12}")
    print(f"{'visual_mix (vectorised)':<28}{rate:>12,.0f}")
    print(f"{'  + achieved-VFE report':<28}{report_rate:>12,.0f}")
    print(f"{'per-window loop reference':<28}{reference_rate:>12,.0f}")
    print(f"speed-up {result['speedup']}x on {result['device']}, batch {len(batch)}")
    atomic_write_json(args.output, result)
    print(json.dumps({k: result[k] for k in ("images_per_second", "speedup")}))


if __name__ == "__main__":
    main()
