"""User-level DP-FedAvg with privacy accounting that includes amplification by client sampling.

DP-FedAvg (McMahan et al., 2018, https://arxiv.org/abs/1710.06963) clips every client's
update to L2 norm ``C`` and adds Gaussian noise of std ``z * C`` to their sum. The clipping
and noise are Flower's own wrappers, ``DifferentialPrivacyServerSideFixedClipping`` and
``DifferentialPrivacyClientSideFixedClipping`` (the latter with ``fixedclipping_mod`` on
the clients). What Flower 1.41 lacks, ``DPFedAvg`` adds:

- accounting with amplification by client sampling (Opacus RDP, ``q = m / N``, one step per
  round; Flower's optional accountant supports only no amplification), reported after
  every round as ``epsilon`` and ``epsilon-no-amplification`` in the aggregated metrics;
- a uniform average: Flower's noise ``z * C / m`` is calibrated for the plain mean of ``m``
  clipped updates, so the inner strategy's example-count weights are set to 1;
- robustness: failed replies are dropped (Flower's wrapper would skip the whole round),
  and a round averaged over ``k < m`` replies is accounted with ``z * k / m``.

It wraps any FedAvg-family strategy (``FedAvg``, ``FedProx``, ``FedAvgM``, ``FedAdam``, ...),
so it drops into an existing ServerApp::

    strategy = DPFedAvg(FedAvg(fraction_train=0.1), noise_multiplier=1.0, clipping_norm=0.5,
                        num_sampled_clients=10, num_total_clients=100, delta=1e-5)
"""

from __future__ import annotations

from collections.abc import Iterable
from logging import INFO, WARNING
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)

from flwr_privshare.dp.accounting import (
    SAMPLING_ASSUMPTION,
    UserLevelAccountant,
    noise_multiplier_for_target,
    validate_dp_parameters,
)

CLIPPING_MODES = ("server", "client")


class DPFedAvg(Strategy):
    """User-level DP-FedAvg around an inner FedAvg-family strategy, with Opacus RDP accounting.

    Parameters
    ----------
    strategy : Strategy
        The inner strategy; it must average by a weight key (``weighted_by_key``).
    noise_multiplier : float
        ``z``: the noise std on the sum of clipped updates is ``z * clipping_norm``.
    clipping_norm : float
        ``C``: every client update (client arrays minus global arrays) is clipped to this L2 norm.
    num_sampled_clients : int
        ``m``: clients sampled per round; the inner strategy must sample exactly this many.
    num_total_clients : int
        ``N``: clients in the federation; the sample rate is ``m / N``.
    delta : float
        The delta of the reported (epsilon, delta).
    clipping : str (default: "server")
        ``"server"`` clips on the server; ``"client"`` expects ``fixedclipping_mod`` on the
        clients (updates are clipped before they leave the client).
    """

    def __init__(
        self,
        strategy: Strategy,
        *,
        noise_multiplier: float,
        clipping_norm: float,
        num_sampled_clients: int,
        num_total_clients: int,
        delta: float,
        clipping: str = "server",
    ) -> None:
        validate_dp_parameters(
            noise_multiplier=noise_multiplier,
            clipping_norm=clipping_norm,
            delta=delta,
            num_sampled=num_sampled_clients,
            num_total=num_total_clients,
        )
        if clipping not in CLIPPING_MODES:
            raise ValueError(f"clipping must be one of {CLIPPING_MODES}, got {clipping!r}")
        weighted_by_key = getattr(strategy, "weighted_by_key", None)
        if not isinstance(weighted_by_key, str):
            raise TypeError(
                f"DPFedAvg needs a FedAvg-family inner strategy (with weighted_by_key), got {type(strategy).__name__}"
            )
        self.strategy = strategy
        self.weighted_by_key = weighted_by_key
        self.noise_multiplier = noise_multiplier
        self.clipping_norm = clipping_norm
        self.num_sampled_clients = num_sampled_clients
        self.clipping = clipping
        wrapper = (
            DifferentialPrivacyServerSideFixedClipping
            if clipping == "server"
            else DifferentialPrivacyClientSideFixedClipping
        )
        self.dp_strategy = wrapper(strategy, noise_multiplier, clipping_norm, num_sampled_clients)
        self.accountant = UserLevelAccountant(noise_multiplier, num_sampled_clients, num_total_clients, delta)

    @classmethod
    def with_target_epsilon(
        cls,
        strategy: Strategy,
        *,
        target_epsilon: float,
        num_rounds: int,
        clipping_norm: float,
        num_sampled_clients: int,
        num_total_clients: int,
        delta: float,
        clipping: str = "server",
    ) -> DPFedAvg:
        """Choose the smallest noise multiplier that keeps ``num_rounds`` rounds within ``target_epsilon``.

        Raises
        ------
        ValueError
            When the target cannot be reached (checked before any round).
        """
        validate_dp_parameters(
            noise_multiplier=1.0,
            clipping_norm=clipping_norm,
            delta=delta,
            num_sampled=num_sampled_clients,
            num_total=num_total_clients,
        )
        if num_rounds < 1:
            raise ValueError(f"num-rounds must be a positive integer, got {num_rounds}")
        z = noise_multiplier_for_target(target_epsilon, delta, num_sampled_clients / num_total_clients, num_rounds)
        return cls(
            strategy,
            noise_multiplier=z,
            clipping_norm=clipping_norm,
            num_sampled_clients=num_sampled_clients,
            num_total_clients=num_total_clients,
            delta=delta,
            clipping=clipping,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Let the DP wrapper configure the round; refuse to sample more clients than accounted for."""
        messages = list(self.dp_strategy.configure_train(server_round, arrays, config, grid))
        if len(messages) > self.num_sampled_clients:
            raise RuntimeError(
                f"the inner strategy sampled {len(messages)} clients but DPFedAvg accounts for "
                f"num_sampled_clients={self.num_sampled_clients}; set its fraction_train accordingly"
            )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Clip, average uniformly, add noise (Flower's wrapper), then account the round."""
        replies = list(replies)
        valid = [msg for msg in replies if not msg.has_error()]
        if len(valid) < len(replies):
            log(WARNING, "round %d: dropped %d failed replies", server_round, len(replies) - len(valid))
        if not valid:
            return None, None
        for msg in valid:
            for record in msg.content.metric_records.values():
                if self.weighted_by_key in record:
                    record[self.weighted_by_key] = 1.0
        arrays, metrics = self.dp_strategy.aggregate_train(server_round, valid)
        if arrays is None:
            return None, metrics
        self.accountant.step(len(valid))
        report = MetricRecord(dict(metrics or {}))
        report["epsilon"] = self.accountant.epsilon()
        report["epsilon-no-amplification"] = self.accountant.epsilon_no_amplification()
        log(INFO, "round %d: epsilon %.4f (delta %g)", server_round, report["epsilon"], self.accountant.delta)
        return arrays, report

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate to the inner strategy."""
        return self.dp_strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Delegate to the inner strategy."""
        return self.dp_strategy.aggregate_evaluate(server_round, list(replies))

    def summary(self) -> None:
        """Log the DP settings and the inner strategy's summary."""
        log(
            INFO,
            "\t├──> DPFedAvg: z=%g, C=%g, m=%d, q=%.4f, delta=%g, %s-side clipping, Opacus RDP accounting",
            self.noise_multiplier,
            self.clipping_norm,
            self.num_sampled_clients,
            self.accountant.sample_rate,
            self.accountant.delta,
            self.clipping,
        )
        self.strategy.summary()

    def privacy_report(self) -> dict[str, Any]:
        """Everything a result file needs to state the guarantee."""
        return {
            "epsilon": self.accountant.epsilon(),
            "epsilon_no_amplification": self.accountant.epsilon_no_amplification(),
            "delta": self.accountant.delta,
            "noise_multiplier": self.noise_multiplier,
            "clipping_norm": self.clipping_norm,
            "clipping": self.clipping,
            "sample_rate": self.accountant.sample_rate,
            "rounds_accounted": self.accountant.rounds,
            "accountant": "opacus-rdp",
            "sampling_assumption": SAMPLING_ASSUMPTION,
        }
