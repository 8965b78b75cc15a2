"""flwr-privshare: simulate, compare and attack privacy-preserving federated image classification.

The public API, imported on first use (PEP 562) so that ``import flwr_privshare`` loads no
heavy dependency: data loading and partitioning, models and training loops, config sections,
protections and attacks and their registries, the experiment skeleton, run folders and
summaries. Strategies live in :mod:`flwr_privshare.strategies`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .apps import DPMExperiment, Experiment, FedAvgExperiment
    from .attacks import Attack, oracle_recognition, register_attack
    from .config import AppSchema, CommonSection, ConfigError, Section
    from .data import DataError, ImageDataset, client_partition, load_split, partition_rows, split_public
    from .launch import run_app
    from .models import build_model
    from .protections import Protection, register_protection
    from .results import RunFolder
    from .seeding import derive_seed, seeded
    from .summary import RunSummary, load_summary
    from .train import evaluate, make_optimizer, train
    from .visualmixer import STAdam, VisualMixer, image_vfe, visual_mix

_LAZY = {
    "DPMExperiment": ".apps",
    "Experiment": ".apps",
    "FedAvgExperiment": ".apps",
    "Attack": ".attacks",
    "oracle_recognition": ".attacks",
    "register_attack": ".attacks",
    "AppSchema": ".config",
    "CommonSection": ".config",
    "ConfigError": ".config",
    "Section": ".config",
    "DataError": ".data",
    "ImageDataset": ".data",
    "client_partition": ".data",
    "load_split": ".data",
    "partition_rows": ".data",
    "split_public": ".data",
    "run_app": ".launch",
    "build_model": ".models",
    "Protection": ".protections",
    "register_protection": ".protections",
    "RunFolder": ".results",
    "derive_seed": ".seeding",
    "seeded": ".seeding",
    "RunSummary": ".summary",
    "load_summary": ".summary",
    "evaluate": ".train",
    "make_optimizer": ".train",
    "train": ".train",
    "STAdam": ".visualmixer",
    "VisualMixer": ".visualmixer",
    "image_vfe": ".visualmixer",
    "visual_mix": ".visualmixer",
}

try:
    __version__ = version("flwr-privshare")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)


__all__ = [
    "AppSchema",
    "Attack",
    "CommonSection",
    "ConfigError",
    "DPMExperiment",
    "DataError",
    "Experiment",
    "FedAvgExperiment",
    "ImageDataset",
    "Protection",
    "RunFolder",
    "RunSummary",
    "STAdam",
    "Section",
    "VisualMixer",
    "__version__",
    "build_model",
    "client_partition",
    "derive_seed",
    "evaluate",
    "image_vfe",
    "load_split",
    "load_summary",
    "make_optimizer",
    "oracle_recognition",
    "partition_rows",
    "register_attack",
    "register_protection",
    "run_app",
    "seeded",
    "split_public",
    "train",
    "visual_mix",
]
