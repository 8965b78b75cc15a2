"""DP-FedAvg as a protection: the server wraps its strategy in :class:`~flwr_privshare.strategies.DPFedAvg`.

Clients train as usual; with ``dp-clipping = "client"`` (or ``"client-adaptive"``) their
mod clips the update before it leaves them (Flower's ``fixedclipping_mod`` /
``adaptiveclipping_mod``, run by :func:`dp_clipping_mod` only when the server asks for it).
"""

from __future__ import annotations

from typing import Any, cast

from flwr.app import Context, Message
from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from ..config.common import CommonSection
from ..dp.section import DPSection
from ..protocol import ADAPTIVE_CLIPPING_KEY, CLIPPING_NORM_KEY
from .base import Protection, register_protection


def dp_clipping_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``fixedclipping_mod`` (or ``adaptiveclipping_mod``) when the server asks for client-side clipping.

    ``DPFedAvg(..., clipping="client")`` sends ``clipping_norm`` in the train config; the mod
    then clips this client's update before it leaves the client. Other messages pass through.
    """
    configs = msg.content.config_records
    if any(ADAPTIVE_CLIPPING_KEY in record for record in configs.values()):
        return adaptiveclipping_mod(msg, context, call_next)
    if any(CLIPPING_NORM_KEY in record for record in configs.values()):
        return fixedclipping_mod(msg, context, call_next)
    return call_next(msg, context)


@register_protection
class DPFedAvgProtection(Protection):
    """User-level DP-FedAvg (McMahan et al. 2018) with Opacus RDP accounting, amplified by client sampling."""

    name = "dp-fedavg"
    section = DPSection
    aggregation = "dp-fedavg"
    client_mods = (dp_clipping_mod,)

    def wrap_strategy(self, strategy: Strategy, grid: Grid) -> Strategy:
        from ..strategies import DPFedAvg

        dp = self.run[DPSection]
        num_total = len(list(grid.get_node_ids()))
        num_sampled = max(int(num_total * self.run[CommonSection].fraction_train), 1)  # FedAvg's own sample size
        settings: dict[str, Any] = {
            "clipping_norm": dp.clipping_norm,
            "num_sampled_clients": num_sampled,
            "num_total_clients": num_total,
            "delta": dp.delta,
            "clipping": dp.dp_clipping,
            "sampling": dp.dp_sampling,
        }
        if dp.dp_clipping.endswith("adaptive") and dp.dp_clipped_count_stddev > 0:
            settings["clipped_count_stddev"] = dp.dp_clipped_count_stddev
        if dp.target_epsilon > 0:
            num_rounds = self.run[CommonSection].num_server_rounds
            return DPFedAvg.with_target_epsilon(
                strategy, target_epsilon=dp.target_epsilon, num_rounds=num_rounds, **settings
            )
        return DPFedAvg(strategy, noise_multiplier=dp.noise_multiplier, **settings)

    def report(self, strategy: Strategy, result: Result) -> dict[str, Any]:
        from ..strategies import DPFedAvg

        report = cast(DPFedAvg, strategy).privacy_report()
        return {**report, "target_epsilon": self.run[DPSection].target_epsilon or None}

    def plots(self) -> dict[str, tuple[str, list[str]]]:
        return {"accuracy_vs_epsilon": ("train_epsilon", ["accuracy"])}
