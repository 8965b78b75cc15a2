"""The run folder: ``config.json``, ``rounds.csv``, ``summary.json`` and plots, written atomically.

A run writes into ``<output-dir>/.<run-name>.incomplete/`` and the folder is renamed to
``<output-dir>/<run-name>/`` only by :meth:`RunFolder.finish`, so a crashed or rejected run
never leaves a folder that looks complete. :meth:`RunFolder.abort` removes it, unless it
holds a round checkpoint (:mod:`flwr_privshare.checkpoint`): then it is kept for
:meth:`RunFolder.resume`. Every file is written to a temporary name and moved into place.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from logging import WARNING
from pathlib import Path
from typing import Any

from flwr.common import log

PACKAGES = ("flwr-privshare", "flwr", "flwr-datasets", "torch", "torchvision", "numpy", "ray")
#: The round checkpoint of an unfinished run (written by :mod:`flwr_privshare.checkpoint`).
CHECKPOINT_NAME = "checkpoint.pt"
#: The layout of a run folder (``config.json``'s ``format``); tools that read folders check it.
RUN_FOLDER_FORMAT = 1


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide a result, plus Python's."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write to; it replaces ``path`` when the block ends.

    The temporary file is created like any new file, so the result gets the permissions the
    umask gives (``tempfile`` would make it private, 0600, which a shared results folder
    does not want). If the block raises, the temporary file is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_target`."""
    with atomic_target(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def atomic_torch_save(obj: object, path: Path, pickle_module: Any = None) -> None:
    """``torch.save(obj)`` to ``path``, atomically. Saved through a file handle, so the archive's inner
    folder is ``archive/`` and not the temporary file's random name: equal objects give equal bytes."""
    import pickle

    import torch

    with atomic_target(path) as temporary, temporary.open("wb") as handle:
        torch.save(obj, handle, pickle_module=pickle_module or pickle)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``rows`` as CSV with the union of their keys as columns, atomically."""
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


class RunFolder:
    """One run's results folder.

    As a context manager it aborts (removes the incomplete folder) when the block raises and
    publishes it when the block ends normally (:meth:`finish` inside the block also writes the
    summary and plots)::

        with RunFolder(output_dir, "my-run", config, seed) as folder:
            ...  # train, folder.add_round(...)
            folder.finish(summary, plots)

    Args:
        output_dir: parent folder.
        run_name: folder name; it must not exist yet.
        config: the resolved run configuration, stored in ``config.json`` with the seed
            and package versions.
        seed: the run seed.
    """

    def __init__(self, output_dir: str | Path, run_name: str, config: Mapping[str, Any], seed: int) -> None:
        self._locate(output_dir, run_name, config)
        if self.final_path.exists():
            raise FileExistsError(f"run folder {self.final_path} already exists; choose another run-name")
        if (self.path / CHECKPOINT_NAME).exists():
            raise FileExistsError(
                f"{self.path} holds the checkpoint of an unfinished run; continue it with the same run config plus "
                "resume=true, or remove that folder to start again"
            )
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        atomic_write_json(
            self.path / "config.json",
            {"format": RUN_FOLDER_FORMAT, "config": dict(config), "seed": seed, "versions": package_versions()},
        )

    def _locate(self, output_dir: str | Path, run_name: str, config: Mapping[str, Any]) -> None:
        self.final_path = Path(output_dir).expanduser().resolve() / run_name
        self.path = self.final_path.with_name(f".{run_name}.incomplete")
        self.config = dict(config)
        self.rounds: list[dict[str, Any]] = []
        #: True once a round checkpoint is in the folder: :meth:`abort` then keeps it for a resume.
        self.resumable = False

    @classmethod
    def resume(cls, output_dir: str | Path, run_name: str, config: Mapping[str, Any]) -> RunFolder:
        """The incomplete folder of ``run_name``, opened to continue the run (the caller reads its checkpoint).

        Raises:
            FileExistsError: when the run already finished.
            FileNotFoundError: when there is no incomplete folder of that name.
        """
        folder = cls.__new__(cls)
        folder._locate(output_dir, run_name, config)
        if folder.final_path.exists():
            raise FileExistsError(f"run {folder.final_path} already finished; there is nothing to resume")
        if not folder.path.is_dir():
            raise FileNotFoundError(f"no unfinished run {run_name!r} to resume: {folder.path} does not exist")
        for leftover in folder.path.glob(".*.tmp"):  # a file the killed run was writing
            leftover.unlink()
        folder.resumable = folder.has_checkpoint
        return folder

    @staticmethod
    def unfinished(output_dir: str | Path, prefix: str) -> list[str]:
        """Names of the unfinished runs in ``output_dir`` that start with ``prefix``, in name order."""
        parent = Path(output_dir).expanduser().resolve()
        names = (path.name[1 : -len(".incomplete")] for path in parent.glob(".*.incomplete") if path.is_dir())
        return sorted(name for name in names if name.startswith(prefix))

    @property
    def has_checkpoint(self) -> bool:
        """Whether the folder holds a round checkpoint."""
        return (self.path / CHECKPOINT_NAME).exists()

    @classmethod
    def existing(cls, path: str | Path) -> RunFolder:
        """A published run folder, opened to add files (attack results, figures); it is not renamed."""
        folder = cls.__new__(cls)
        folder._locate(Path(path).parent, Path(path).name, {})
        folder.final_path = folder.path = Path(path)
        return folder

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: object) -> None:
        if kind is not None:
            self.abort()
        elif not self.final_path.exists():
            self.publish()

    def add_round(self, row: Mapping[str, Any]) -> None:
        """Append one round's metrics and rewrite ``rounds.csv``."""
        self.rounds.append(dict(row))
        atomic_write_csv(self.path / "rounds.csv", self.rounds)

    def write_json(self, name: str, obj: Any) -> None:
        """Write ``<name>`` (JSON) into the run folder, atomically."""
        atomic_write_json(self.path / name, obj)

    def finish(self, summary: Mapping[str, Any], plots: Mapping[str, tuple[str, Sequence[str]]]) -> Path:
        """Write ``summary.json`` and one PNG per ``{file stem: (x column, [y columns])}``, then publish.

        Returns:
            The final run folder.
        """
        atomic_write_json(self.path / "summary.json", dict(summary))
        for stem, (x_column, columns) in plots.items():
            self._plot_rounds(stem, x_column, columns)
        return self.publish()

    def publish(self) -> Path:
        """Move the folder to its final name (without its checkpoint, which only a resume needs); return that path."""
        (self.path / CHECKPOINT_NAME).unlink(missing_ok=True)
        os.replace(self.path, self.final_path)
        return self.final_path

    def save_figure(self, stem: str, figure: Any) -> None:
        """Save a matplotlib figure as ``<stem>.png`` in the run folder, atomically, and close it."""
        import matplotlib.pyplot as plt

        try:
            with atomic_target(self.path / f"{stem}.png") as temporary:
                figure.savefig(temporary, dpi=120, format="png")
        finally:
            plt.close(figure)

    def abort(self) -> None:
        """Remove the incomplete folder (a run that failed leaves nothing behind), unless it can resume."""
        if self.resumable:
            log(WARNING, "the run stopped; %s keeps its last round checkpoint: resume with resume=true", self.path)
            return
        shutil.rmtree(self.path, ignore_errors=True)

    def _plot_rounds(self, stem: str, x_column: str, columns: Sequence[str]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for column in columns:
            points = [
                (row[x_column], row[column])
                for row in self.rounds
                if row.get(column) is not None and row.get(x_column) is not None
            ]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=column)
        if x_column == "round":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(x_column)
        ax.set_ylabel("accuracy")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
        if ax.lines:  # nothing to plot when no round released an epsilon (every client failed)
            ax.legend()
        fig.tight_layout()
        self.save_figure(stem, fig)
