"""flwr-privshare: simulate, compare and attack privacy-preserving federated image classification.

The public API: data loading and partitioning, models and training loops, the VisualMixer
protection, the client and server behaviours of the Flower apps, run folders and the
oracle. Strategies live in :mod:`flwr_privshare.strategies`.
"""

from importlib.metadata import PackageNotFoundError, version

from .attacks import oracle_recognition
from .clients import train_handler, visualmixed_partition
from .config import ConfigError, ExperimentConfig
from .data import DataError, ImageDataset, load_split, partition_rows, split_public
from .launch import run_app
from .models import build_model
from .results import RunFolder
from .server import run_fedavg_experiment
from .train import evaluate, make_optimizer, train
from .visualmixer import STAdam, VisualMixer, image_vfe, visual_mix

try:
    __version__ = version("flwr-privshare")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "ConfigError",
    "DataError",
    "ExperimentConfig",
    "ImageDataset",
    "RunFolder",
    "STAdam",
    "VisualMixer",
    "__version__",
    "build_model",
    "evaluate",
    "image_vfe",
    "load_split",
    "make_optimizer",
    "oracle_recognition",
    "partition_rows",
    "run_app",
    "run_fedavg_experiment",
    "split_public",
    "train",
    "train_handler",
    "visual_mix",
    "visualmixed_partition",
]
