"""The ServerApp behaviour rejects bad input before any round and leaves no run folder."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from flwr.app import Context, RecordDict
from flwr.serverapp import Grid

from flwr_privshare.config import ConfigError
from flwr_privshare.data import DataError
from flwr_privshare.environment import EnvironmentCheckError

from .experiments import DPM, VISUALMIXER


class UntouchableGrid:
    """A grid that fails the test if the server tries to talk to any client."""

    def __getattr__(self, name: str) -> None:
        pytest.fail(f"the server used the grid ({name}) before validating its input")


def start(tmp_path: Path, **run_config: object) -> None:
    run_config = {"output-dir": str(tmp_path), **run_config}
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)  # type: ignore[arg-type]
    VISUALMIXER.run(cast(Grid, UntouchableGrid()), context)


@pytest.mark.parametrize(
    ("overrides", "error", "pattern"),
    [
        ({"data-dir": "/nonexistent/cifar"}, EnvironmentCheckError, "data-dir /nonexistent/cifar is not a readable"),
        ({"data-dir": "/"}, EnvironmentCheckError, "data-dir / holds neither train.parquet and test.parquet nor"),
        ({"vim-window-max": 32, "dataset-folder": "mnist"}, ConfigError, "must be at most the image size 28x28"),
        ({"public-size": 10**6}, DataError, r"public-size must be in \[0, 60000\)"),
        ({"num-server-rounds": -2}, ConfigError, "'num-server-rounds' is -2"),
        ({"protection": "dpm"}, ConfigError, "'protection' is 'dpm'"),
        (
            {"protection": "dp-sgd"},
            ConfigError,
            "'dp-sgd' needs the Differential privacy keys, which this app does not",
        ),
        ({"run-name": "../x"}, ConfigError, "'run-name' is '../x'; it must be a folder name"),
        ({"seed": -1}, ConfigError, r"'seed' is -1; it must be an integer in \[0, 4294967295\]"),
    ],
)
def test_bad_input_fails_before_any_round(
    tmp_path: Path, data_root: Path, overrides: dict[str, object], error: type[Exception], pattern: str
) -> None:
    overrides = dict(overrides)
    folder = overrides.pop("dataset-folder", "mnist")
    config = {"data-dir": str(data_root / str(folder)), **overrides}
    with pytest.raises(error, match=pattern):
        start(tmp_path, **config)
    assert list(tmp_path.iterdir()) == []


def test_the_dpm_app_refuses_a_bad_hook_before_any_round(tmp_path: Path, data_root: Path) -> None:
    run_config = {"output-dir": str(tmp_path), "data-dir": str(data_root / "mnist"), "dpm-hook": "layer4"}
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'dpm-hook' is 'layer4'; it must be one of"):
        DPM.run(cast(Grid, UntouchableGrid()), context)
    assert list(tmp_path.iterdir()) == []
