"""Checks of the machine a run is about to use, before any training: every failure names the path.

A sweep of hundreds of runs should not learn after an hour of training that its output folder
is read-only, that the disk is full, or that a data file is truncated. The ServerApp runs
these checks first (:meth:`~flwr_privshare.apps.Experiment.run`): output folder writable,
data folder readable, and enough free disk for the files the run will write.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import torch
from torch import nn

from .data.datasets import UNSPLIT_FILE

#: Bytes a run folder needs besides its model files: CSV, JSON, plots, the GAN and DPM figures.
FOLDER_OVERHEAD_BYTES = 64 * 2**20
PARQUET_MAGIC = b"PAR1"


class EnvironmentCheckError(OSError):
    """The machine cannot hold or feed the run; the message names the path and what is wrong."""


def check_output_dir(output_dir: str | Path) -> Path:
    """Create ``output_dir`` if needed and write (then remove) a probe file in it; return the resolved folder."""
    folder = Path(output_dir).expanduser().resolve()
    probe = folder / f".write-check-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise EnvironmentCheckError(f"output-dir {folder} cannot be written: {error.strerror or error}") from error
    return folder


def check_data_dir(data_dir: str) -> None:
    """Every parquet file of ``data_dir`` can be opened and starts like a parquet file ("" : the hub is used)."""
    if not data_dir:
        return
    folder = Path(data_dir).expanduser()
    if not folder.is_dir() or not os.access(folder, os.R_OK | os.X_OK):
        raise EnvironmentCheckError(f"data-dir {folder} is not a readable folder")
    files = [folder / name for name in ("train.parquet", "test.parquet", UNSPLIT_FILE) if (folder / name).exists()]
    if not files:
        raise EnvironmentCheckError(
            f"data-dir {folder} holds neither train.parquet and test.parquet nor {UNSPLIT_FILE}"
        )
    for path in files:
        try:
            with path.open("rb") as handle:
                start = handle.read(len(PARQUET_MAGIC))
                handle.seek(-len(PARQUET_MAGIC), os.SEEK_END)
                end = handle.read(len(PARQUET_MAGIC))
        except OSError as error:
            raise EnvironmentCheckError(f"data file {path} cannot be read: {error.strerror or error}") from error
        if start != PARQUET_MAGIC or end != PARQUET_MAGIC:
            raise EnvironmentCheckError(f"data file {path} cannot be read: it is not a (complete) parquet file")


def expected_run_bytes(model: nn.Module, checkpoints: bool) -> int:
    """What a run folder of ``model`` needs at most: ``model.pt``, and with checkpoints the checkpoint and its
    temporary copy, each with up to three model-sized arrays (global model, result, server momentum), plus
    :data:`FOLDER_OVERHEAD_BYTES`."""
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values() if isinstance(t, torch.Tensor))
    copies = 1 + (2 * 3 if checkpoints else 0)
    return copies * model_bytes + FOLDER_OVERHEAD_BYTES


def check_free_disk(output_dir: str | Path, needed_bytes: int) -> None:
    """Refuse to start when the disk of ``output_dir`` has less than ``needed_bytes`` free."""
    folder = Path(output_dir).expanduser().resolve()
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise EnvironmentCheckError(
            f"output-dir {folder} has {free / 2**20:.1f} MiB free; the run needs about "
            f"{needed_bytes / 2**20:.1f} MiB for its results and checkpoints"
        )
