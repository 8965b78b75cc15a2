"""The DPM feature-sharing experiment: bootstrap, feature-sharing rounds, then the reconstruction audit.

1. Bootstrap Phi on the public split (``dpm-bootstrap = "server"``) or with plain FedAvg
   rounds on the clients (``"fedavg"``).
2. Train every reconstructor of :data:`~flwr_privshare.poisoning.RECONSTRUCTORS` on the
   public split: ``dpm-reconstructor`` is the straw man the clients' DPMs train against, the
   rest are unseen attackers; with ``dpm-check-reconstructor`` also the clients' check
   reconstructor, and the further straw men of ``dpm-ensemble``.
3. :class:`~flwr_privshare.strategies.FeatureSharing` rounds: clients share poisoned
   features, the server refines the decider phi2; test accuracy is recorded every round.
4. The post-run attack ``dpm-audit`` (:mod:`~flwr_privshare.attacks.reconstruction_audit`).
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO
from typing import Any, cast

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result, Strategy

from ..config import CommonSection, ConfigError, RunConfig, RunConfigValue
from ..data import ImageDataset, load_split, public_split
from ..models import ImageClassifier, build_model
from ..poisoning import RECONSTRUCTORS, feature_shape, split_model
from ..poisoning.procedures import bootstrap_on_public, ensemble_for, self_check_for, train_reconstructors
from ..poisoning.section import DPMSection
from ..protocol import CONFIG_KEY, FEATURE_SHARING_TASK, TASK_KEY
from ..seeding import derive_seed, seeded
from ..train import evaluate, get_device
from .experiment import Experiment, Plan
from .feature_sharing_client import share_poisoned_features
from .fedavg import train_locally


class ContentOrderedFedAvg(FedAvg):
    """FedAvg that aggregates the replies in content order, so that the bootstrap is reproducible from the seed."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        from ..strategies import in_content_order

        return super().aggregate_train(server_round, in_content_order(replies))


def bootstrap(run: RunConfig, model: ImageClassifier, public: ImageDataset, grid: Grid) -> None:
    """Train Phi before feature sharing: on the public split, or with plain FedAvg rounds on the clients."""
    if run[DPMSection].dpm_bootstrap == "server":
        bootstrap_on_public(run, model, public)
        return
    fedavg = ContentOrderedFedAvg(
        fraction_train=run[CommonSection].fraction_train,
        fraction_evaluate=0.0,
        min_train_nodes=1,
        min_available_nodes=1,
    )
    result = fedavg.start(grid, ArrayRecord(model.state_dict()), num_rounds=run[DPMSection].dpm_bootstrap_epochs)
    if result.arrays:  # an empty record: no bootstrap round aggregated anything, Phi stays as it was
        model.load_state_dict(result.arrays.to_torch_state_dict())


class DPMExperiment(Experiment):
    """Feature sharing with Deep Poisoning Modules (Guo et al., arXiv 1912.06895, §4)."""

    def __init__(self, defaults: dict[str, RunConfigValue] | None = None) -> None:
        super().__init__(DPMSection, defaults=defaults, attacks=("dpm-audit",))

    def prepare(self, run: RunConfig, grid: Grid) -> Plan:
        common = run[CommonSection]
        test = load_split(common.dataset, "test", common.data_dir).head(common.test_size)
        model_name = common.model_for(test.image_shape)
        run[DPMSection].validate_hook(model_name)
        if common.public_size == 0:
            raise ConfigError(
                "run-config key 'public-size' is 0; it must be positive: the DPM app trains its reconstructors "
                "on the public split"
            )
        public = public_split(common)
        with seeded(derive_seed(common.seed, "model-init")):
            model = build_model(model_name, test.num_classes)
        return Plan("dpm", model_name, model, {"plain": test}, public)

    def strategy(self, run: RunConfig, plan: Plan, grid: Grid) -> Strategy:
        from ..strategies import FeatureSharing

        dpm = run[DPMSection]
        test = plan.test_sets["plain"]
        bootstrap(run, plan.model, plan.public, grid)
        _, bootstrap_accuracy = evaluate(plan.model, test, device=get_device())
        log(INFO, "bootstrap (%s): test accuracy %.4f", dpm.dpm_bootstrap, bootstrap_accuracy)
        split = split_model(plan.model, dpm.dpm_hook)
        shape = feature_shape(split.featurizer, test.image_shape)
        reconstructors = train_reconstructors(run, split, plan.public, shape)
        ensemble = ensemble_for(run, split, plan.public, shape)
        self_check = self_check_for(run, split, plan.public, shape)
        plan.artifacts.update(
            split=split,
            reconstructors=reconstructors,
            ensemble=ensemble,
            self_check=self_check,
            feature_shape=shape,
            bootstrap_accuracy=bootstrap_accuracy,
        )
        return FeatureSharing(
            plan.model_name,
            dpm.dpm_hook,
            reconstructors[dpm.dpm_reconstructor],
            image_shape=test.image_shape,
            num_classes=test.num_classes,
            ssim_weight=dpm.dpm_lambda,
            feature_noise=dpm.dpm_feature_noise,
            dpm_epochs=dpm.dpm_epochs,
            warmup_epochs=dpm.dpm_warmup_epochs,
            shared_samples=dpm.dpm_shared_samples,
            ensemble=ensemble,
            self_check=self_check,
            refine_epochs=dpm.refine_epochs,
            fraction_train=run[CommonSection].fraction_train,
            seed=derive_seed(run[CommonSection].seed, "refine"),
        )

    def method(self, run: RunConfig, plan: Plan) -> str:
        return "feature-sharing+dpm"

    def resume_obstacle(self, run: RunConfig, plan: Plan, failed_replies: int) -> str | None:
        return (
            "feature sharing with DPM: each client's DPM continues from the previous round's in its context.state, "
            "which a resumed run cannot rebuild"
        )

    def privacy(self, run: RunConfig, plan: Plan, strategy: Strategy, result: Result) -> dict[str, dict[str, Any]]:
        """The DPM settings the clients shared with (the audit adds its own section)."""
        dpm = run[DPMSection]
        self_check = plan.artifacts["self_check"]
        return {
            "dpm": {
                "straw_man": dpm.dpm_reconstructor,
                "ensemble": dpm.ensemble_names,
                "ensemble_instances": dpm.dpm_ensemble_instances,
                "self_check": (
                    {
                        "checker": dpm.dpm_check_reconstructor,
                        "threshold": dpm.dpm_check_threshold,
                        "draws": dpm.dpm_check_draws,
                    }
                    if self_check
                    else None
                ),
                "unseen_reconstructors": [name for name in RECONSTRUCTORS if name != dpm.dpm_reconstructor],
            }
        }

    def details(self, run: RunConfig, plan: Plan, strategy: Strategy, result: Result) -> dict[str, Any]:
        from ..strategies import FeatureSharing

        sharing = cast(FeatureSharing, strategy)
        return {
            "model": plan.model_name,
            "hook": run[DPMSection].dpm_hook,
            "feature_shape": list(plan.artifacts["feature_shape"]),
            "bootstrap": run[DPMSection].dpm_bootstrap,
            "bootstrap_accuracy": plan.artifacts["bootstrap_accuracy"],
            "rejected_replies": sum(sharing.rejected.values()),
            "withheld_replies": sum(sharing.withheld.values()),  # also counted in client_failures
        }

    def train(self, msg: Message, context: Context) -> Message:
        """Feature sharing, or plain FedAvg training while Phi is bootstrapped."""
        run = self.schema.parse(context.run_config)
        settings = msg.content.config_records.get(CONFIG_KEY, ConfigRecord())
        if settings.get(TASK_KEY) == FEATURE_SHARING_TASK:
            return share_poisoned_features(run, msg, context)
        return train_locally(run, msg, context)
