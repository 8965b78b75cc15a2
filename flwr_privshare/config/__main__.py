"""Print the run-config key reference of one or more apps: ``python -m flwr_privshare.config APP_DIR ...``.

``docs/configuration.md`` is this command's output for the three simulations (a test keeps it in step).
With ``--toml APP_DIR`` it prints the app's ``[tool.flwr.app.config]`` table instead: every
declared key at its default, which is what the app's ``pyproject.toml`` must hold.
"""

from __future__ import annotations

import sys
from pathlib import Path


def reference(app_dirs: list[str]) -> str:
    """The Markdown key reference of every app in ``app_dirs``."""
    from ..apps.loading import load_experiment

    parts = [
        "# Run-config keys",
        "",
        "Generated from the apps' config sections by `python -m flwr_privshare.config "
        + " ".join(app_dirs)
        + "`. Every key is validated before any work starts; a key an app does not declare is refused.",
        "",
    ]
    for app_dir in app_dirs:
        experiment = load_experiment(app_dir)
        if experiment is None:
            raise SystemExit(f"{app_dir} is not built on flwr_privshare.apps.Experiment")
        parts += [f"## `{Path(app_dir).as_posix()}`", "", experiment.schema.reference()]
    return "\n".join(parts).rstrip() + "\n"


def toml(app_dir: str) -> str:
    """The ``[tool.flwr.app.config]`` table of the app in ``app_dir``."""
    from ..apps.loading import load_experiment

    experiment = load_experiment(app_dir)
    if experiment is None:
        raise SystemExit(f"{app_dir} is not built on flwr_privshare.apps.Experiment")
    return experiment.schema.toml()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    if sys.argv[1] == "--toml":
        if len(sys.argv) != 3:
            raise SystemExit(__doc__)
        sys.stdout.write(toml(sys.argv[2]))
    else:
        sys.stdout.write(reference(sys.argv[1:]))
