"""Run a Flower App with ``flwr run``, wait for it, print its log, and fail when it fails.

``flwr run`` (Flower 1.41) submits the run to a local SuperLink and returns at once, and
neither ``--stream`` nor ``flwr log`` reflect a failed run in their exit code: the run's
status is only visible in ``flwr ls``. Scripts, tests and sweeps therefore go through
:func:`run_app`, which submits, polls the status, prints the log and returns the outcome.

Before it submits, the run config is checked against the app: a key the app's
``pyproject.toml`` does not declare is refused, naming the closest declared key, and for an
app built on :class:`~flwr_privshare.apps.Experiment` every value is validated by the app's
config sections. When Flower refuses a submission, its own error is raised.

It always sets ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` (the app runs in this
environment; Flower must not reinstall torch per run) and puts this interpreter's
``bin`` on ``PATH`` (``flwr run`` starts ``flower-superlink`` by name). ``isolated=True``
uses a private ``FLWR_HOME`` and port and stops that SuperLink afterwards, so tests do not
touch a user's SuperLink.

    privshare-run simulations/visualmixer_cifar --run-config 'num-server-rounds=2' \
        --federation-config 'num-supernodes=10 client-resources-num-cpus=1'
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

RunConfigValue = bool | int | float | str


@dataclass(frozen=True)
class RunOutcome:
    """The end of a ``flwr run``: its id, final status (e.g. ``finished:completed``) and log."""

    run_id: int
    status: str
    log: str

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"


def format_run_config(values: Mapping[str, RunConfigValue]) -> str:
    """``{"a": 1, "b": "x", "c": True}`` -> ``a=1 b="x" c=true`` (Flower's TOML-like syntax)."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)
        else:
            text = repr(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that are free now (held open together while chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


class SubmissionError(RuntimeError):
    """Flower refused a ``flwr`` command; the message is Flower's own."""


#: Flower's words when ``flwr run`` gave up waiting for the local SuperLink it started (15 s), which happens on a
#: busy machine; the SuperLink usually comes up a little later, so the submission is tried again.
SLOW_SUPERLINK = "Failed to start local SuperLink"
SUBMISSION_ATTEMPTS = 3


def _flwr_json(args: list[str], env: Mapping[str, str], expect: str) -> dict:  # type: ignore[type-arg]
    """Run ``flwr <args> --format json`` and parse the JSON object it prints; it must hold ``expect``."""
    done = subprocess.run(["flwr", *args, "--format", "json"], env=env, capture_output=True, text=True, check=False)
    text = done.stdout
    answer = json.loads(text[text.index("{") :]) if "{" in text else {}
    if expect not in answer:
        said = answer.get("error-message") or answer or f"{done.stdout}{done.stderr}".strip()
        raise SubmissionError(f"flwr {args[0]} was refused (exit {done.returncode}): {said}")
    return answer  # type: ignore[no-any-return]


def check_run_config(app_dir: str | Path, run_config: Mapping[str, RunConfigValue] | str) -> dict[str, RunConfigValue]:
    """The overrides of ``run_config``, checked against the app before anything is submitted.

    Raises:
        ConfigError: for a key the app does not declare (naming the closest one), or a value
            the app's config sections refuse.
    """
    from flwr.common.config import parse_config_args

    from .apps.loading import app_config, load_experiment
    from .config.schema import unknown_key_error

    overrides = dict(
        parse_config_args([run_config]) if isinstance(run_config, str) and run_config else run_config or {}
    )
    declared = app_config(app_dir)
    for key in overrides:
        if key not in declared:
            raise unknown_key_error(key, list(declared), f"app {Path(app_dir).name}")
    experiment = load_experiment(app_dir)
    if experiment is not None:
        experiment.schema.parse({**declared, **overrides})
    return overrides


def _stop_superlink(port: int, grace_s: float = 10.0) -> None:
    """Stop the local SuperLink listening on ``port`` (Flower has no CLI command for it) and everything
    it started, and wait until they are gone: SIGTERM, then SIGKILL after ``grace_s``.

    Its SuperExec, a simulation still running (``flwr stop`` only asks the ServerApp to stop between
    messages, so a client that hangs keeps it alive) and that simulation's Ray processes would
    otherwise outlive it: some of Ray's survive even their driver's SIGTERM. The SuperExec starts a
    process group of its own, which everything below it (Ray's workers and agents too) stays in, so
    the groups below the SuperLink are signalled as well as the processes found in the tree.
    """
    pids = superlink_tree(port)
    groups = {group for pid in pids if (group := _process_group(pid)) not in (None, os.getpgrp())}
    _signal_all(pids, groups, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _signal_all(pids, groups, 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    _signal_all(pids, groups, signal.SIGKILL)


def superlink_tree(port: int) -> list[int]:
    """The pids of the local SuperLink listening on ``port`` and of every process below it (its SuperExec,
    running simulations, their Ray processes), parents before children."""
    superlinks = subprocess.run(["pgrep", "-f", f"flower-superlink.*{port}"], capture_output=True, text=True)
    frontier = [int(pid) for pid in superlinks.stdout.split()]
    tree = list(frontier)
    while frontier:
        children = subprocess.run(["pgrep", "-P", ",".join(map(str, frontier))], capture_output=True, text=True)
        frontier = [int(pid) for pid in children.stdout.split()]
        tree += frontier
    return tree


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _signal_all(pids: list[int], groups: set[int], signum: int) -> bool:
    """Send ``signum`` (0: none, only look) to every live process of ``pids`` and of the process groups
    ``groups``; whether there was any (a zombie waiting for its parent does not count)."""
    members = {pid for group in groups for pid in _group_members(group)}
    live = [pid for pid in set(pids) | members if _running(pid)]
    for pid in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    return bool(live)


def _group_members(group: int) -> list[int]:
    found = subprocess.run(["pgrep", "-g", str(group)], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for its parent is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _status(run_id: int, env: Mapping[str, str]) -> str:
    return str(_flwr_json(["ls", "--run-id", str(run_id)], env, "runs")["runs"][0]["status"])


def _follow_log(
    run_id: int, env: Mapping[str, str], timeout_s: float, echo: bool, on_line: Callable[[str], None] | None
) -> str:
    """Stream ``flwr log`` until the run ends (it exits then); stop the run after ``timeout_s``."""
    lines: list[str] = []
    with subprocess.Popen(
        ["flwr", "log", str(run_id)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as stream:
        timer = threading.Timer(
            timeout_s, lambda: subprocess.run(["flwr", "stop", str(run_id)], env=env, capture_output=True, check=False)
        )
        timer.start()
        try:
            assert stream.stdout is not None
            for line in stream.stdout:
                lines.append(line)
                if on_line is not None:
                    on_line(line)
                if echo:
                    print(line, end="", flush=True)
        except BaseException:
            stream.kill()  # else leaving the block waits for ``flwr log``, which only ends with the run
            raise
        finally:
            timer.cancel()
    return "".join(lines)


class SuperLinkConnection(Protocol):
    """Where ``flwr`` submits: the environment variables (``FLWR_HOME``, ...) that point it at a SuperLink."""

    def environ(self) -> dict[str, str]: ...


class LocalSuperLink:
    """A private ``FLWR_HOME`` and ports: ``flwr run`` starts a SuperLink there on first use, and it is
    stopped (and the folder removed) when the block ends. Several :func:`run_app` calls given the same
    one reuse a single SuperLink, which saves its start-up on every run (tests, sweeps).

    Both of the local SuperLink's ports are private (its HTTP API and its Control API, which ``flwr``
    would otherwise put on 39091 and 39093 for everyone), so several can run side by side: parallel
    test workers, or a sweep beside a user's own ``flwr run``.
    """

    def __enter__(self) -> LocalSuperLink:
        self.home = tempfile.mkdtemp(prefix="flwr-home-")
        self.port, self.control_port = free_ports(2)
        return self

    def __exit__(self, *exc: object) -> None:
        _stop_superlink(self.port)
        shutil.rmtree(self.home, ignore_errors=True)

    def environ(self) -> dict[str, str]:
        """The variables that point ``flwr`` at this SuperLink."""
        return {
            "FLWR_HOME": self.home,
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.port),
            "FLWR_LOCAL_CONTROL_API_PORT": str(self.control_port),
        }


def run_app(
    app_dir: str | Path,
    run_config: Mapping[str, RunConfigValue] | str = "",
    federation_config: str = "",
    *,
    isolated: bool = False,
    superlink: SuperLinkConnection | None = None,
    timeout_s: float = 3600.0,
    poll_s: float = 5.0,
    echo: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Submit ``app_dir`` with ``flwr run``, wait until it finishes, and return the outcome.

    Args:
        app_dir: the Flower App folder.
        run_config: ``--run-config`` values (a mapping, or Flower's ``k=v`` string).
        federation_config: ``--federation-config``, e.g. ``"num-supernodes=10"``.
        isolated: use a private ``FLWR_HOME`` and port and stop that SuperLink at the end.
        superlink: run on this :class:`LocalSuperLink` (and leave it running) instead, or on a
            deployment's SuperLink (:class:`~flwr_privshare.deployment.LoopbackDeployment`).
        timeout_s: stop the run (``flwr stop``) after this many seconds.
        poll_s: seconds between status checks if the log stream ends before the run.
        echo: print the run's log while it runs.
        on_line: called with every line of the run's log as it arrives (progress displays).
    """
    check_run_config(app_dir, run_config)
    if isolated and superlink is None:
        with LocalSuperLink() as private:
            return _submit_and_wait(app_dir, run_config, federation_config, private, timeout_s, poll_s, echo, on_line)
    return _submit_and_wait(app_dir, run_config, federation_config, superlink, timeout_s, poll_s, echo, on_line)


def _submit(args: list[str], env: Mapping[str, str], retry_after_s: float = 5.0) -> int:
    """``flwr run``; the run id. A local SuperLink that was slow to start is given up to
    :data:`SUBMISSION_ATTEMPTS` tries; any other refusal is raised at once."""
    for attempt in range(1, SUBMISSION_ATTEMPTS + 1):
        try:
            return int(_flwr_json(args, env, "run-id")["run-id"])
        except SubmissionError as error:
            if SLOW_SUPERLINK not in str(error) or attempt == SUBMISSION_ATTEMPTS:
                raise
            time.sleep(retry_after_s)
    raise AssertionError("unreachable")


def _submit_and_wait(
    app_dir: str | Path,
    run_config: Mapping[str, RunConfigValue] | str,
    federation_config: str,
    superlink: SuperLinkConnection | None,
    timeout_s: float,
    poll_s: float,
    echo: bool,
    on_line: Callable[[str], None] | None = None,
) -> RunOutcome:
    env = dict(os.environ)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(superlink.environ() if superlink is not None else {})
    args = ["run", str(app_dir)]
    config_text = run_config if isinstance(run_config, str) else format_run_config(run_config)
    if config_text:
        args += ["--run-config", config_text]
    if federation_config:
        args += ["--federation-config", federation_config]
    run_id = _submit(args, env)
    try:
        log = _follow_log(run_id, env, timeout_s, echo, on_line)
        status = _status(run_id, env)
        while not status.startswith("finished"):  # the log stream ended early
            time.sleep(poll_s)
            status = _status(run_id, env)
    except BaseException:  # Ctrl-C or SIGTERM (see stop_on_sigterm): the run must not go on without us
        subprocess.run(["flwr", "stop", str(run_id)], env=env, capture_output=True, check=False)
        raise
    return RunOutcome(run_id, status, log)


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind the program as Ctrl-C does, so that a command killed by a scheduler or
    ``kill`` still stops its run and its :class:`LocalSuperLink` instead of leaving them running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, interrupt)


def main() -> None:
    """``privshare-run APP [--run-config ...] [--federation-config ...] [--isolated]``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app_dir", help="Flower App folder, e.g. simulations/visualmixer_cifar")
    parser.add_argument("--run-config", default="", help="Flower run config, e.g. 'num-server-rounds=3'")
    parser.add_argument("--federation-config", default="", help="e.g. 'num-supernodes=10 client-resources-num-cpus=1'")
    parser.add_argument("--isolated", action="store_true", help="private FLWR_HOME and SuperLink, stopped at the end")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before the run is stopped")
    args = parser.parse_args()
    from .config import ConfigError

    stop_on_sigterm()
    try:
        outcome = run_app(
            args.app_dir,
            args.run_config,
            args.federation_config,
            isolated=args.isolated,
            timeout_s=args.timeout,
            echo=True,
        )
    except (ConfigError, SubmissionError) as error:
        print(f"privshare-run: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as interruption:
        print(f"privshare-run: interrupted ({interruption or 'Ctrl-C'}); the run was stopped", file=sys.stderr)
        sys.exit(130)
    print(f"run {outcome.run_id}: {outcome.status}")
    sys.exit(0 if outcome.completed else 1)


if __name__ == "__main__":
    main()
