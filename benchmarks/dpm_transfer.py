"""Does a DPM's poisoning transfer to reconstructors it never saw? Measured over several clients' DPMs.

The app's audit (``simulations/dpm_cifar``) trains one stand-in DPM, so its unseen-reconstructor
SSIM is one draw from a distribution that depends on the DPM's initialisation and data. This
benchmark measures that distribution with the app's own settings (read from its
``pyproject.toml``) and its own code:

1. Phi (cifar-cnn) trained on the public split and every reconstructor of
   :data:`~flwr_privshare.poisoning.RECONSTRUCTORS` trained on it, exactly as the app does;
2. for each ``--settings`` entry ``lambda:sigma`` (SSIM weight, feature noise) and each of
   ``--clients`` IID partitions, a DPM trained like a client's
   (:func:`~flwr_privshare.dpm_experiment.train_stand_in_dpm`) against the straw man px2s2
   and the app's further straw men (``dpm-ensemble``), redrawn when it fails the clients'
   self-check with the app's check reconstructor
   (``--no-self-check``: the paper's protocol, no check), plus one trained with lambda = 0
   per client as the equivalence control;
3. on the first ``--test-size`` test images: the bootstrap decider's accuracy on original vs
   poisoned features, and every reconstructor's SSIM from original vs poisoned features, with
   its output min-max normalised as trained and, for a stronger attacker, stretched between
   its 5% and 95% quantiles (:func:`~flwr_privshare.poisoning.evaluate_poisoning`).

The decider is the bootstrap one (what a client trains its DPM against in round 1), not the
app's refined one.

    python -m benchmarks.dpm_transfer --data-dir ../shared/datasets/cifar10

writes ``experiments/dpm_transfer/dpm_transfer.md`` and ``.json`` (``dpm_transfer_no_check.*`` with
``--no-self-check``; ``--stem`` names them). ``--set key=value`` overrides an app default
(TOML value, as in ``flwr run --run-config``), e.g. ``--set 'dpm-ensemble=""'`` for the
paper's single straw man.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import tomllib
from pathlib import Path
from typing import Any

from flwr_privshare.apps import DPMExperiment
from flwr_privshare.config import CommonSection, ConfigError, RunConfig
from flwr_privshare.data import client_partition, load_split, public_split
from flwr_privshare.models import build_model
from flwr_privshare.poisoning import RECONSTRUCTORS, evaluate_poisoning, feature_shape, reference_ssim, split_model
from flwr_privshare.poisoning.procedures import (
    bootstrap_on_public,
    ensemble_for,
    self_check_for,
    train_reconstructors,
    train_stand_in_dpm,
)
from flwr_privshare.poisoning.section import DPMSection
from flwr_privshare.results import atomic_write_json, atomic_write_text, package_versions
from flwr_privshare.seeding import derive_seed, seeded
from flwr_privshare.train import describe_device, get_device

from .app_runs import app_defaults, command_line

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "dpm_transfer"
APP = "dpm_cifar"


def app_config(data_dir: Path, test_size: int, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The ``dpm_cifar`` app's default run config, on the local data folder, with ``overrides``."""
    return DPMExperiment().schema.parse(
        {**app_defaults(APP), "data-dir": str(data_dir), "test-size": test_size, **(overrides or {})}
    )


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` with a TOML value -> (key, value), as ``flwr run --run-config`` reads it."""
    key, separator, value = text.partition("=")
    try:
        if not separator:
            raise ValueError
        return key.strip(), tomllib.loads(f"value = {value}")["value"]
    except (ValueError, tomllib.TOMLDecodeError):
        raise argparse.ArgumentTypeError(
            f"--set reads key=value with a TOML value, e.g. 'dpm-lambda=20'; got {text!r}"
        ) from None


def parse_setting(text: str) -> tuple[float, float]:
    """``"lambda:sigma"`` -> (SSIM weight, feature noise), both >= 0."""
    try:
        weight, noise = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a setting reads lambda:sigma, e.g. 5:0.3; got {text!r}") from None
    if weight < 0 or noise < 0:
        raise argparse.ArgumentTypeError(f"lambda and sigma must be >= 0, got {text!r}")
    return weight, noise


def summarise(reports: list[dict[str, float]], controls: list[float]) -> dict[str, Any]:
    """Mean and worst (largest |SSIM|) over clients, per reconstructor, the mean accuracies and the self-check."""
    summary: dict[str, Any] = {
        "accuracy_original": statistics.mean(r["accuracy_original"] for r in reports),
        "accuracy_poisoned": statistics.mean(r["accuracy_poisoned"] for r in reports),
        "accuracy_lambda_zero": statistics.mean(controls),
        "draws": [int(r["draws"]) for r in reports],
        "check_ssim": [None if math.isnan(r["check_ssim"]) else r["check_ssim"] for r in reports],
        "check_passed": [bool(r["check_passed"]) for r in reports],
    }
    for name in RECONSTRUCTORS:
        summary[name] = {}
        for kind in ("", "_stretched"):
            poisoned = [r[f"{name}/ssim_poisoned{kind}"] for r in reports]
            summary[name] |= {
                f"ssim_original{kind}": reports[0][f"{name}/ssim_original{kind}"],
                f"ssim_poisoned{kind}_mean": statistics.mean(poisoned),
                f"ssim_poisoned{kind}_worst": max(poisoned, key=abs),
                f"ssim_poisoned{kind}": poisoned,
            }
    return summary


def markdown(results: dict[str, dict[str, Any]], header: str) -> str:
    """One table per setting: reconstructors as rows, mean and worst SSIM over clients as columns."""
    lines = [header]
    for setting, summary in results.items():
        lines += [
            "",
            f"### {setting}",
            "",
            f"Decider accuracy (mean over clients): original features {summary['accuracy_original']:.1%}, "
            f"poisoned {summary['accuracy_poisoned']:.1%}, lambda-0 control {summary['accuracy_lambda_zero']:.1%}.",
            "",
        ]
        if None not in summary["check_ssim"]:
            lines += [
                f"Self-check: DPM draws per client {', '.join(map(str, summary['draws']))}; check SSIM "
                f"{', '.join(f'{value:.3f}' for value in summary['check_ssim'])}; "
                f"passed {sum(summary['check_passed'])} of {len(summary['check_passed'])}.",
                "",
            ]
        lines += [
            "| reconstructor | SSIM from original features | SSIM from poisoned, mean | worst client | per client "
            "| stretched: original | stretched: poisoned, mean | worst client |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name in RECONSTRUCTORS:
            row = summary[name]
            role = " (straw man)" if name == "px2s2" else ""
            per_client = ", ".join(f"{value:.3f}" for value in row["ssim_poisoned"])
            lines.append(
                f"| {name}{role} | {row['ssim_original']:.3f} | {row['ssim_poisoned_mean']:.3f} "
                f"| {row['ssim_poisoned_worst']:.3f} | {per_client} | {row['ssim_original_stretched']:.3f} "
                f"| {row['ssim_poisoned_stretched_mean']:.3f} | {row['ssim_poisoned_stretched_worst']:.3f} |"
            )
    return "\n".join([*lines, ""])


def describe_self_check(dpm: DPMSection) -> str:
    """The self-check settings in words, for the results' header."""
    if not dpm.dpm_check_reconstructor:
        return "off"
    return (
        f"with {dpm.dpm_check_reconstructor} (|SSIM| <= {dpm.dpm_check_threshold:g} on the client's images, "
        f"up to {dpm.dpm_check_draws} draws)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="CIFAR-10 folder (train/test parquet)")
    parser.add_argument(
        "--settings",
        type=parse_setting,
        nargs="+",
        default=[(1.0, 0.0), (5.0, 0.3)],
        help="lambda:sigma pairs (default: the paper's 1:0 and the app's 5:0.3)",
    )
    parser.add_argument("--clients", type=int, default=4, help="IID partitions (of the app's 10) to train DPMs on")
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument(
        "--no-self-check", action="store_true", help="train DPMs without the clients' self-check (the paper's protocol)"
    )
    parser.add_argument(
        "--set",
        type=parse_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one of the app's run-config defaults (repeatable)",
    )
    parser.add_argument("--stem", default="", help="result file name (default: dpm_transfer[_no_check])")
    args = parser.parse_args()
    if not 1 <= args.clients <= 10:
        parser.error(f"--clients must be in 1..10 (the app has 10 partitions), got {args.clients}")
    started = time.monotonic()
    device = get_device()
    overrides = dict(args.set) | ({"dpm-check-reconstructor": ""} if args.no_self_check else {})
    try:
        config = app_config(args.data_dir, args.test_size, overrides)
    except ConfigError as error:
        parser.error(str(error))
    common, dpm = config[CommonSection], config[DPMSection]

    test = load_split(common.dataset, "test", common.data_dir).head(common.test_size)
    public = public_split(common)
    with seeded(derive_seed(common.seed, "model-init")):
        model = build_model("cifar-cnn", test.num_classes)
    bootstrap_on_public(config, model, public)
    split = split_model(model, dpm.dpm_hook)
    reconstructors = train_reconstructors(config, split, public, feature_shape(split.featurizer, test.image_shape))
    straw_man = reconstructors[dpm.dpm_reconstructor]
    ensemble = ensemble_for(config, split, public, feature_shape(split.featurizer, test.image_shape))
    self_check = self_check_for(config, split, public, feature_shape(split.featurizer, test.image_shape))
    print(f"Phi and reconstructors ready after {time.monotonic() - started:.0f} s", flush=True)

    partitions = [client_partition(common, client, 10) for client in range(args.clients)]
    controls = []
    for client, data in enumerate(partitions):
        control = train_stand_in_dpm(config, split, straw_man, data, ssim_weight=0.0, stream=("client", client)).dpm
        controls.append(evaluate_poisoning(split, control, {}, test, device=device)["accuracy_poisoned"])
    results: dict[str, dict[str, Any]] = {}
    for weight, noise in args.settings:
        setting = f"lambda {weight:g}, feature noise {noise:g}"
        setting_config = app_config(
            args.data_dir, args.test_size, overrides | {"dpm-lambda": weight, "dpm-feature-noise": noise}
        )
        reports = []
        for client, data in enumerate(partitions):
            checked = train_stand_in_dpm(
                setting_config,
                split,
                straw_man,
                data,
                ssim_weight=weight,
                ensemble=ensemble,
                self_check=self_check,
                stream=("client", client),
            )
            report = evaluate_poisoning(split, checked.dpm, reconstructors, test, device=device)
            report |= {"draws": checked.draws, "check_ssim": checked.check_ssim, "check_passed": checked.passed}
            reports.append(report)
            print(setting, client, {k: round(v, 3) for k, v in reports[-1].items() if "ssim" in k}, flush=True)
        results[setting] = summarise(reports, controls)

    references = reference_ssim(test, device=device)
    epochs = dpm.dpm_warmup_epochs + dpm.dpm_epochs * common.num_server_rounds
    header = (
        f"Produced by `{command_line('benchmarks.dpm_transfer', vars(args) | {'settings': None, 'set': None})}"
        + "".join(f" --set '{key}={json.dumps(value)}'" for key, value in args.set)
        + " --settings "
        + " ".join(f"{w:g}:{n:g}" for w, n in args.settings)
        + f"` ({time.monotonic() - started:.0f} s on {describe_device(device)}). The `{APP}` app's defaults otherwise: "
        f"cifar-cnn cut at {dpm.dpm_hook}, {epochs} DPM epochs per client "
        f"({len(partitions[0])} images), straw man {dpm.dpm_reconstructor}, "
        f"further straw men {dpm.ensemble_names or 'none'} "
        f"({dpm.dpm_ensemble_instances} instance(s) each), seed {common.seed}; "
        f"self-check {describe_self_check(dpm)}; SSIM on the first {len(test)} test images. "
        f"For reference, an unrelated test image scores "
        f"{references['other_image']:.3f} (chance) and a flat image of each image's mean colour "
        f"{references['mean_colour']:.3f}."
    )
    text = markdown(results, header)
    stem = args.stem or ("dpm_transfer_no_check" if args.no_self_check else "dpm_transfer")
    atomic_write_json(
        RESULTS / f"{stem}.json",
        {
            "results": results,
            "reference_ssim": references,
            "arguments": {k: str(v) for k, v in vars(args).items()},
            "config": config.to_run_config(),
            "versions": package_versions(),
        },
    )
    atomic_write_text(RESULTS / f"{stem}.md", text)
    print(text)


if __name__ == "__main__":
    main()
