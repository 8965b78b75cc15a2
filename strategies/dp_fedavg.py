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
  and a round averaged over ``k < m`` replies is accounted with ``z * k / m``; a round with
  no usable reply releases nothing: no noise is drawn, the model stays, nothing is accounted
  (listed as ``rounds_without_replies`` in the report).

It wraps any FedAvg-family strategy (``FedAvg``, ``FedProx``, ``FedAvgM``, ``FedAdam``, ...),
so it drops into an existing ServerApp::

    strategy = DPFedAvg(FedAvg(fraction_train=0.1), noise_multiplier=1.0, clipping_norm=0.5,
                        num_sampled_clients=10, num_total_clients=100, delta=1e-5)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from logging import INFO, WARNING
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Strategy,
)

from flwr_privshare.dp import (
    SAMPLING_ASSUMPTION,
    UserLevelAccountant,
    adaptive_round_noise_multiplier,
    noise_multiplier_for_target,
    validate_dp_parameters,
)
from flwr_privshare.dp.section import CLIPPING_MODES, DPSection
from flwr_privshare.protocol import ADAPTIVE_CLIPPING_KEY


def _grow_when_over_target(wrapper: Any, clipped_fraction: float) -> None:
    """Andrew et al.'s geometric norm update, in the direction of Flower's "quantile clipped" target.

    Flower 1.41's ``_geometric_update`` computes ``C * exp(-lr * (clipped - target))``: it
    shrinks the norm when more updates than the target are clipped, driving it away from
    the target quantile. The paper's update, ``C * exp(-lr * (unclipped - (1 - target)))``,
    is ``C * exp(lr * (clipped - target))``.
    """
    wrapper.clipping_norm *= math.exp(wrapper.clip_norm_lr * (clipped_fraction - wrapper.target_clipped_quantile))


class ServerSideAdaptiveClipping(DifferentialPrivacyServerSideAdaptiveClipping):
    """Flower's server-side adaptive clipping with the norm update of Andrew et al. (see ``_grow_when_over_target``)."""

    def _geometric_update(self, clipped_fraction: float) -> None:
        _grow_when_over_target(self, clipped_fraction)


class ClientSideAdaptiveClipping(DifferentialPrivacyClientSideAdaptiveClipping):
    """Flower's client-side adaptive clipping with the norm update of Andrew et al. (see ``_grow_when_over_target``)."""

    def _geometric_update(self, clipped_fraction: float) -> None:
        _grow_when_over_target(self, clipped_fraction)


# Strategies whose aggregation is the (weighted) mean of the client arrays, optionally followed by
# a server optimizer step (post-processing). The noise z * C / m is calibrated for the mean of m
# clipped updates: a median, trimmed mean or Krum selection can move by about C, so a guarantee
# reported for them would be understated.
CLIPPING_TOLERANCE = 1e-3  # relative: a clipped float32 update may exceed the norm by rounding

MEAN_AGGREGATING = (FedAvg, FedProx, FedAvgM, FedAdam, FedAdagrad, FedYogi)


def check_mean_aggregation(strategy: Strategy) -> None:
    """Refuse an inner strategy whose aggregation is not the mean that DP-FedAvg's noise is calibrated for.

    Accepted: the classes of :data:`MEAN_AGGREGATING` and subclasses that inherit their
    ``aggregate_train`` (a user's FedAvg subclass that only changes ``configure_train`` or
    ``start``, say).
    """
    method = getattr(type(strategy), "aggregate_train", None)
    if not any(isinstance(strategy, base) and method is base.aggregate_train for base in MEAN_AGGREGATING):
        allowed = ", ".join(base.__name__ for base in MEAN_AGGREGATING)
        raise TypeError(
            f"DPFedAvg needs an inner strategy that averages the client updates ({allowed}, or a subclass that "
            f"keeps their aggregate_train); {type(strategy).__name__} aggregates otherwise, and the noise "
            "calibrated for a mean would understate its privacy loss"
        )


class DPFedAvg(Strategy):
    """User-level DP-FedAvg around an inner FedAvg-family strategy, with Opacus RDP accounting.

    Parameters
    ----------
    strategy : Strategy
        The inner strategy; it must aggregate by the mean (see :func:`check_mean_aggregation`).
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
        clients (updates are clipped before they leave the client). ``"server-adaptive"``
        and ``"client-adaptive"`` use Flower's adaptive-clipping wrappers (Andrew et al.,
        2021; ``adaptiveclipping_mod`` on the clients), starting from ``clipping_norm``;
        each round is then accounted with its effective noise multiplier (see
        :func:`~flwr_privshare.dp.accounting.adaptive_round_noise_multiplier`).
    target_clipped_quantile, clip_norm_lr, clipped_count_stddev :
        Flower's adaptive-clipping parameters (adaptive modes only); the count noise
        ``clipped_count_stddev`` defaults to Flower's ``num_sampled_clients / 20``.
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
        target_clipped_quantile: float = 0.5,
        clip_norm_lr: float = 0.2,
        clipped_count_stddev: float | None = None,
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
        check_mean_aggregation(strategy)
        weighted_by_key = cast(FedAvg, strategy).weighted_by_key
        self.strategy = strategy
        self.weighted_by_key = weighted_by_key
        self.noise_multiplier = noise_multiplier
        self.clipping_norm = clipping_norm
        self.num_sampled_clients = num_sampled_clients
        self.clipping = clipping
        self.dp_strategy: Strategy
        if clipping.endswith("adaptive"):
            adaptive = ServerSideAdaptiveClipping if clipping == "server-adaptive" else ClientSideAdaptiveClipping
            self.dp_strategy = adaptive(
                strategy,
                noise_multiplier,
                num_sampled_clients,
                initial_clipping_norm=clipping_norm,
                target_clipped_quantile=target_clipped_quantile,
                clip_norm_lr=clip_norm_lr,
                clipped_count_stddev=clipped_count_stddev,
            )
        else:
            fixed = (
                DifferentialPrivacyServerSideFixedClipping
                if clipping == "server"
                else DifferentialPrivacyClientSideFixedClipping
            )
            self.dp_strategy = fixed(strategy, noise_multiplier, clipping_norm, num_sampled_clients)
        self.accountant = UserLevelAccountant(noise_multiplier, num_sampled_clients, num_total_clients, delta)
        self._broadcast: list[np.ndarray] = []
        self.unclipped: dict[int, int] = {}
        #: Rounds in which no reply could be aggregated: no noise was drawn and nothing was accounted.
        self.rounds_without_replies: list[int] = []

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
        DPSection(target_epsilon=target_epsilon, dp_clipping=clipping)  # the rule: adaptive clipping has no target
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
        if self.clipping == "client-adaptive":
            config[ADAPTIVE_CLIPPING_KEY] = True
        if self.clipping.startswith("client"):  # the norm check of _clipped_only needs what was sent
            self._broadcast = [array.numpy() for array in arrays.values()]
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
        if self.clipping.startswith("client"):
            valid = self._clipped_only(server_round, valid)
        if not valid:
            log(WARNING, "round %d: no usable reply; the model stays as it was and the round adds no privacy cost",
                server_round)  # fmt: skip
            self.rounds_without_replies.append(server_round)
            return None, None
        for msg in valid:
            for record in msg.content.metric_records.values():
                if self.weighted_by_key in record:
                    record[self.weighted_by_key] = 1.0
        norm_before = self.current_clipping_norm
        arrays, metrics = self.dp_strategy.aggregate_train(server_round, valid)
        if arrays is None:
            return None, metrics
        if isinstance(
            self.dp_strategy, DifferentialPrivacyServerSideFixedClipping | DifferentialPrivacyClientSideFixedClipping
        ):
            self.accountant.step(len(valid))
        else:
            adaptive = cast(ServerSideAdaptiveClipping, self.dp_strategy)
            z_round = adaptive_round_noise_multiplier(
                adaptive.noise_multiplier,
                norm_before,
                adaptive.clipping_norm,
                len(valid),
                self.num_sampled_clients,
                adaptive.clipped_count_stddev,
            )
            self.accountant.step(len(valid), noise_multiplier=z_round)
        report = MetricRecord(dict(metrics or {}))
        report["epsilon"] = self.accountant.epsilon()
        report["epsilon-no-amplification"] = self.accountant.epsilon_no_amplification()
        report["clipping-norm"] = self.current_clipping_norm
        log(INFO, "round %d: epsilon %.4f (delta %g)", server_round, report["epsilon"], self.accountant.delta)
        return arrays, report

    def _clipped_only(self, server_round: int, replies: list[Message]) -> list[Message]:
        """The replies whose update (reply arrays minus the broadcast arrays) the client clipped to the norm.

        With client-side clipping the guarantee rests on the clients' mods; an update longer
        than the clipping norm (``fixedclipping_mod`` missing from the ClientApp, or a client that
        ignores it) is dropped, logged and counted in ``unclipped``, so no round is accounted
        with updates that were not clipped.
        """
        limit = self.current_clipping_norm * (1 + CLIPPING_TOLERANCE)
        kept = []
        for msg in replies:
            arrays = next(iter(msg.content.array_records.values()))
            norm = math.sqrt(
                sum(
                    float(np.sum((new.numpy().astype(np.float64) - old) ** 2))
                    for new, old in zip(arrays.values(), self._broadcast, strict=True)
                )
            )
            if norm <= limit:
                kept.append(msg)
            else:
                log(
                    WARNING,
                    "round %d: dropped an update of norm %.4f > clipping norm %.4f: with client-side clipping the "
                    "ClientApp needs Flower's fixedclipping_mod (adaptiveclipping_mod for client-adaptive)",
                    server_round,
                    norm,
                    self.current_clipping_norm,
                )
        self.unclipped[server_round] = len(replies) - len(kept)
        return kept

    @property
    def current_clipping_norm(self) -> float:
        """The clipping norm of the next round (it changes only with adaptive clipping)."""
        return float(getattr(self.dp_strategy, "clipping_norm", self.clipping_norm))

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
            "final_clipping_norm": self.current_clipping_norm,
            "clipping": self.clipping,
            "round_noise_multipliers": [z for z, _, steps in self.accountant.history for _ in range(steps)],
            "sample_rate": self.accountant.sample_rate,
            "rounds_accounted": self.accountant.rounds,
            # Nothing was released in these rounds (no noisy sum, the model unchanged): no privacy cost.
            "rounds_without_replies": list(self.rounds_without_replies),
            "accountant": "opacus-rdp",
            "sampling_assumption": SAMPLING_ASSUMPTION,
        }
