"""Entity collaboration through poisoned features, in the spirit of Table 5 of Guo et al. (arXiv 1912.06895).

Four entities hold 10% / 10% / 10% / 1% of the CIFAR-10 training rows (disjoint, none from
the public split). They share a featurizer phi1 (a CIFAR CNN trained on the public split,
cut at ``--hook``); each trains its own DPM against the straw-man reconstructor px2s2 and
can share ``P(phi1 x)`` with labels. The DPM loss's settings default to the ``dpm_cifar``
app's (lambda, feature noise, and its DPM epochs over all rounds); the app's further straw
men (``dpm-ensemble``) and self-check are not used here. For an entity, a fresh
decider phi2 is trained on

- its own features only;
- its own features plus the others' *poisoned* features;
- its own features plus the others' *unpoisoned* features (no privacy: the upper bound);

and scored on the original features of the CIFAR-10 test set. Also reported: the
equivalence of each DPM (the bootstrap decider's accuracy on the test set's original vs
poisoned features) and how well px2s2 reconstructs each entity's shared features.

    python -m benchmarks.dpm_entities --data-dir ../shared/datasets/cifar10

writes ``experiments/dpm_entities/dpm_entities.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from flwr_privshare.data import load_split, split_public
from flwr_privshare.models import build_model
from flwr_privshare.poisoning import (
    DeepPoisoningModule,
    Reconstructor,
    decider_accuracy,
    evaluate_poisoning,
    feature_shape,
    poisoned_features,
    split_model,
    train_decider,
    train_dpm,
    train_reconstructor,
)
from flwr_privshare.results import atomic_write_json, atomic_write_text, package_versions
from flwr_privshare.seeding import derive_seed
from flwr_privshare.train import describe_device, get_device, train

from .app_runs import app_defaults, command_line

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "dpm_entities"
ENTITIES = {"A": 0.10, "B": 0.10, "C": 0.10, "D": 0.01}
MODEL = "cifar-cnn"


def main() -> None:
    app = app_defaults("dpm_cifar")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="CIFAR-10 folder (train/test parquet)")
    parser.add_argument("--hook", default=app["dpm-hook"])
    parser.add_argument("--public-size", type=int, default=5000)
    parser.add_argument("--bootstrap-epochs", type=int, default=5)
    parser.add_argument("--reconstructor-epochs", type=int, default=5)
    parser.add_argument("--dpm-epochs", type=int, default=app["dpm-epochs"] * app["num-server-rounds"])
    parser.add_argument("--decider-epochs", type=int, default=10)
    parser.add_argument("--ssim-weight", type=float, default=app["dpm-lambda"])
    parser.add_argument("--feature-noise", type=float, default=app["dpm-feature-noise"])
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    started = time.monotonic()
    device = get_device()

    def generator(*labels: object) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(args.seed, *labels))

    train_split = load_split("", "train", str(args.data_dir))
    test = load_split("", "test", str(args.data_dir))
    public_rows, private_rows = split_public(len(train_split), args.public_size, args.seed)
    private_rows = private_rows[torch.randperm(len(private_rows), generator=generator("entities")).numpy()]
    entities, start = {}, 0
    for name, share in ENTITIES.items():
        count = round(share * len(train_split))
        entities[name] = train_split.subset(private_rows[start : start + count])
        start += count
    public = train_split.subset(public_rows)

    torch.manual_seed(derive_seed(args.seed, "model-init"))
    model = build_model(MODEL)
    train(
        model,
        public,
        epochs=args.bootstrap_epochs,
        batch_size=32,
        optimizer="sgd",
        learning_rate=0.05,
        device=device,
        generator=generator("bootstrap"),
    )
    split = split_model(model, args.hook)
    shape = feature_shape(split.featurizer, test.image_shape)
    straw_man = Reconstructor("px2s2", shape, test.image_shape)
    train_reconstructor(
        straw_man,
        split.featurizer,
        public,
        epochs=args.reconstructor_epochs,
        device=device,
        generator=generator("reconstructor"),
    )
    print(f"bootstrap and reconstructor ready after {time.monotonic() - started:.0f} s", flush=True)

    original, poisoned, equivalence = {}, {}, {}
    for name, data in entities.items():
        dpm = DeepPoisoningModule(shape[0])
        train_dpm(
            dpm,
            split,
            straw_man,
            data,
            ssim_weight=args.ssim_weight,
            feature_noise=args.feature_noise,
            epochs=args.dpm_epochs,
            device=device,
            generator=generator("dpm", name),
        )
        original[name] = poisoned_features(split.featurizer, None, data, device=device)
        poisoned[name] = poisoned_features(split.featurizer, dpm, data, device=device)
        report = evaluate_poisoning(split, dpm, {"px2s2": straw_man}, test, device=device)
        equivalence[name] = {key: report[key] for key in sorted(report)}
        print(f"entity {name}: {equivalence[name]}", flush=True)

    test_features = poisoned_features(split.featurizer, None, test, device=device)
    rows: list[dict[str, Any]] = []
    for name in ("D", "A"):
        others = [other for other in entities if other != name]
        settings = {
            "own data only": [original[name]],
            "own + others' poisoned features": [original[name], *(poisoned[o] for o in others)],
            "own + others' unpoisoned features": [original[name], *(original[o] for o in others)],
        }
        labels_own = entities[name].labels
        labels_all = torch.cat([labels_own, *(entities[o].labels for o in others)])
        for setting, parts in settings.items():
            torch.manual_seed(derive_seed(args.seed, "decider-init"))
            decider = split_model(build_model(MODEL), args.hook).decider
            labels = labels_own if len(parts) == 1 else labels_all
            train_decider(
                decider,
                torch.cat(parts),
                labels,
                epochs=args.decider_epochs,
                generator=generator("decider", name, setting),
                device=device,
            )
            accuracy = decider_accuracy(decider, test_features, test.labels)
            rows.append({"entity": name, "share": ENTITIES[name], "setting": setting, "accuracy": accuracy})
            print(rows[-1], flush=True)

    lines = [
        f"Produced by `{command_line('benchmarks.dpm_entities', vars(args))}` "
        f"({time.monotonic() - started:.0f} s on {describe_device(device)}).",
        "",
        f"Shared featurizer: {MODEL} trained {args.bootstrap_epochs} epochs on the {args.public_size}-image public "
        f"split, cut at {args.hook}; each DPM trained {args.dpm_epochs} epochs with lambda {args.ssim_weight:g} and "
        f"feature noise {args.feature_noise:g}; a fresh decider trained {args.decider_epochs} epochs per row; "
        "accuracy on the original features of the 10,000 test images.",
        "",
        "| entity (share of data) | own data only | own + others' poisoned features | own + others' unpoisoned |",
        "|---|---|---|---|",
    ]
    for name in ("D", "A"):
        cells = [f"{row['accuracy']:.1%}" for row in rows if row["entity"] == name]
        lines.append(f"| {name} ({ENTITIES[name]:.0%}) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each entity's DPM on the test set (bootstrap decider; px2s2 is the straw man it trained against):",
        "",
        "| entity | accuracy, original features | accuracy, poisoned | px2s2 SSIM, original | px2s2 SSIM, poisoned |",
        "|---|---|---|---|---|",
    ]
    for name, report in equivalence.items():
        lines.append(
            f"| {name} | {report['accuracy_original']:.1%} | {report['accuracy_poisoned']:.1%} "
            f"| {report['px2s2/ssim_original']:.3f} | {report['px2s2/ssim_poisoned']:.3f} |"
        )
    text = "\n".join([*lines, ""])
    atomic_write_json(
        RESULTS / "dpm_entities.json",
        {"rows": rows, "equivalence": equivalence, "arguments": {k: str(v) for k, v in vars(args).items()}}
        | {"versions": package_versions()},
    )
    atomic_write_text(RESULTS / "dpm_entities.md", text)
    print(text)


if __name__ == "__main__":
    main()
