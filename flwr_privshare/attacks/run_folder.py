"""A finished run folder as an attack sees it: its parsed config, final model and the server's data.

Attacks that run after the fact (``privshare-attack``) read ``config.json`` (the run config,
its seed and the folder format), ``summary.json`` (clients, privacy sections) and ``model.pt``
(the final global model). A folder that is incomplete, lacks one of them, or was written in
another format is refused with the reason, before any work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import AppSchema, CommonSection, RunConfig, Section
from ..data import load_split, public_split
from ..models import build_model
from ..poisoning.section import DPMSection
from ..protections import ProtectionSection, registered_protections
from ..recipe.section import RecipeSection
from ..results import RUN_FOLDER_FORMAT, RunFolder
from ..summary import RunSummary, load_summary
from .base import FinishedRun
from .gan import GanSection, model_outputs_of
from .oracle import OracleSection

#: The config sections an app of this package may declare besides those of the registered protections.
APP_SECTIONS: tuple[type[Section], ...] = (
    CommonSection,
    RecipeSection,
    ProtectionSection,
    OracleSection,
    GanSection,
    DPMSection,
)
REQUIRED_FILES = ("config.json", "summary.json", "model.pt")


class RunFolderError(ValueError):
    """A folder that is not a finished run folder this version can read."""


@dataclass(frozen=True)
class LoadedRun:
    """A finished run folder, loaded: what the attacks get, and the folder's own records."""

    finished: FinishedRun
    summary: RunSummary
    config: dict[str, Any]


def known_sections() -> list[type[Section]]:
    """Every config section an app may declare: the apps' own and every registered protection's."""
    from_protections = (cls.section for cls in registered_protections().values() if cls.section is not None)
    return list(dict.fromkeys((*APP_SECTIONS, *from_protections)))


def parse_run_config(values: dict[str, Any]) -> RunConfig:
    """The run config of ``config.json``: the known sections whose keys it holds, parsed together."""
    sections = [s for s in known_sections() if s is CommonSection or set(s.declared()) <= set(values)]
    owned = {key for section in sections for key in section.declared()}
    unknown = sorted(set(values) - owned)
    if unknown:
        raise RunFolderError(f"config.json has keys this version does not know: {', '.join(unknown)}")
    return AppSchema(tuple(sections)).parse(values)


def load_run_folder(path: str | Path, data_dir: str = "") -> LoadedRun:
    """Load a finished run folder; ``data_dir`` replaces the run's ``data-dir`` (a moved data set).

    Raises:
        RunFolderError: the folder is incomplete, lacks a file, or has another format.
    """
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise RunFolderError(f"run folder {str(path)!r} does not exist")
    if folder.name.endswith(".incomplete"):
        raise RunFolderError(f"{folder} is an incomplete run (it crashed or is still running)")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise RunFolderError(f"{folder} is not a finished run folder: it has no {', '.join(missing)}")
    config = json.loads((folder / "config.json").read_text())
    if config.get("format") != RUN_FOLDER_FORMAT:
        raise RunFolderError(
            f"{folder} was written in run-folder format {config.get('format', 'none')!r}; this version "
            f"reads format {RUN_FOLDER_FORMAT} (re-run it with this version)"
        )
    values = dict(config["config"])
    if data_dir:
        values["data-dir"] = data_dir
    run = parse_run_config(values)
    common = run[CommonSection]
    summary = load_summary(folder)
    test = load_split(common.dataset, "test", common.data_dir).head(common.test_size)
    model_name = common.model_for(test.image_shape)
    model = build_model(model_name, model_outputs_of(run, test.num_classes))
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    finished = FinishedRun(
        run, model_name, model, {"plain": test}, public_split(common), summary.num_clients, RunFolder.existing(folder)
    )
    return LoadedRun(finished, summary, config)
