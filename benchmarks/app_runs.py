"""One table row = one ``flwr run`` of a project app, through :func:`flwr_privshare.launch.run_app`."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from flwr_privshare.launch import RunConfigValue, run_app
from flwr_privshare.results import CHECKPOINT_NAME
from flwr_privshare.summary import RunSummary, load_summary

SIMULATIONS = Path(__file__).resolve().parents[1] / "simulations"
STUDY_RUN_TIMEOUT_S = 8 * 3600.0


def app_defaults(app: str) -> dict[str, Any]:
    """The run config in ``simulations/<app>/pyproject.toml``."""
    pyproject = tomllib.loads((SIMULATIONS / app / "pyproject.toml").read_text())
    defaults: dict[str, Any] = pyproject["tool"]["flwr"]["app"]["config"]
    return defaults


def run_summary(
    app: str, name: str, config: dict[str, RunConfigValue], num_clients: int, output_dir: Path
) -> RunSummary:
    """Run ``simulations/<app>`` as run folder ``name`` under ``output_dir``; return its summary.

    A finished run folder of that name is read instead of run again, and an unfinished one with a
    round checkpoint is resumed (``resume = true``), so an interrupted study continues where it
    stopped (delete a folder to run it again).

    Raises:
        SystemExit: the run did not complete (its log tail is in the message).
    """
    if (output_dir / name / "summary.json").is_file():
        return load_summary(output_dir / name)
    config = {**config, "output-dir": str(output_dir.resolve()), "run-name": name}
    if (output_dir / f".{name}.incomplete" / CHECKPOINT_NAME).is_file():
        config["resume"] = True
    federation = f"num-supernodes={num_clients} client-resources-num-cpus=1"
    # A study row may run for hours (a DPM run and its audit on 2 shared cores took over one).
    outcome = run_app(SIMULATIONS / app, config, federation, isolated=True, timeout_s=STUDY_RUN_TIMEOUT_S)
    if not outcome.completed:
        raise SystemExit(f"{name}: {outcome.status}\n{outcome.log[-3000:]}")
    return load_summary(output_dir / name)


def command_line(module: str, arguments: dict[str, Any]) -> str:
    """The ``python -m`` command that reproduces a benchmark run from its parsed arguments (a True flag bare)."""
    options = " ".join(
        f"--{key.replace('_', '-')}" + ("" if value is True else f" {value}")
        for key, value in arguments.items()
        if value
    )
    return f"python -m {module} {options}"
