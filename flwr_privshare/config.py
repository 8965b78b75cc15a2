"""The run configuration: every ``--run-config`` key, its default, its type and its check.

Both the ServerApp and the ClientApp parse ``context.run_config`` through
:meth:`ExperimentConfig.from_run_config`, so bad input fails with a message that names the
key and what is allowed before any data is loaded or any round starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .data import PARTITIONERS
from .models import MODEL_NAMES, build_model
from .poisoning.reconstructor import CHECK_RECONSTRUCTORS, ENSEMBLE_RECONSTRUCTORS, RECONSTRUCTORS
from .train import OPTIMIZERS
from .visualmixer.mixer import is_power_of_two

PROTECTIONS = ("none", "visualmixer", "dp-sgd", "visualmixer+dp-sgd", "dp-fedavg")
DP_ACCOUNTANTS = ("rdp", "prv")
DP_CLIPPING = ("server", "client", "server-adaptive", "client-adaptive")
DPM_BOOTSTRAPS = ("server", "fedavg")


class ConfigError(ValueError):
    """A run-config value that is not allowed."""


@dataclass(frozen=True)
class ExperimentConfig:
    """Validated run configuration (field ``learning_rate`` is run-config key ``learning-rate``).

    Attributes:
        num_server_rounds: federated rounds.
        local_epochs: epochs per client per round.
        batch_size: client batch size.
        learning_rate: client learning rate.
        optimizer: one of :data:`~flwr_privshare.train.OPTIMIZERS`.
        model: one of :data:`~flwr_privshare.models.MODEL_NAMES`, or "auto" (by image shape).
        dataset: Hugging Face hub id, used when ``data_dir`` is empty.
        data_dir: local folder with ``train.parquet`` and ``test.parquet``.
        partitioner: "iid" or "dirichlet".
        dirichlet_alpha: concentration of the Dirichlet partitioner.
        seed: fixes partitions, client RNGs, model initialisation and the server's RNGs.
        output_dir: folder that receives the run folder (use an absolute path with ``flwr run``).
        run_name: name of the run folder; empty: derived from method, data set, seed and time.
        protection: one of :data:`PROTECTIONS`.
        fraction_train: fraction of clients sampled per round.
        public_size: rows of the training split kept for the server (never given to a client).
        samples_per_client: cap on each client's partition (0: no cap).
        test_size: cap on the test rows used for central evaluation (0: all).
        vim_window_min: VisualMixer's smallest window (power of two).
        vim_window_max: VisualMixer's largest window (power of two).
        vim_channel_shuffle: also permute channels independently.
        oracle_epochs: epochs of the oracle classifier trained on the public split (0: skip).
        noise_multiplier: DP noise multiplier ``z`` (DP-SGD: per batch; DP-FedAvg: per round).
        max_grad_norm: DP-SGD per-example gradient clipping norm.
        clipping_norm: DP-FedAvg client-update clipping norm ``S``.
        delta: the delta of every reported epsilon.
        target_epsilon: when positive, the noise multiplier is chosen so that the whole run
            stays within this epsilon (per client for DP-SGD, per user for DP-FedAvg).
        dp_accountant: DP-SGD accountant, "rdp" or "prv" (DP-FedAvg always uses RDP).
        dp_clipping: DP-FedAvg clipping on the "server" or on the "client", fixed, or adaptive
            (Andrew et al. 2021) with "server-adaptive" / "client-adaptive".
        dp_clipped_count_stddev: adaptive clipping's noise std on the clipped-client count
            (0: Flower's default, sampled clients / 20).
        dpm_hook: hook point that splits the model into featurizer and decider (DPM app).
        dpm_reconstructor: the reconstructor the DPMs are trained against, one of
            :data:`~flwr_privshare.poisoning.RECONSTRUCTORS`.
        dpm_ensemble: comma-separated further straw men from
            :data:`~flwr_privshare.poisoning.ENSEMBLE_RECONSTRUCTORS` the DPMs are trained
            against together with ``dpm_reconstructor`` ("": the paper's single straw man; see
            :func:`~flwr_privshare.poisoning.train_dpm`).
        dpm_ensemble_instances: trained instances of each ``dpm_ensemble`` architecture, from
            seeds of their own (1: one each). A DPM trained against few instances fools those
            instances rather than the architecture; more instances were meant to transfer
            better, but measured did not (README, "Further straw men").
        dpm_lambda: weight of the SSIM term in the DPM loss (Eq. 3).
        dpm_feature_noise: relative std of the noise on the straw man's input in the DPM
            loss's SSIM term (0: the paper's loss; see :func:`~flwr_privshare.poisoning.train_dpm`).
        dpm_epochs: local DPM training epochs per round.
        dpm_warmup_epochs: further epochs a fresh DPM (a client's first, or a redraw) trains
            before it shares: without them, features shared in a client's first round come
            from a DPM trained ``dpm_epochs`` only, which leaks more than later ones.
        dpm_learning_rate: Adam's learning rate for the DPM.
        dpm_shared_samples: poisoned features each client shares per round (0: all).
        dpm_check_reconstructor: the reconstructor, one of
            :data:`~flwr_privshare.poisoning.CHECK_RECONSTRUCTORS`, a client checks its DPM with
            before it shares features ("": no self-check; see
            :mod:`~flwr_privshare.poisoning.self_check`).
        dpm_check_threshold: the largest |SSIM| of the check reconstructor on the client's
            own images at which the client shares its features.
        dpm_check_draws: DPMs a client draws per round before it withholds its features.
        dpm_bootstrap: how Phi is trained before feature sharing, "server" (on the public
            split) or "fedavg" (plain FedAvg rounds on the clients).
        dpm_bootstrap_epochs: epochs on the public split ("server") or FedAvg rounds ("fedavg").
        reconstructor_epochs: epochs of reconstructor training on the public split.
        refine_epochs: epochs of decider refinement on the pooled features per round.
    """

    num_server_rounds: int = 5
    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.05
    optimizer: str = "sgd"
    model: str = "auto"
    dataset: str = "uoft-cs/cifar10"
    data_dir: str = ""
    partitioner: str = "iid"
    dirichlet_alpha: float = 0.5
    seed: int = 42
    output_dir: str = "~/flwr-privshare-results"
    run_name: str = ""
    protection: str = "visualmixer"
    fraction_train: float = 1.0
    public_size: int = 5000
    samples_per_client: int = 0
    test_size: int = 0
    vim_window_min: int = 2
    vim_window_max: int = 8
    vim_channel_shuffle: bool = True
    oracle_epochs: int = 3
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    clipping_norm: float = 0.5
    delta: float = 1e-5
    target_epsilon: float = 0.0
    dp_accountant: str = "rdp"
    dp_clipping: str = "server"
    dp_clipped_count_stddev: float = 0.0
    dpm_hook: str = "pool1"
    dpm_reconstructor: str = "px2s2"
    dpm_ensemble: str = ""
    dpm_ensemble_instances: int = 1
    dpm_lambda: float = 1.0
    dpm_feature_noise: float = 0.0
    dpm_epochs: int = 1
    dpm_warmup_epochs: int = 0
    dpm_learning_rate: float = 1e-3
    dpm_shared_samples: int = 1000
    dpm_check_reconstructor: str = ""
    dpm_check_threshold: float = 0.2
    dpm_check_draws: int = 3
    dpm_bootstrap: str = "server"
    dpm_bootstrap_epochs: int = 5
    reconstructor_epochs: int = 5
    refine_epochs: int = 1

    @classmethod
    def keys(cls) -> list[str]:
        """All run-config keys (kebab-case)."""
        return [field.name.replace("_", "-") for field in dataclasses.fields(cls)]

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> ExperimentConfig:
        """Parse and validate a Flower run config; unset keys take their defaults.

        Raises:
            ConfigError: naming the key and what is allowed.
        """
        allowed = set(cls.keys())
        unknown = sorted(set(run_config) - allowed)
        if unknown:
            raise ConfigError(f"unknown run-config key(s) {unknown}; allowed keys: {sorted(allowed)}")
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            key = field.name.replace("_", "-")
            if key in run_config:
                values[field.name] = _coerce(key, run_config[key], type(field.default))
        config = cls(**values)
        config.validate()
        return config

    @property
    def ensemble_names(self) -> list[str]:
        """The names in ``dpm_ensemble``, in order."""
        return [name.strip() for name in self.dpm_ensemble.split(",")] if self.dpm_ensemble.strip() else []

    def to_run_config(self) -> dict[str, Any]:
        """The config as kebab-case run-config keys."""
        return {field.name.replace("_", "-"): getattr(self, field.name) for field in dataclasses.fields(self)}

    def validate(self) -> None:
        """Check every value that does not depend on the data."""
        for key in ("num-server-rounds", "local-epochs", "batch-size"):
            _require(self._get(key) > 0, key, self._get(key), "a positive integer")
        for key in ("dpm-epochs", "dpm-bootstrap-epochs", "reconstructor-epochs", "refine-epochs"):
            _require(self._get(key) > 0, key, self._get(key), "a positive integer")
        _require(self.dpm_lambda >= 0, "dpm-lambda", self.dpm_lambda, "a non-negative number")
        _require(self.dpm_feature_noise >= 0, "dpm-feature-noise", self.dpm_feature_noise, "a non-negative number")
        _require(self.dpm_learning_rate > 0, "dpm-learning-rate", self.dpm_learning_rate, "a positive number")
        _require(self.dpm_bootstrap in DPM_BOOTSTRAPS, "dpm-bootstrap", self.dpm_bootstrap, f"one of {DPM_BOOTSTRAPS}")
        _require(
            self.dpm_reconstructor in RECONSTRUCTORS,
            "dpm-reconstructor",
            self.dpm_reconstructor,
            f"one of {RECONSTRUCTORS}",
        )
        for name in self.ensemble_names:
            _require(
                name in ENSEMBLE_RECONSTRUCTORS and self.ensemble_names.count(name) == 1,
                "dpm-ensemble",
                self.dpm_ensemble,
                f"'' or distinct comma-separated names from {ENSEMBLE_RECONSTRUCTORS}",
            )
        _require(
            self.dpm_ensemble_instances == 1 or (self.dpm_ensemble_instances > 1 and bool(self.ensemble_names)),
            "dpm-ensemble-instances",
            self.dpm_ensemble_instances,
            "a positive integer, and 1 when dpm-ensemble is ''",
        )
        _require(
            self.dpm_check_reconstructor in ("", *CHECK_RECONSTRUCTORS),
            "dpm-check-reconstructor",
            self.dpm_check_reconstructor,
            f"one of {CHECK_RECONSTRUCTORS} or '' (no self-check)",
        )
        _require(
            self.dpm_check_reconstructor not in self.ensemble_names,
            "dpm-check-reconstructor",
            self.dpm_check_reconstructor,
            f"a reconstructor the DPMs are not trained against (dpm-ensemble is {self.dpm_ensemble!r})",
        )
        _require(
            0 < self.dpm_check_threshold <= 1, "dpm-check-threshold", self.dpm_check_threshold, "a number in (0, 1]"
        )
        _require(self.dpm_check_draws > 0, "dpm-check-draws", self.dpm_check_draws, "a positive integer")
        for key in (
            "public-size",
            "samples-per-client",
            "test-size",
            "oracle-epochs",
            "dpm-shared-samples",
            "dpm-warmup-epochs",
        ):
            _require(self._get(key) >= 0, key, self._get(key), "a non-negative integer")
        _require(self.learning_rate > 0, "learning-rate", self.learning_rate, "a positive number")
        _require(self.dirichlet_alpha > 0, "dirichlet-alpha", self.dirichlet_alpha, "a positive number")
        for key in ("noise-multiplier", "max-grad-norm", "clipping-norm"):
            _require(self._get(key) > 0, key, self._get(key), "a positive number")
        _require(0 < self.delta < 1, "delta", self.delta, "a number in (0, 1)")
        _require(
            self.target_epsilon >= 0, "target-epsilon", self.target_epsilon, "non-negative (0: use noise-multiplier)"
        )
        _require(self.dp_accountant in DP_ACCOUNTANTS, "dp-accountant", self.dp_accountant, f"one of {DP_ACCOUNTANTS}")
        _require(
            self.dp_clipped_count_stddev >= 0,
            "dp-clipped-count-stddev",
            self.dp_clipped_count_stddev,
            "a non-negative number (0: Flower's default)",
        )
        _require(self.dp_clipping in DP_CLIPPING, "dp-clipping", self.dp_clipping, f"one of {DP_CLIPPING}")
        _require(0 < self.fraction_train <= 1, "fraction-train", self.fraction_train, "a number in (0, 1]")
        _require(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {OPTIMIZERS}")
        _require(self.protection in PROTECTIONS, "protection", self.protection, f"one of {PROTECTIONS}")
        _require(self.partitioner in PARTITIONERS, "partitioner", self.partitioner, f"one of {PARTITIONERS}")
        models = ("auto", *MODEL_NAMES)
        _require(self.model in models, "model", self.model, f"one of {models}")
        _require(bool(self.dataset or self.data_dir), "dataset", self.dataset, "a hub id when data-dir is empty")
        _require(bool(self.output_dir), "output-dir", self.output_dir, "a folder path")
        for key in ("vim-window-min", "vim-window-max"):
            _require(is_power_of_two(self._get(key)), key, self._get(key), "a power of two (1, 2, 4, 8, ...)")
        _require(
            self.vim_window_min <= self.vim_window_max,
            "vim-window-min",
            self.vim_window_min,
            f"at most vim-window-max ({self.vim_window_max})",
        )

    def validate_dpm_hook(self, model_name: str) -> None:
        """Check ``dpm-hook`` against the hook points of the model the run uses."""
        points = tuple(build_model(model_name).hook_points)
        _require(self.dpm_hook in points, "dpm-hook", self.dpm_hook, f"one of {points} for model {model_name!r}")

    def validate_image_shape(self, image_shape: tuple[int, int, int]) -> None:
        """Check the values that depend on the images (window sizes against the image size)."""
        side = min(image_shape[1:])
        _require(
            self.vim_window_max <= side,
            "vim-window-max",
            self.vim_window_max,
            f"at most the image size {image_shape[1]}x{image_shape[2]}",
        )

    @property
    def uses_visualmixer(self) -> bool:
        """Whether clients shuffle their images with VisualMixer."""
        return self.protection in ("visualmixer", "visualmixer+dp-sgd")

    @property
    def uses_dp_sgd(self) -> bool:
        """Whether clients train with DP-SGD."""
        return self.protection in ("dp-sgd", "visualmixer+dp-sgd")

    def _get(self, key: str) -> Any:
        return getattr(self, key.replace("-", "_"))


def _require(condition: bool, key: str, value: object, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"run-config key {key!r} is {value!r}; it must be {allowed}")


def _coerce(key: str, value: object, kind: type) -> Any:
    """Convert a run-config value to the field's type, refusing lossy conversions."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and is_number and float(value).is_integer():  # type: ignore[arg-type]
        return int(value)  # type: ignore[call-overload]
    if kind is float and is_number:
        return float(value)  # type: ignore[arg-type]
    if kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"run-config key {key!r} is {value!r}; it must be of type {kind.__name__}")


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from the run seed and a purpose (e.g. ``"vim", partition_id``)."""
    text = ":".join(str(part) for part in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global RNG seeded to ``seed``, then restore its state.

    For module initialisation, which draws from the global RNG: a model built inside
    ``seeded(derive_seed(run_seed, purpose))`` is the same in every run with that seed,
    wherever it is built (the ServerApp or a Ray actor).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
