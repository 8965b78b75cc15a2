"""The ServerApp behaviour of ``simulations/dpm_cifar``: bootstrap, feature sharing, then the audit.

1. Bootstrap Phi on the public split ("server") or with plain FedAvg rounds ("fedavg").
2. Train every reconstructor of :data:`~flwr_privshare.poisoning.RECONSTRUCTORS` on the
   public split (L1 on ``(phi1 z, z)``): ``dpm-reconstructor`` is the straw man the clients'
   DPMs train against, the rest are unseen attackers. With ``dpm-check-reconstructor``,
   also the clients' check reconstructor (outside the audited family).
3. :class:`~flwr_privshare.strategies.FeatureSharing` rounds: clients share poisoned
   features (after their self-check, if any), the server refines phi2; test accuracy is
   recorded every round.
4. Audit on the test set. The clients' DPMs never leave them, so the experimenter trains a
   stand-in DPM with the clients' own procedure (:func:`train_dpm`, same settings, as many
   epochs as a client that took part in every round, the same self-check) on partition 0's
   data, and measures with it: phi2's accuracy on original vs poisoned features (and on the features of the
   same P trained with lambda = 0, the control that isolates what poisoning costs), L1 / SSIM of every
   reconstructor from original vs poisoned features, sample reconstructions, and the
   secondary attack of someone who holds the DPM and trains a reconstructor on
   ``(P(phi1 z), z)``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from logging import INFO
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, Context
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import nn

from flwr_privshare.strategies import FeatureSharing, Recorded

from .clients import client_partition
from .config import ConfigError, ExperimentConfig, derive_seed, seeded
from .data import ImageDataset, load_split, split_public
from .models import ImageClassifier, build_model, model_name_for
from .poisoning import (
    RECONSTRUCTORS,
    CheckedDPM,
    DeepPoisoningModule,
    DPMTrainingResult,
    Reconstructor,
    SelfCheck,
    SplitModel,
    evaluate_poisoning,
    feature_shape,
    reference_ssim,
    split_model,
    train_checked_dpm,
    train_dpm,
    train_reconstructor,
)
from .poisoning.plots import audit_bars, reconstruction_grid
from .results import RunFolder
from .server import central_evaluation, default_run_name
from .train import evaluate, get_device, train

SAMPLE_IMAGES = 8


def bootstrap_on_public(config: ExperimentConfig, model: ImageClassifier, public: ImageDataset) -> None:
    """Train Phi on the public split (``dpm-bootstrap = "server"``)."""
    train(
        model,
        public,
        epochs=config.dpm_bootstrap_epochs,
        batch_size=config.batch_size,
        optimizer=config.optimizer,
        learning_rate=config.learning_rate,
        device=get_device(),
        generator=torch.Generator().manual_seed(derive_seed(config.seed, "bootstrap")),
    )


def bootstrap(config: ExperimentConfig, model: ImageClassifier, public: ImageDataset, grid: Grid) -> None:
    """Train Phi before feature sharing: on the public split, or with plain FedAvg rounds on the clients."""
    if config.dpm_bootstrap == "server":
        bootstrap_on_public(config, model, public)
        return
    fedavg = FedAvg(
        fraction_train=config.fraction_train, fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=1
    )
    result = fedavg.start(grid, ArrayRecord(model.state_dict()), num_rounds=config.dpm_bootstrap_epochs)
    model.load_state_dict(result.arrays.to_torch_state_dict())


def train_reconstructors(
    config: ExperimentConfig, split: SplitModel, public: ImageDataset, shape: tuple[int, int, int]
) -> dict[str, Reconstructor]:
    """Every reconstructor, trained with L1 on the public split only."""
    return {name: train_public_reconstructor(config, name, split, public, shape) for name in RECONSTRUCTORS}


def train_public_reconstructor(
    config: ExperimentConfig,
    name: str,
    split: SplitModel,
    public: ImageDataset,
    shape: tuple[int, int, int],
    instance: int = 0,
) -> Reconstructor:
    """Reconstructor ``name``, trained with L1 on the public split, from seeds of its own.

    ``instance`` > 0 gives further instances of the same architecture, each from other seeds.
    """
    stream = (name,) if instance == 0 else (name, instance)
    with seeded(derive_seed(config.seed, "reconstructor-init", *stream)):
        reconstructor = Reconstructor(name, shape, public.image_shape)
    l1 = train_reconstructor(
        reconstructor,
        split.featurizer,
        public,
        epochs=config.reconstructor_epochs,
        device=get_device(),
        generator=torch.Generator().manual_seed(derive_seed(config.seed, "reconstructor", *stream)),
    )
    log(INFO, "reconstructor %s (instance %d) trained on the public split: L1 %.4f", name, instance, l1)
    return reconstructor


def ensemble_for(
    config: ExperimentConfig, split: SplitModel, public: ImageDataset, shape: tuple[int, int, int]
) -> list[Reconstructor]:
    """The further straw men of ``config.dpm_ensemble``, trained on the public split (none by default).

    ``config.dpm_ensemble_instances`` instances of each architecture, architecture by architecture.
    """
    return [
        train_public_reconstructor(config, name, split, public, shape, instance)
        for name in config.ensemble_names
        for instance in range(config.dpm_ensemble_instances)
    ]


def self_check_for(
    config: ExperimentConfig, split: SplitModel, public: ImageDataset, shape: tuple[int, int, int]
) -> SelfCheck | None:
    """The clients' self-check of ``config`` with its checker trained on the public split, or None when off."""
    if not config.dpm_check_reconstructor:
        return None
    checker = train_public_reconstructor(config, config.dpm_check_reconstructor, split, public, shape)
    return SelfCheck(checker, config.dpm_check_threshold, config.dpm_check_draws)


def train_stand_in_dpm(
    config: ExperimentConfig,
    split: SplitModel,
    straw_man: Reconstructor,
    data: ImageDataset,
    *,
    ssim_weight: float,
    ensemble: Sequence[Reconstructor] = (),
    self_check: SelfCheck | None = None,
    stream: tuple[object, ...] = (),
    rounds: int | None = None,
) -> CheckedDPM:
    """A DPM trained like a client's, on ``data``, for as many epochs as a client that took part in ``rounds``
    rounds (default: every round of ``config``), its warm-up included.

    It trains against ``straw_man`` and the clients' ``ensemble``. With ``self_check``, a draw
    that fails the check is replaced by a fresh one, as a client does. ``stream`` extends the
    seed labels, for several stand-ins from one run seed (the audit uses none).
    """
    shape = feature_shape(split.featurizer, data.image_shape)

    def train_draw(draw: int) -> tuple[DeepPoisoningModule, DPMTrainingResult]:
        labels = (*stream, "redraw", draw) if draw else stream
        with seeded(derive_seed(config.seed, "audit-dpm-init", *labels)):
            dpm = DeepPoisoningModule(shape[0])
        training = train_dpm(
            dpm,
            split,
            straw_man,
            data,
            ssim_weight=ssim_weight,
            feature_noise=config.dpm_feature_noise,
            ensemble=ensemble,
            epochs=config.dpm_warmup_epochs + config.dpm_epochs * (rounds or config.num_server_rounds),
            batch_size=config.batch_size,
            learning_rate=config.dpm_learning_rate,
            device=get_device(),
            generator=torch.Generator().manual_seed(derive_seed(config.seed, "audit-dpm", *labels)),
        )
        return dpm, training

    return train_checked_dpm(train_draw, split, self_check, data, device=get_device())


def audit(
    config: ExperimentConfig,
    split: SplitModel,
    reconstructors: dict[str, Reconstructor],
    stand_in_data: ImageDataset,
    public: ImageDataset,
    test: ImageDataset,
    self_check: SelfCheck | None = None,
    ensemble: Sequence[Reconstructor] = (),
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The stand-in DPM's report on the test set, and the images of the sample figure.

    The stand-in trains against the clients' straw men (``ensemble`` included) and passes
    their ``self_check`` as a client's DPM must before it shares. With more than one round, a
    second stand-in trained for one round only (``first_round/*``) measures the DPM a client
    shares its round-1 features with.
    """
    device = get_device()
    shape = feature_shape(split.featurizer, test.image_shape)
    straw_man = reconstructors[config.dpm_reconstructor]

    def clients_procedure(rounds: int | None = None) -> CheckedDPM:
        """A stand-in trained with the clients' loss, straw men and self-check."""
        return train_stand_in_dpm(
            config,
            split,
            straw_man,
            stand_in_data,
            ssim_weight=config.dpm_lambda,
            ensemble=ensemble,
            self_check=self_check,
            rounds=rounds,
        )

    stand_in = clients_procedure()
    dpm = stand_in.dpm
    # Control for the equivalence check: the same P trained on the same data with lambda = 0
    # separates what poisoning costs from what fine-tuning P on the client's data gains.
    control = train_stand_in_dpm(config, split, straw_man, stand_in_data, ssim_weight=0.0).dpm
    # Secondary attack: whoever holds P trains a reconstructor on (P(phi1 z), z) for public z.
    with seeded(derive_seed(config.seed, "secondary-attack-init")):
        with_dpm = Reconstructor(config.dpm_reconstructor, shape, test.image_shape)
    train_reconstructor(
        with_dpm,
        nn.Sequential(split.featurizer, dpm),
        public,
        epochs=config.reconstructor_epochs,
        device=device,
        generator=torch.Generator().manual_seed(derive_seed(config.seed, "secondary-attack")),
    )
    report = evaluate_poisoning(split, dpm, reconstructors, test, device=device)
    secondary = evaluate_poisoning(split, dpm, {"with-dpm": with_dpm}, test, device=device)
    report["secondary/l1_with_dpm"] = secondary["with-dpm/l1_poisoned"]
    report["secondary/ssim_with_dpm"] = secondary["with-dpm/ssim_poisoned"]
    report["secondary/ssim_without_dpm"] = report[f"{config.dpm_reconstructor}/ssim_poisoned"]
    report["stand_in_training_ssim"] = stand_in.training.ssim
    report["stand_in_draws"] = stand_in.draws
    if self_check is not None:
        report["stand_in_check_ssim"] = stand_in.check_ssim
        report["stand_in_check_passed"] = float(stand_in.passed)
    report["accuracy_lambda_zero"] = evaluate_poisoning(split, control, {}, test, device=device)["accuracy_poisoned"]
    if config.num_server_rounds > 1:
        # What a client shares in round 1 comes from a DPM trained for one round only.
        first = clients_procedure(rounds=1)
        early = evaluate_poisoning(split, first.dpm, reconstructors, test, device=device)
        report["first_round/accuracy_poisoned"] = early["accuracy_poisoned"]
        report |= {f"first_round/{name}/ssim_poisoned": early[f"{name}/ssim_poisoned"] for name in reconstructors}
        report["first_round/draws"] = first.draws
        if self_check is not None:
            report["first_round/check_ssim"] = first.check_ssim
            report["first_round/check_passed"] = float(first.passed)
    report |= {f"reference/ssim_{key}": value for key, value in reference_ssim(test, device=device).items()}

    unseen = [name for name in reconstructors if name != config.dpm_reconstructor]
    worst_unseen = max(unseen, key=lambda name: abs(report[f"{name}/ssim_poisoned"]))
    with torch.no_grad():
        for module in (*split, dpm, *reconstructors.values(), with_dpm):
            module.to(device).eval()
        images = test.images[:SAMPLE_IMAGES].to(device).float() / 255
        features = split.featurizer(images)
        poisoned = dpm(features)
        samples = {
            "original": images,
            f"{straw_man.name}, original features": straw_man(features),
            f"{straw_man.name}, poisoned features": straw_man(poisoned),
            f"{worst_unseen} (worst unseen), poisoned": reconstructors[worst_unseen](poisoned),
            "secondary attack (with P)": with_dpm(poisoned),
        }
    return report, samples


def run_dpm_experiment(grid: Grid, context: Context) -> Path:
    """Run the DPM feature-sharing experiment of ``context.run_config``; return the run folder."""
    started = time.monotonic()
    config = ExperimentConfig.from_run_config(context.run_config)
    if config.protection != "none":
        raise ConfigError(
            f"run-config key 'protection' is {config.protection!r}; the DPM app needs 'none' "
            "(the DPM is its protection; bootstrap rounds train on plain images)"
        )
    test = load_split(config.dataset, "test", config.data_dir).head(config.test_size)
    train_split = load_split(config.dataset, "train", config.data_dir)
    model_name = config.model if config.model != "auto" else model_name_for(test.image_shape)
    config.validate_dpm_hook(model_name)
    public_rows, _ = split_public(len(train_split), config.public_size, config.seed)
    if len(public_rows) == 0:
        raise ConfigError(
            "run-config key 'public-size' is 0; the DPM app trains its reconstructors on the public split"
        )
    public = train_split.subset(public_rows)
    with seeded(derive_seed(config.seed, "model-init")):
        model = build_model(model_name, test.num_classes)
    num_clients = len(list(grid.get_node_ids()))
    folder = RunFolder(
        config.output_dir, config.run_name or default_run_name(config), config.to_run_config(), config.seed
    )
    try:
        bootstrap(config, model, public, grid)
        _, bootstrap_accuracy = evaluate(model, test, device=get_device())
        log(INFO, "bootstrap (%s): test accuracy %.4f", config.dpm_bootstrap, bootstrap_accuracy)
        split = split_model(model, config.dpm_hook)
        shape = feature_shape(split.featurizer, test.image_shape)
        reconstructors = train_reconstructors(config, split, public, shape)
        ensemble = ensemble_for(config, split, public, shape)
        self_check = self_check_for(config, split, public, shape)
        strategy = FeatureSharing(
            model_name,
            config.dpm_hook,
            reconstructors[config.dpm_reconstructor],
            image_shape=test.image_shape,
            num_classes=test.num_classes,
            ssim_weight=config.dpm_lambda,
            feature_noise=config.dpm_feature_noise,
            dpm_epochs=config.dpm_epochs,
            warmup_epochs=config.dpm_warmup_epochs,
            shared_samples=config.dpm_shared_samples,
            ensemble=ensemble,
            self_check=self_check,
            refine_epochs=config.refine_epochs,
            fraction_train=config.fraction_train,
            seed=derive_seed(config.seed, "refine"),
        )
        recorded = Recorded(strategy, folder)
        result = recorded.start(
            grid,
            ArrayRecord(model.state_dict()),
            num_rounds=config.num_server_rounds,
            evaluate_fn=central_evaluation(model_name, test.num_classes, {"plain": test}, "plain"),
        )
        model.load_state_dict(result.arrays.to_torch_state_dict())
        torch.save(model.state_dict(), folder.path / "model.pt")
        final = dict(result.evaluate_metrics_serverapp[config.num_server_rounds])
        stand_in = client_partition(config, 0, num_clients)
        log(INFO, "audit: training the stand-in DPM and the secondary attack")
        report, samples = audit(config, split, reconstructors, stand_in, public, test, self_check, ensemble)
        log(INFO, "audit: %s", {key: round(value, 4) for key, value in report.items()})
        folder.save_figure("reconstructions", reconstruction_grid(samples))
        folder.save_figure("audit", audit_bars(report, list(RECONSTRUCTORS)))
        summary = {
            "method": "feature-sharing+dpm",
            "protection": "dpm",
            "dataset": config.data_dir or config.dataset,
            "model": model_name,
            "hook": config.dpm_hook,
            "feature_shape": list(shape),
            "bootstrap": config.dpm_bootstrap,
            "bootstrap_accuracy": bootstrap_accuracy,
            "final_accuracy": final["accuracy"],
            "num_rounds": config.num_server_rounds,
            "num_clients": num_clients,
            "client_failures": sum(recorded.failures.values()),
            "rejected_replies": sum(strategy.rejected.values()),
            "withheld_replies": sum(strategy.withheld.values()),  # also counted in client_failures
            "seed": config.seed,
            "wall_time_s": round(time.monotonic() - started, 2),
            "privacy": {
                "straw_man": config.dpm_reconstructor,
                "ensemble": config.ensemble_names,
                "ensemble_instances": config.dpm_ensemble_instances,
                "self_check": (
                    {
                        "checker": config.dpm_check_reconstructor,
                        "threshold": config.dpm_check_threshold,
                        "draws": config.dpm_check_draws,
                    }
                    if self_check
                    else None
                ),
                "unseen_reconstructors": [name for name in RECONSTRUCTORS if name != config.dpm_reconstructor],
                "audit": "stand-in DPM trained with the clients' procedure on partition 0, measured on the test set",
                **report,
            },
        }
        return folder.finish(summary, {"accuracy": ("round", ["accuracy"])})
    except BaseException:
        folder.abort()
        raise
