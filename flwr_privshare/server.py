"""ServerApp behaviour of the FedAvg experiments (plain, VisualMixer, DP-SGD, DP-FedAvg).

The server validates the run config and the data before creating anything, evaluates
the global model centrally after every round (on the VisualMixer-shuffled test set, the
deployed setting, and on the plain test set), records each round, and finishes the run
folder with ``summary.json``, the accuracy plot and the final model. With VisualMixer it
also reports the privacy side: the window bounds, the VFE gain on the test set and the
oracle recognition (a classifier trained on the plain public split, shown the shuffled
test images).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import torch
from flwr.app import ArrayRecord, Context, MetricRecord, MetricRecordValues, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from flwr_privshare.strategies import DPFedAvg, Recorded

from .attacks import oracle_recognition
from .config import ExperimentConfig, derive_seed, seeded
from .data import ImageDataset, load_split, split_public
from .models import build_model, model_name_for
from .results import RunFolder
from .train import evaluate, get_device
from .visualmixer import visual_mix


def default_run_name(config: ExperimentConfig) -> str:
    """``<protection>-<dataset>-s<seed>-<UTC time>``."""
    dataset = Path(config.data_dir).name if config.data_dir else config.dataset.split("/")[-1]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return f"{config.protection}-{dataset}-s{config.seed}-{stamp}"


def central_evaluation(
    model_name: str, num_classes: int, test_sets: dict[str, ImageDataset], primary: str
) -> Callable[[int, ArrayRecord], MetricRecord]:
    """An ``evaluate_fn`` for :meth:`Strategy.start`.

    It reports ``accuracy`` and ``loss`` on ``test_sets[primary]`` and ``<name>_accuracy``
    on every set.
    """
    device = get_device()
    model = build_model(model_name, num_classes)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        metrics: dict[str, MetricRecordValues] = {}
        for name, data in test_sets.items():
            loss, accuracy = evaluate(model, data, device=device)
            metrics[f"{name}_accuracy"] = accuracy
            if name == primary:
                metrics["accuracy"], metrics["loss"] = accuracy, loss
        return MetricRecord(metrics)

    return evaluate_fn


def aggregate_client_metrics(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """FedAvg's weighted mean of the client metrics, plus ``epsilon-max`` and ``epsilon-mean`` over clients.

    A weighted mean of per-client epsilons means nothing; the guarantee of a DP-SGD round
    is that of its worst client (``epsilon-max``).
    """
    metrics = aggregate_metricrecords(records, weighted_by_key)
    epsilons = [
        float(cast(float, record["epsilon"]))
        for content in records
        for record in content.metric_records.values()
        if "epsilon" in record
    ]
    if epsilons:
        metrics["epsilon-max"] = max(epsilons)
        metrics["epsilon-mean"] = sum(epsilons) / len(epsilons)
    return metrics


def build_strategy(config: ExperimentConfig, grid: Grid) -> Strategy:
    """FedAvg, or DPFedAvg around it for ``protection = "dp-fedavg"`` (validated before any round)."""
    fedavg = FedAvg(
        fraction_train=config.fraction_train,
        fraction_evaluate=0.0,
        min_train_nodes=1,
        min_available_nodes=1,
        train_metrics_aggr_fn=aggregate_client_metrics,
    )
    if config.protection != "dp-fedavg":
        return fedavg
    num_total = len(list(grid.get_node_ids()))
    num_sampled = max(int(num_total * config.fraction_train), 1)  # FedAvg's own sample size
    settings: dict[str, Any] = {
        "clipping_norm": config.clipping_norm,
        "num_sampled_clients": num_sampled,
        "num_total_clients": num_total,
        "delta": config.delta,
        "clipping": config.dp_clipping,
    }
    if config.dp_clipping.endswith("adaptive") and config.dp_clipped_count_stddev > 0:
        settings["clipped_count_stddev"] = config.dp_clipped_count_stddev
    if config.target_epsilon > 0:
        return DPFedAvg.with_target_epsilon(
            fedavg, target_epsilon=config.target_epsilon, num_rounds=config.num_server_rounds, **settings
        )
    return DPFedAvg(fedavg, noise_multiplier=config.noise_multiplier, **settings)


def visualmixer_test_sets(
    config: ExperimentConfig, test: ImageDataset
) -> tuple[dict[str, ImageDataset], dict[str, Any]]:
    """The shuffled and plain test sets (the server mixes with its own key) and the VFE report."""
    mixed = visual_mix(
        test.images,
        config.vim_window_min,
        config.vim_window_max,
        channel_shuffle=config.vim_channel_shuffle,
        generator=torch.Generator().manual_seed(derive_seed(config.seed, "visualmixer", "test")),
    )
    test_sets = {"mixed": ImageDataset(mixed.images, test.labels, test.num_classes), "plain": test}
    report = {
        "window_min": config.vim_window_min,
        "window_max": config.vim_window_max,
        "channel_shuffle": config.vim_channel_shuffle,
        "vfe_plain": float(mixed.vfe_before.mean()),
        "vfe_mixed": float(mixed.vfe_after.mean()),
        "vfe_gain": float((mixed.vfe_after / mixed.vfe_before.clamp_min(1e-12)).mean()),
    }
    return test_sets, report


def dp_sgd_report(config: ExperimentConfig, last_round: MetricRecord) -> dict[str, Any]:
    """The DP-SGD guarantee of the run: the worst client's cumulative epsilon."""
    return {
        "epsilon": last_round.get("epsilon-max"),
        "epsilon_mean": last_round.get("epsilon-mean"),
        "delta": config.delta,
        # With a target epsilon each client picks z for its own data size; this is their mean.
        "noise_multiplier": last_round.get("noise-multiplier", config.noise_multiplier),
        "target_epsilon": config.target_epsilon or None,
        "max_grad_norm": config.max_grad_norm,
        "accountant": f"opacus-{config.dp_accountant}",
        "sampling_assumption": "Poisson sampling of each client's examples (Opacus); epsilon is per client, "
        "cumulative over the rounds it took part in; the run reports the largest",
    }


def method_name(protection: str) -> str:
    """``fedavg``, ``fedavg+<protection>``, or ``dp-fedavg``."""
    if protection == "none":
        return "fedavg"
    return protection if protection == "dp-fedavg" else f"fedavg+{protection}"


def run_fedavg_experiment(grid: Grid, context: Context) -> Path:
    """Run the FedAvg experiment of ``context.run_config`` under its protection; return the run folder."""
    started = time.monotonic()
    config = ExperimentConfig.from_run_config(context.run_config)
    test = load_split(config.dataset, "test", config.data_dir).head(config.test_size)
    config.validate_image_shape(test.image_shape)
    train_split = load_split(config.dataset, "train", config.data_dir)
    public_rows, _ = split_public(len(train_split), config.public_size, config.seed)
    model_name = config.model if config.model != "auto" else model_name_for(test.image_shape)
    test_sets, vim_report = visualmixer_test_sets(config, test) if config.uses_visualmixer else ({"plain": test}, {})
    primary = "mixed" if config.uses_visualmixer else "plain"
    inner = build_strategy(config, grid)

    random.seed(derive_seed(config.seed, "client-sampling"))
    with seeded(derive_seed(config.seed, "model-init")):
        model = build_model(model_name, test.num_classes)

    folder = RunFolder(
        config.output_dir, config.run_name or default_run_name(config), config.to_run_config(), config.seed
    )
    try:
        strategy = Recorded(inner, folder)
        result = strategy.start(
            grid,
            ArrayRecord(model.state_dict()),
            num_rounds=config.num_server_rounds,
            evaluate_fn=central_evaluation(model_name, test.num_classes, test_sets, primary),
        )
        final = dict(result.evaluate_metrics_serverapp[config.num_server_rounds])
        model.load_state_dict(result.arrays.to_torch_state_dict())
        torch.save(model.state_dict(), folder.path / "model.pt")
        privacy: dict[str, Any] = {**vim_report}
        if config.uses_visualmixer and config.oracle_epochs > 0:
            oracle = oracle_recognition(
                train_split.subset(public_rows),
                test_sets,
                model_name=model_name,
                epochs=config.oracle_epochs,
                seed=derive_seed(config.seed, "oracle"),
                device=get_device(),
            )
            privacy["oracle_plain_accuracy"] = oracle["plain"]
            privacy["oracle_recognition"] = oracle["mixed"]
        if isinstance(inner, DPFedAvg):
            privacy["dp"] = {**inner.privacy_report(), "target_epsilon": config.target_epsilon or None}
        elif config.uses_dp_sgd:
            last_round = result.train_metrics_clientapp.get(config.num_server_rounds, MetricRecord())
            privacy["dp"] = dp_sgd_report(config, last_round)
        summary = {
            "method": method_name(config.protection),
            "protection": config.protection,
            "dataset": config.data_dir or config.dataset,
            "final_accuracy": final["accuracy"],
            "final_plain_accuracy": final["plain_accuracy"],
            "epsilon": privacy["dp"]["epsilon"] if "dp" in privacy else None,
            "delta": config.delta if "dp" in privacy else None,
            "num_rounds": config.num_server_rounds,
            "num_clients": len(list(grid.get_node_ids())),
            "client_failures": sum(strategy.failures.values()),
            "seed": config.seed,
            "wall_time_s": round(time.monotonic() - started, 2),
            "privacy": privacy,
        }
        plots = {"accuracy": ("round", [f"{name}_accuracy" for name in test_sets])}
        if "dp" in privacy:
            epsilon_column = "train_epsilon" if isinstance(inner, DPFedAvg) else "train_epsilon-max"
            plots["accuracy_vs_epsilon"] = (epsilon_column, ["accuracy"])
        return folder.finish(summary, plots)
    except BaseException:
        folder.abort()
        raise
