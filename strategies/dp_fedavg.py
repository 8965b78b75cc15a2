"""User-level DP-FedAvg with privacy accounting that includes amplification by client sampling.

DP-FedAvg (McMahan et al., 2018, https://arxiv.org/abs/1710.06963, Algorithm 1) clips every
client's update to L2 norm ``C``, adds Gaussian noise of std ``z * C`` to their sum and divides
by the expected number of clients. ``DPFedAvg`` implements it around any FedAvg-family strategy
with Flower's own DP primitives (``compute_clip_model_update``, ``add_gaussian_noise_inplace``,
``fixedclipping_mod`` on the clients for client-side clipping) and adds what Flower 1.41's
``DifferentialPrivacy*FixedClipping`` wrappers lack:

- sampling that matches the accountant: by default every client joins a round independently
  with probability ``q = m / N`` (Poisson), and the noisy sum is divided by ``m`` whoever
  replied, so Opacus's RDP accountant for the Poisson-subsampled Gaussian mechanism is exact
  (``sampling="fixed"`` keeps Flower's fixed-size sample and reports the approximation);
- noise before the inner strategy's server step: Flower's wrappers add the noise to the
  inner strategy's *result*, after FedAvgM's momentum or FedAdam's step has used the
  noiseless mean; here every reply is replaced by the noisy mean first, so a server
  optimizer only post-processes the private release;
- accounting reported after every round as ``epsilon`` and ``epsilon-no-amplification``;
- a uniform average: the noise is calibrated for clipped updates of weight 1, so the
  inner strategy's example-count weights are set to 1;
- robustness: failed replies are dropped (Flower's wrapper would skip the whole round).
  With Poisson sampling the round is still released and accounted at ``z``; with fixed
  sampling a round averaged over ``k < m`` replies is accounted with ``z * k / m``, and a
  round with no usable reply releases nothing (``rounds_without_replies`` in the report).

It wraps any FedAvg-family strategy (``FedAvg``, ``FedProx``, ``FedAvgM``, ``FedAdam``, ...),
so it drops into an existing ServerApp::

    strategy = DPFedAvg(FedAvg(), noise_multiplier=1.0, clipping_norm=0.5,
                        num_sampled_clients=10, num_total_clients=100, delta=1e-5)

Adaptive clipping (``clipping="server-adaptive"`` / ``"client-adaptive"``) uses Flower's
adaptive wrappers, which need fixed sampling and an inner strategy without a server step.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from logging import INFO, WARNING
from typing import Any, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Strategy,
)
from flwr.supercore.differential_privacy import add_gaussian_noise_inplace, compute_stdv, get_norm

from flwr_privshare import dp  # its accounting (and Opacus) loads when a DPFedAvg is built, not on import
from flwr_privshare.dp.section import CLIPPING_MODES, SAMPLING_MODES, DPSection
from flwr_privshare.protocol import ADAPTIVE_CLIPPING_KEY, CLIPPING_NORM_KEY


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
# a server optimizer step (post-processing of the noisy mean DPFedAvg hands them). The noise is
# calibrated for a mean of clipped updates: a median, trimmed mean or Krum selection can move by
# about C, so a guarantee reported for them would be understated.
CLIPPING_TOLERANCE = 1e-3  # relative: a clipped float32 update may exceed the norm by rounding

MEAN_AGGREGATING = (FedAvg, FedProx, FedAvgM, FedAdam, FedAdagrad, FedYogi)


def check_no_server_step(strategy: Strategy) -> None:
    """Refuse a server optimizer under Flower's adaptive wrappers, which add the noise after the inner step."""
    if getattr(type(strategy), "aggregate_train", None) is not FedAvg.aggregate_train:
        raise TypeError(
            f"adaptive clipping needs an inner strategy that aggregates as FedAvg does (FedAvg, FedProx); "
            f"{type(strategy).__name__} takes a server step before Flower's adaptive wrapper adds the noise"
        )


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
        ``m``: clients per round, expected (Poisson) or exact (fixed sampling: the inner
        strategy must sample exactly this many).
    num_total_clients : int
        ``N``: clients in the federation; the sample rate is ``q = m / N``.
    delta : float
        The delta of the reported (epsilon, delta).
    clipping : str (default: "server")
        ``"server"`` clips on the server; ``"client"`` expects ``fixedclipping_mod`` on the
        clients (updates are clipped before they leave the client; the server drops longer
        ones). ``"server-adaptive"`` and ``"client-adaptive"`` use Flower's adaptive-clipping
        wrappers (Andrew et al., 2021; ``adaptiveclipping_mod`` on the clients), starting from
        ``clipping_norm``; each round is then accounted with its effective noise multiplier
        (see :func:`~flwr_privshare.dp.accounting.adaptive_round_noise_multiplier`).
    sampling : str (default: "poisson")
        ``"poisson"``: every node joins a round with probability ``q``, drawn from Python's
        ``random`` (seeded, like Flower's own sampling) in the grid's node order; the
        accounting is exact. ``"fixed"``: the inner strategy's sample of ``m`` nodes; the
        accounting approximates it (see :mod:`flwr_privshare.dp.accounting`).
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
        sampling: str = "poisson",
        target_clipped_quantile: float = 0.5,
        clip_norm_lr: float = 0.2,
        clipped_count_stddev: float | None = None,
    ) -> None:
        dp.validate_dp_parameters(
            noise_multiplier=noise_multiplier,
            clipping_norm=clipping_norm,
            delta=delta,
            num_sampled=num_sampled_clients,
            num_total=num_total_clients,
        )
        if clipping not in CLIPPING_MODES:
            raise ValueError(f"clipping must be one of {CLIPPING_MODES}, got {clipping!r}")
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {sampling!r}")
        check_mean_aggregation(strategy)
        self.strategy = strategy
        self.weighted_by_key = cast(FedAvg, strategy).weighted_by_key
        self.noise_multiplier = noise_multiplier
        self.clipping_norm = clipping_norm
        self.num_sampled_clients = num_sampled_clients
        self.clipping = clipping
        self.sampling = sampling
        #: Flower's adaptive-clipping wrapper; ``None`` with fixed clipping, which DPFedAvg does itself.
        self.adaptive: ServerSideAdaptiveClipping | ClientSideAdaptiveClipping | None = None
        DPSection(dp_clipping=clipping, dp_sampling=sampling)  # the rule: adaptive clipping samples a fixed size
        if clipping.endswith("adaptive"):
            check_no_server_step(strategy)
            adaptive = ServerSideAdaptiveClipping if clipping == "server-adaptive" else ClientSideAdaptiveClipping
            self.adaptive = adaptive(
                strategy,
                noise_multiplier,
                num_sampled_clients,
                initial_clipping_norm=clipping_norm,
                target_clipped_quantile=target_clipped_quantile,
                clip_norm_lr=clip_norm_lr,
                clipped_count_stddev=clipped_count_stddev,
            )
        self.accountant = dp.UserLevelAccountant(
            noise_multiplier, num_sampled_clients, num_total_clients, delta, sampling
        )
        self._broadcast = ArrayRecord()
        self.unclipped: dict[int, int] = {}
        #: Fixed sampling: rounds in which no reply could be aggregated (no noise drawn, nothing accounted).
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
        sampling: str = "poisson",
    ) -> DPFedAvg:
        """Choose the smallest noise multiplier that keeps ``num_rounds`` rounds within ``target_epsilon``.

        Raises
        ------
        ValueError
            When the target cannot be reached (checked before any round).
        """
        dp.validate_dp_parameters(
            noise_multiplier=1.0,
            clipping_norm=clipping_norm,
            delta=delta,
            num_sampled=num_sampled_clients,
            num_total=num_total_clients,
        )
        if num_rounds < 1:
            raise ValueError(f"num-rounds must be a positive integer, got {num_rounds}")
        DPSection(target_epsilon=target_epsilon, dp_clipping=clipping)  # the rule: adaptive clipping has no target
        z = dp.noise_multiplier_for_target(target_epsilon, delta, num_sampled_clients / num_total_clients, num_rounds)
        return cls(
            strategy,
            noise_multiplier=z,
            clipping_norm=clipping_norm,
            num_sampled_clients=num_sampled_clients,
            num_total_clients=num_total_clients,
            delta=delta,
            clipping=clipping,
            sampling=sampling,
        )

    @property
    def sample_rate(self) -> float:
        """``q = m / N``."""
        return self.accountant.sample_rate

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Configure the round through the inner strategy, then sample its nodes (Poisson) or check its sample."""
        if self.clipping == "client-adaptive":
            config[ADAPTIVE_CLIPPING_KEY] = True
        if self.clipping == "client":
            config[CLIPPING_NORM_KEY] = self.clipping_norm  # what Flower's fixedclipping_mod reads
        self._broadcast = arrays
        inner = self.adaptive if self.adaptive is not None else self.strategy
        messages = list(inner.configure_train(server_round, arrays, config, grid))
        if self.sampling == "poisson":
            return self._poisson_sample(server_round, messages, grid)
        if len(messages) > self.num_sampled_clients:
            raise RuntimeError(
                f"the inner strategy sampled {len(messages)} clients but DPFedAvg accounts for "
                f"num_sampled_clients={self.num_sampled_clients}; set its fraction_train accordingly"
            )
        return messages

    def _poisson_sample(self, server_round: int, messages: list[Message], grid: Grid) -> list[Message]:
        """The inner strategy's train instruction, sent to every node that a coin of bias ``q`` picks."""
        if not messages:  # the inner strategy does not train this round (fraction_train = 0)
            return []
        content = messages[0].content
        chosen = [node for node in grid.get_node_ids() if random.random() < self.sample_rate]
        log(INFO, "round %d: Poisson sampling (q=%.4f) chose %d nodes", server_round, self.sample_rate, len(chosen))
        return [Message(content=content, dst_node_id=node, message_type=MessageType.TRAIN) for node in chosen]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Clip, sum, add noise and divide (McMahan et al. 2018, Alg. 1); the inner strategy steps; account."""
        replies = list(replies)
        valid = [msg for msg in replies if not msg.has_error()]
        if len(valid) < len(replies):
            log(WARNING, "round %d: dropped %d failed replies", server_round, len(replies) - len(valid))
        if self.clipping.startswith("client"):
            valid = self._clipped_only(server_round, valid)
        if not valid and self.sampling == "fixed":
            log(WARNING, "round %d: no usable reply; the model stays as it was and the round adds no privacy cost",
                server_round)  # fmt: skip
            self.rounds_without_replies.append(server_round)
            return None, None
        for msg in valid:
            for record in msg.content.metric_records.values():
                if self.weighted_by_key in record:
                    record[self.weighted_by_key] = 1.0
        if self.adaptive is not None:
            return self._aggregate_adaptive(server_round, valid)
        noisy = self._noisy_mean(valid)
        arrays, metrics = self.strategy.aggregate_train(server_round, self._as_replies(noisy, valid))
        self.accountant.step(len(valid))
        return arrays, self._report(metrics)

    def _noisy_mean(self, replies: list[Message]) -> ArrayRecord:
        """The global arrays plus ``(sum of clipped updates) / d + N(0, (z C / m)^2)``.

        ``d`` is ``m`` with Poisson sampling (the fixed denominator: the noise on the sum is
        ``z C`` whoever replied) and the number of replies with fixed sampling (Flower's mean,
        whose noise ``z C / m`` is accounted as ``z k / m``).
        """
        broadcast = self._broadcast.to_numpy_ndarrays()
        total = [np.zeros_like(array) for array in broadcast]
        for msg in replies:
            received = next(iter(msg.content.array_records.values())).to_numpy_ndarrays()
            update = [new - old for new, old in zip(received, broadcast, strict=True)]
            norm = get_norm(update)  # clipping is a no-op on updates the clients clipped
            scale = min(1.0, self.clipping_norm / norm) if norm > 0 else 1.0
            for accumulated, part in zip(total, update, strict=True):
                accumulated += scale * part
        denominator = self.num_sampled_clients if self.sampling == "poisson" else len(replies)
        mean = [accumulated / denominator for accumulated in total]
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, self.num_sampled_clients)
        add_gaussian_noise_inplace(mean, std)
        return ArrayRecord(
            {
                key: Array(np.asarray(old + part, dtype=old.dtype))
                for key, old, part in zip(self._broadcast.keys(), broadcast, mean, strict=True)
            }
        )

    def _as_replies(self, noisy: ArrayRecord, replies: list[Message]) -> list[Message]:
        """Replies that all carry ``noisy``, so the inner strategy's mean is it and its server step sees only it.

        The replies keep their metrics (the inner strategy aggregates them as usual); a round
        without replies gets one carrier reply with weight 1 (Poisson sampling releases it too).
        """
        if not replies:
            instruction = Message(RecordDict(), dst_node_id=0, message_type=MessageType.TRAIN)
            carrier = RecordDict(
                {
                    cast(FedAvg, self.strategy).arrayrecord_key: noisy,
                    "metrics": MetricRecord({self.weighted_by_key: 1.0}),
                }
            )
            return [Message(content=carrier, reply_to=instruction)]
        for msg in replies:
            (key,) = msg.content.array_records.keys()
            msg.content[key] = noisy
        return replies

    def _aggregate_adaptive(
        self, server_round: int, replies: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower's adaptive wrapper aggregates; the round is accounted with its effective multiplier."""
        adaptive = cast(ServerSideAdaptiveClipping, self.adaptive)
        norm_before = self.current_clipping_norm
        arrays, metrics = adaptive.aggregate_train(server_round, replies)
        if arrays is None:
            return None, metrics
        z_round = dp.adaptive_round_noise_multiplier(
            adaptive.noise_multiplier,
            norm_before,
            adaptive.clipping_norm,
            len(replies),
            self.num_sampled_clients,
            adaptive.clipped_count_stddev,
        )
        self.accountant.step(len(replies), noise_multiplier=z_round)
        return arrays, self._report(metrics)

    def _report(self, metrics: MetricRecord | None) -> MetricRecord:
        """The inner strategy's metrics with the privacy spent so far."""
        report = MetricRecord(dict(metrics or {}))
        report["epsilon"] = self.accountant.epsilon()
        report["epsilon-no-amplification"] = self.accountant.epsilon_no_amplification()
        report["clipping-norm"] = self.current_clipping_norm
        log(INFO, "epsilon %.4f (delta %g) after %d rounds", report["epsilon"], self.accountant.delta,
            self.accountant.rounds)  # fmt: skip
        return report

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
                    float(np.sum((new.numpy().astype(np.float64) - old.numpy()) ** 2))
                    for new, old in zip(arrays.values(), self._broadcast.values(), strict=True)
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
        return float(self.adaptive.clipping_norm if self.adaptive is not None else self.clipping_norm)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate to the inner strategy."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Delegate to the inner strategy."""
        return self.strategy.aggregate_evaluate(server_round, list(replies))

    def summary(self) -> None:
        """Log the DP settings and the inner strategy's summary."""
        log(
            INFO,
            "\t├──> DPFedAvg: z=%g, C=%g, m=%d, q=%.4f, delta=%g, %s-side clipping, %s sampling, Opacus RDP",
            self.noise_multiplier,
            self.clipping_norm,
            self.num_sampled_clients,
            self.accountant.sample_rate,
            self.accountant.delta,
            self.clipping,
            self.sampling,
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
            # Fixed sampling: nothing was released in these rounds (the model unchanged): no privacy cost.
            "rounds_without_replies": list(self.rounds_without_replies),
            "accountant": "opacus-rdp",
            "sampling": self.sampling,
            "sampling_assumption": dp.SAMPLING_ASSUMPTIONS[self.sampling],
        }
