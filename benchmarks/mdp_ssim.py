"""How far MDP's PGD moves an image, by distance and step size: SSIM(modified, selected) against how
close the features get to the target's.

The feature network ``f`` is the CIFAR GroupNorm CNN trained as the app trains its public feature
network (:func:`~flwr_privshare.attacks.oracle.train_oracle`, Adam, ``--pretrain-epochs``) on the
first ``--public`` training images; the next ``--images`` training images are distorted (MDP,
``T = 1``, one seeded pairing for every setting) with ``--steps`` PGD steps per setting. For each
setting: the mean SSIM between modified and selected image, the mean feature distance at the end
over the start, and how often ``f`` itself classifies the modified image as the target's class
(the distortion reached the target's features) or as the selected image's class.

    python -m benchmarks.mdp_ssim --data-dir ../shared/datasets/cifar10

writes ``benchmarks/results/mdp_ssim.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from flwr_privshare.attacks.oracle import train_oracle
from flwr_privshare.data import load_split
from flwr_privshare.mdp import map_distort
from flwr_privshare.mdp.distortion import DISTANCES
from flwr_privshare.results import atomic_write_json, package_versions
from flwr_privshare.train import describe_device, get_device

RESULTS = Path(__file__).resolve().parent / "results" / "mdp_ssim.json"
SETTINGS = "mse:0.1,mse:0.05,mse:0.02,mse:0.01,linf:0.01,linf:0.002"


def parse_settings(text: str) -> list[tuple[str, float]]:
    """``distance:step-size`` pairs, comma-separated; checked before ``f`` is trained."""
    settings = []
    for item in text.split(","):
        distance, _, size = item.partition(":")
        try:
            step_size = float(size)
        except ValueError:
            step_size = 0.0
        if distance not in DISTANCES or step_size <= 0:
            raise argparse.ArgumentTypeError(
                f"{item!r}: each setting is distance:step-size, distance one of {DISTANCES}, step size above 0"
            )
        settings.append((distance, step_size))
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with CIFAR-10 train.parquet")
    parser.add_argument("--public", type=int, default=5000, help="training images f learns from")
    parser.add_argument("--images", type=int, default=500, help="training images distorted per setting")
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--settings", type=parse_settings, default=parse_settings(SETTINGS), help=f"default {SETTINGS}")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    device = get_device()
    train = load_split("", "train", args.data_dir)
    public, client = train.head(args.public), train.subset(torch.arange(args.public, args.public + args.images))
    network = train_oracle(public, model_name="cifar-cnn", epochs=args.pretrain_epochs, seed=0, device=device)
    network.eval()
    rows = []
    for distance, step_size in args.settings:
        distortion = map_distort(
            client, network, copies=1, steps=args.steps, step_size=step_size, distance=distance,
            generator=torch.Generator().manual_seed(0), device=device,
        )  # fmt: skip
        with torch.no_grad():
            predicted = network(distortion.data.images.to(device).float().div(255.0)).argmax(dim=1).cpu()
        rows.append(
            {
                "distance": distance,
                "step_size": step_size,
                "ssim": round(float(distortion.ssim.mean()), 4),
                "distance_end_over_start": round(
                    float(distortion.end_distance.mean() / distortion.start_distance.mean()), 4
                ),
                "f_says_target": round(float((predicted == distortion.data.labels).double().mean()), 4),
                "f_says_selected": round(float((predicted == distortion.selected_labels).double().mean()), 4),
                "seconds_per_image": round(distortion.seconds / len(client), 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "settings": rows,
        "images": args.images,
        "steps": args.steps,
        "public": args.public,
        "pretrain_epochs": args.pretrain_epochs,
        "model": "cifar-cnn",
        "device": describe_device(device),
        "versions": package_versions(),
    }
    atomic_write_json(args.output, result)


if __name__ == "__main__":
    main()
