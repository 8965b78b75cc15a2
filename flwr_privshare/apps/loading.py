"""Find the experiment and the declared run config of a Flower App folder (ours or anyone's)."""

from __future__ import annotations

import importlib
import sys
import tomllib
from pathlib import Path
from typing import Any

from .experiment import Experiment


def app_config(app_dir: str | Path) -> dict[str, Any]:
    """The ``[tool.flwr.app.config]`` table of an app's ``pyproject.toml`` (the keys Flower accepts)."""
    project = tomllib.loads((Path(app_dir) / "pyproject.toml").read_text())
    return dict(project["tool"]["flwr"]["app"].get("config", {}))


def load_experiment(app_dir: str | Path) -> Experiment | None:
    """The :class:`Experiment` behind an app's ServerApp, or None for an app not built on the skeleton."""
    project = tomllib.loads((Path(app_dir) / "pyproject.toml").read_text())
    module_name = project["tool"]["flwr"]["app"]["components"]["serverapp"].split(":")[0]
    folder = str(Path(app_dir).resolve())
    sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    finally:
        sys.path.remove(folder)
    return next((value for value in vars(module).values() if isinstance(value, Experiment)), None)
