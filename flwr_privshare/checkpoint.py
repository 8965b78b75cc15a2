"""Per-round checkpoints of a run, so that a killed run resumes and ends with the numbers of an uninterrupted one.

After every round the server writes ``checkpoint.pt`` into the incomplete run folder (through
:func:`~flwr_privshare.results.atomic_target`, so a kill while writing leaves the previous
checkpoint intact). It holds everything the rest of the run depends on:

- the global model and Flower's :class:`~flwr.serverapp.strategy.Result` so far;
- the wrapped strategy object itself, pickled with its state: server momentum (FedAvgM), the
  DP-FedAvg accountant's history and the adaptive clipping norm, the feature-sharing decider;
- the recorder's bookkeeping (``rounds.csv`` rows, failures with reasons, ``wire.json``,
  participation) and the seconds the run has taken;
- the states of the global RNGs the server draws from: Python's ``random`` (Flower samples
  clients with it), NumPy's (Flower's DP wrappers draw their noise from it) and torch's;
- the run config and its hash: a resumed run never mixes rounds of two configs.

Client state kept in ``context.state`` is not in the checkpoint (it lives on the clients, and a
new ``flwr run`` starts with empty contexts); each protection either rebuilds it from the seed or
says why it cannot (:meth:`~flwr_privshare.protections.Protection.resume_obstacle`).
"""

from __future__ import annotations

import copyreg
import hashlib
import json
import pickle
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import Result, Strategy

from .config.checks import ConfigError
from .results import CHECKPOINT_NAME, atomic_torch_save

CHECKPOINT_FILE = CHECKPOINT_NAME
#: The run-config key that asks for a resume; it is the one key a resumed run may change.
RESUME_KEY = "resume"


def comparable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The run config without :data:`RESUME_KEY`."""
    return {key: value for key, value in config.items() if key != RESUME_KEY}


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of :func:`comparable_config`."""
    text = json.dumps(comparable_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _as_bytes(view: memoryview) -> tuple[type[bytes], tuple[bytes]]:
    return bytes, (view.tobytes(),)


class _Pickler(pickle.Pickler):
    """A pickler that also takes ``memoryview`` objects (as bytes): in a deployment Flower hands over the
    arrays of received messages as views of the transport's buffers, which ``pickle`` refuses."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dispatch_table = {**copyreg.dispatch_table, memoryview: _as_bytes}


#: The pickle module :func:`torch.save` writes a checkpoint with (``pickle`` with :class:`_Pickler`).
CHECKPOINT_PICKLE = ModuleType("flwr_privshare_checkpoint_pickle")
for _name in ("Unpickler", "load", "loads", "dump", "dumps"):
    setattr(CHECKPOINT_PICKLE, _name, getattr(pickle, _name))
CHECKPOINT_PICKLE.Pickler = _Pickler  # type: ignore[attr-defined]


def rng_states() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's global RNGs."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def restore_rng_states(states: Mapping[str, Any]) -> None:
    """The inverse of :func:`rng_states`."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


@dataclass
class RoundCheckpoint:
    """The server's state after ``server_round`` (see the module docstring).

    Attributes:
        server_round: the last round completed (its central evaluation included).
        config: the run config (without :data:`RESUME_KEY`).
        config_hash: :func:`config_hash` of ``config``.
        arrays: the global model after ``server_round``.
        result: Flower's result of rounds ``0..server_round``.
        strategy: the wrapped strategy, with its state.
        recorder: :class:`~flwr_privshare.strategies.Recorded`'s bookkeeping.
        rounds: the ``rounds.csv`` rows so far.
        rng: :func:`rng_states` after ``server_round``.
        elapsed_s: seconds the run had taken when the checkpoint was written.
    """

    server_round: int
    config: dict[str, Any]
    config_hash: str
    arrays: ArrayRecord
    result: Result
    strategy: Strategy
    recorder: dict[str, Any]
    rounds: list[dict[str, Any]]
    rng: dict[str, Any]
    elapsed_s: float

    def save(self, folder: Path) -> None:
        """Write ``checkpoint.pt`` into ``folder``, atomically."""
        atomic_torch_save(self, folder / CHECKPOINT_FILE, pickle_module=CHECKPOINT_PICKLE)

    @classmethod
    def load(cls, folder: Path) -> RoundCheckpoint:
        """The checkpoint in ``folder`` (a file this package wrote: it is a pickle, never load one from elsewhere)."""
        path = folder / CHECKPOINT_FILE
        checkpoint = torch.load(path, weights_only=False)
        if not isinstance(checkpoint, cls):
            raise ValueError(f"{path} is not a run checkpoint of flwr-privshare")
        return checkpoint

    def check_config(self, config: Mapping[str, Any], folder: Path) -> None:
        """Refuse to continue under another config, naming every key whose value differs.

        Raises:
            ConfigError: when ``config`` (without :data:`RESUME_KEY`) is not the checkpoint's.
        """
        if config_hash(config) == self.config_hash:
            return
        current = comparable_config(config)
        keys = current.keys() | self.config.keys()
        differing = sorted(key for key in keys if current.get(key) != self.config.get(key))
        changes = ", ".join(f"{key!r}: {self.config.get(key)!r} -> {current.get(key)!r}" for key in differing)
        raise ConfigError(
            f"cannot resume {folder}: its checkpoint (round {self.server_round}) was written under another "
            f"run config; differing keys: {changes}. Resume with the original values, or start a new run"
        )
