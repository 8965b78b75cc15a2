"""What the GAN attack adds to the attacker client's round, measured in one run.

An MNIST client of a 10-client federation (5,500 real training images, the app's batch 32,
SGD, one local epoch) receives a global model with the fake class and runs one round twice,
alternately: as an honest client (local training only) and as the attacker (the generator's
budget of ``--generator-steps`` steps against the received model, ``--fake-images`` samples,
then local training on its images plus the fakes). The best of ``--repeats`` rounds of each
is kept; the ratio is the attacker's round time over the honest one.

    python -m benchmarks.gan_cost --data-dir ../shared/datasets/mnist

writes ``benchmarks/results/gan_cost.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from flwr.app import Context, RecordDict

from flwr_privshare.attacks.gan import GanSection, with_generated_fakes
from flwr_privshare.config import AppSchema, CommonSection
from flwr_privshare.data import load_split
from flwr_privshare.models import build_model
from flwr_privshare.results import atomic_write_json, package_versions
from flwr_privshare.train import describe_device, get_device, train

RESULTS = Path(__file__).resolve().parent / "results" / "gan_cost.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="folder with MNIST train.parquet")
    parser.add_argument("--images", type=int, default=5500, help="the client's partition size")
    parser.add_argument("--generator-steps", type=int, default=GanSection.defaults()["gan-generator-steps"])
    parser.add_argument("--generator-batch", type=int, default=GanSection.defaults()["gan-batch-size"])
    parser.add_argument("--fake-images", type=int, default=GanSection.defaults()["gan-fake-images"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    data = load_split("", "train", args.data_dir).head(args.images)
    settings = {"data-dir": args.data_dir, "gan-attacker": 0, "gan-generator-steps": args.generator_steps}
    settings["gan-batch-size"] = args.generator_batch
    run = AppSchema((CommonSection, GanSection)).parse({**settings, "gan-fake-images": args.fake_images})
    common, device = run[CommonSection], get_device()
    torch.manual_seed(0)
    received = build_model("mnist-cnn", data.num_classes + 1).state_dict()
    loop = {"epochs": 1, "batch_size": 32, "optimizer": "sgd", "learning_rate": common.learning_rate}

    def honest_round() -> float:
        started = time.perf_counter()
        model = build_model("mnist-cnn", data.num_classes + 1)
        model.load_state_dict(received)
        train(model, data, generator=torch.Generator().manual_seed(0), device=device, **loop)  # type: ignore[arg-type]
        return time.perf_counter() - started

    def attacker_round(context: Context) -> float:
        started = time.perf_counter()
        model = build_model("mnist-cnn", data.num_classes + 1)
        model.load_state_dict(received)
        mixed = with_generated_fakes(run, model, data, context, seed=0, server_round=1, device=device)
        train(model, mixed, generator=torch.Generator().manual_seed(0), device=device, **loop)  # type: ignore[arg-type]
        return time.perf_counter() - started

    honest_round()  # warm-up
    honest, attacker = [], []
    for _ in range(args.repeats):
        honest.append(honest_round())
        attacker.append(attacker_round(Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})))
    result = {
        "honest_round_s": round(min(honest), 3),
        "attacker_round_s": round(min(attacker), 3),
        "ratio": round(min(attacker) / min(honest), 3),
        "client_images": len(data),
        "generator_steps": args.generator_steps,
        "generator_batch": run[GanSection].gan_batch_size,
        "fake_images": args.fake_images,
        "device": describe_device(device),
        "versions": package_versions(),
    }
    atomic_write_json(args.output, result)
    print(result)


if __name__ == "__main__":
    main()
