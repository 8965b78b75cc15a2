"""DP-SGD as a protection: every client trains with Opacus, and its accountant persists across rounds.

The accountant's history is kept in ``context.state`` (it never leaves the client), so the
epsilon a client reports is cumulative over the rounds it took part in. A resumed run's
clients rebuild it from the round number when every client trains every round. The server reports
the worst client's epsilon: a weighted mean of per-client epsilons means nothing.
"""

from __future__ import annotations

from typing import Any

from flwr.app import Context, MetricRecord
from flwr.serverapp.strategy import Result, Strategy
from torch import nn

from ..config import CommonSection
from ..config.checks import require
from ..data import ImageDataset
from ..dp.section import DPSection
from ..recipe.section import RecipeSection
from .base import LocalTraining, Protection, register_protection

STATE_KEY = "dp-sgd-accountant"


@register_protection
class DPSGDProtection(Protection):
    """DP-SGD (Abadi et al. 2016) on every client with Opacus, Poisson sampling of each client's examples."""

    name = "dp-sgd"
    section = DPSection
    conflicts = ("dp-fedavg",)  # two guarantees (per example, per user) that the report cannot combine

    @property
    def settings(self) -> DPSection:
        return self.run[DPSection]

    def check_data(self, image_shape: tuple[int, int, int]) -> None:
        """Augmentation multiplicity needs an augmentation to make the copies differ."""
        multiplicity = self.settings.augmentation_multiplicity
        if multiplicity == 1:
            return
        recipe = self.run[RecipeSection] if RecipeSection in self.run else RecipeSection(augmentation="none")
        require(
            recipe.augmentation_for(image_shape).active,
            "augmentation-multiplicity",
            multiplicity,
            f"1 when the augmentation is off (augmentation {recipe.augmentation!r} on {image_shape[0]}-channel images)",
        )

    def noise_multiplier(self, num_examples: int, local: LocalTraining) -> float:
        """``noise-multiplier``, or the one that keeps all rounds within ``target-epsilon`` (Opacus RDP).

        Opacus samples each batch with rate ``1 / ceil(n / batch_size)`` and takes that many
        steps per epoch; a client that trains in every round takes
        ``num_server_rounds * local_epochs`` epochs.
        """
        if self.settings.target_epsilon <= 0:
            return self.settings.noise_multiplier
        from ..dp import noise_multiplier_for_target

        steps_per_epoch = -(-num_examples // local.batch_size)
        steps = local.num_server_rounds * local.epochs * steps_per_epoch
        return noise_multiplier_for_target(
            self.settings.target_epsilon, self.settings.delta, 1.0 / steps_per_epoch, steps
        )

    def train(self, model: nn.Module, data: ImageDataset, context: Context, local: LocalTraining) -> MetricRecord:
        from ..dp import history_from_record, history_to_record, train_dp_sgd
        from ..dp.dpsgd import rebuilt_history

        stored = context.state.config_records.get(STATE_KEY)
        noise_multiplier = self.noise_multiplier(len(data), local)
        if stored is not None:
            history = history_from_record(stored)
        else:  # the first round, or a resumed run: every client trained in every earlier round
            history = rebuilt_history(
                local.server_round - 1,
                len(data),
                batch_size=local.batch_size,
                epochs=local.epochs,
                noise_multiplier=noise_multiplier,
            )
        result = train_dp_sgd(
            model,
            data,
            noise_multiplier=noise_multiplier,
            max_grad_norm=self.settings.max_grad_norm,
            delta=self.settings.delta,
            history=history,
            seed=local.seed,
            accountant=self.settings.dp_accountant,
            augmentation_multiplicity=self.settings.augmentation_multiplicity,
            **local.loop_settings(),
        )
        context.state[STATE_KEY] = history_to_record(result.history, self.settings.dp_accountant)
        return MetricRecord({"loss": result.loss, "epsilon": result.epsilon, "noise-multiplier": noise_multiplier})

    def resume_obstacle(self, failed_replies: int) -> str | None:
        """A resumed client rebuilds its accountant history assuming it trained in every earlier round."""
        if self.run[CommonSection].fraction_train < 1:
            return (
                "dp-sgd keeps each client's accountant history in context.state; with fraction-train < 1 a resumed "
                "client cannot know in which earlier rounds it trained, so its epsilon could not be rebuilt"
            )
        if failed_replies:
            return (
                f"dp-sgd: {failed_replies} replies failed in the rounds already run, so which clients completed "
                "which rounds (their accountant histories) cannot be rebuilt"
            )
        return None

    def report(self, strategy: Strategy, result: Result) -> dict[str, Any]:
        """The DP-SGD guarantee of the run: the worst client's cumulative epsilon."""
        last_round = result.train_metrics_clientapp.get(max(result.train_metrics_clientapp, default=0), MetricRecord())
        return {
            "epsilon": last_round.get("epsilon-max"),
            "epsilon_mean": last_round.get("epsilon-mean"),
            "delta": self.settings.delta,
            # With a target epsilon each client picks z for its own data size; this is their mean.
            "noise_multiplier": last_round.get("noise-multiplier", self.settings.noise_multiplier),
            "target_epsilon": self.settings.target_epsilon or None,
            "max_grad_norm": self.settings.max_grad_norm,
            "accountant": f"opacus-{self.settings.dp_accountant}",
            "sampling_assumption": "Poisson sampling of each client's examples (Opacus); epsilon is per client, "
            "cumulative over the rounds it took part in; the run reports the largest",
        }

    def plots(self) -> dict[str, tuple[str, list[str]]]:
        return {"accuracy_vs_epsilon": ("train_epsilon-max", ["accuracy"])}
