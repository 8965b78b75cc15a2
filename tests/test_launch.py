"""privshare-run checks the run config against the app before it submits, shows Flower's own refusals, and
stops its run and everything the run started when it is interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from flwr_privshare.config import ConfigError
from flwr_privshare.launch import (
    LocalSuperLink,
    SubmissionError,
    _flwr_json,
    _running,
    check_run_config,
    format_run_config,
)

from .experiments import SIMULATIONS

FOREIGN_PYPROJECT = """
[tool.flwr.app]
publisher = "someone"
[tool.flwr.app.components]
serverapp = "foreign_app.server_app:app"
clientapp = "foreign_app.client_app:app"
[tool.flwr.app.config]
num-server-rounds = 3
fraction-evaluate = 0.5
"""


def test_an_undeclared_key_is_refused_with_the_closest_declared_one() -> None:
    with pytest.raises(
        ConfigError, match="unknown run-config key 'num-rounds' \\(did you mean 'num-server-rounds'\\?\\)"
    ):
        check_run_config(SIMULATIONS / "visualmixer_cifar", 'num-rounds=3 protection="none"')


def test_values_are_validated_by_the_apps_sections_before_submission() -> None:
    with pytest.raises(ConfigError, match="'noise-multiplier' is inf; it must be a finite number"):
        check_run_config(SIMULATIONS / "dp_fedavg_cifar", {"noise-multiplier": float("inf")})
    assert check_run_config(SIMULATIONS / "dp_fedavg_cifar", "target-epsilon=8.0") == {"target-epsilon": 8.0}


def test_a_foreign_app_is_checked_against_its_declared_keys(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(FOREIGN_PYPROJECT)
    (tmp_path / "foreign_app").mkdir()
    (tmp_path / "foreign_app" / "__init__.py").write_text("")
    (tmp_path / "foreign_app" / "server_app.py").write_text("app = object()\n")
    assert check_run_config(tmp_path, {"fraction-evaluate": 0.1}) == {"fraction-evaluate": 0.1}
    with pytest.raises(ConfigError, match="'fraction-evalute' \\(did you mean 'fraction-evaluate'\\?\\)"):
        check_run_config(tmp_path, {"fraction-evalute": 0.1})


def test_flowers_own_refusal_is_raised_with_its_message(tmp_path: Path) -> None:
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "home")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with pytest.raises(SubmissionError, match=r"(?s)flwr run was refused.*Failed to load Flower App configuration"):
        _flwr_json(["run", str(tmp_path / "missing-app")], env, "run-id")


def test_the_command_exits_2_naming_the_key_before_anything_starts() -> None:
    command = [str(Path(sys.executable).parent / "privshare-run"), str(SIMULATIONS / "visualmixer_cifar")]
    done = subprocess.run([*command, "--run-config", "vim-window-max=1"], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "privshare-run: run-config key 'vim-window-max' is 1; it must be a power of two of at least 2" in done.stderr


def test_a_slow_local_superlink_is_given_more_tries_and_other_refusals_none(monkeypatch: pytest.MonkeyPatch) -> None:
    import flwr_privshare.launch as launch

    answers = [
        SubmissionError("flwr run was refused (exit 0): Failed to start local SuperLink within 15s."),
        {"run-id": 7},
    ]
    calls: list[list[str]] = []

    def fake(args: list[str], env: object, expect: str) -> dict:  # type: ignore[type-arg]
        calls.append(args)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(launch, "_flwr_json", fake)
    assert launch._submit(["run", "app"], {}, retry_after_s=0) == 7 and len(calls) == 2
    answers[:] = [SubmissionError("flwr run was refused (exit 1): Failed to load Flower App configuration")]
    with pytest.raises(SubmissionError, match="Failed to load"):
        launch._submit(["run", "app"], {}, retry_after_s=0)
    answers[:] = [SubmissionError(f"x: {launch.SLOW_SUPERLINK}")] * launch.SUBMISSION_ATTEMPTS
    with pytest.raises(SubmissionError, match=launch.SLOW_SUPERLINK):
        launch._submit(["run", "app"], {}, retry_after_s=0)
    assert not answers


def test_two_local_superlinks_run_side_by_side_and_stop_with_their_blocks() -> None:
    def running(port: int) -> list[str]:
        found = subprocess.run(["pgrep", "-af", f"flower-superlink.*{port}"], capture_output=True, text=True)
        return found.stdout.splitlines()

    with LocalSuperLink() as first, LocalSuperLink() as second:
        for link in (first, second):
            env = {**os.environ, **link.environ()}
            env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
            assert _flwr_json(["ls"], env, "runs")["runs"] == []  # its own SuperLink, started now, ran nothing
        for link in (first, second):
            (process,) = running(link.control_port)
            assert f"127.0.0.1:{link.control_port}" in process and f"--port {link.port}" in process
        assert {first.port, first.control_port}.isdisjoint({second.port, second.control_port})
    assert not running(first.control_port) and not running(second.control_port)


def marked_processes(marker: str) -> list[str]:
    """The command lines of the live processes (not this one) whose environment holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes() and _running(int(proc.name)):
                found.append((proc / "cmdline").read_text().replace("\0", " "))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def test_a_terminated_command_stops_its_run_and_its_superlink_stops_everything_below_it(
    data_root: Path, tmp_path: Path
) -> None:
    # Round 1 of the faulty app's 2 clients never ends (partition 0 sleeps 10 minutes in it). SIGTERM to
    # privshare-run must stop the run on the SuperLink (which lives on), and the SuperLink's stop must
    # leave no process behind: not its SuperExec, not the simulation, not Ray's.
    marker = uuid.uuid4().hex
    config = {
        "dataset": "ylecun/mnist",
        "data-dir": str(data_root / "mnist"),
        "output-dir": str(tmp_path),
        "samples-per-client": 32,
        "test-size": 64,
        "public-size": 0,
        "sleep-partition": 0,
        "sleep-seconds": 600.0,
        "sleep-round": 1,
    }
    command = [str(Path(sys.executable).parent / "privshare-run"), str(Path(__file__).parent / "faulty_app")]
    command += ["--run-config", format_run_config(config), "--federation-config", "num-supernodes=2"]
    with LocalSuperLink() as link:
        env = {**os.environ, **link.environ(), "PRIVSHARE_TEST_MARKER": marker}
        with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as run:
            assert run.stdout is not None
            for line in run.stdout:
                if "configure_train" in line:  # round 1 is under way
                    break
            while not any("ClientAppActor" in line for line in marked_processes(marker)):
                assert run.poll() is None, "the run ended before its clients started"
                time.sleep(0.5)
            started = " ".join(marked_processes(marker))
            assert all(name in started for name in ("flower-superlink", "flwr-simulation", "raylet", "gcs_server"))
            run.send_signal(signal.SIGTERM)
            output, _ = run.communicate(timeout=120)
        assert run.returncode == 130, output[-3000:]
        assert "privshare-run: interrupted (signal SIGTERM); the run was stopped" in output
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        (listed,) = _flwr_json(["ls"], env, "runs")["runs"]
        assert listed["status"] == "finished:stopped"
    assert marked_processes(marker) == []
    assert not list(tmp_path.glob("*/summary.json"))
