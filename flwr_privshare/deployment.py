"""A Flower deployment on this machine: one SuperLink and N SuperNodes on loopback, each node with its own data.

The Deployment Engine, not the simulation: every process is a real Flower server or node, talking
HTTP over 127.0.0.1 on ports chosen free. It exists to try a deployment (and to test one) before
running it across machines, where the same commands take TLS certificates instead of ``--insecure``
and SuperNode authentication (``--enable-supernode-auth`` on the SuperLink, a key pair per node)::

    with LoopbackDeployment([{"partition-id": 0, "num-partitions": 2, "data-dir": "/nodes/partition-0"},
                             {"partition-id": 1, "num-partitions": 2, "data-dir": "/nodes/partition-1"}]) as link:
        outcome = run_app("simulations/dp_fedavg_cifar", run_config, superlink=link)

:func:`~flwr_privshare.launch.run_app` submits through its ``FLWR_HOME``, whose ``config.toml`` names
the SuperLink connection; every process started is stopped by its id when the block ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from .launch import RunConfigValue, format_run_config, free_port

#: The SuperLink connection's name in ``config.toml``.
CONNECTION = "loopback"


class LoopbackDeployment:
    """Start a SuperLink and one SuperNode per node config on loopback; stop them all on exit (see the module)."""

    def __init__(self, node_configs: Sequence[Mapping[str, RunConfigValue]], startup_s: float = 30.0) -> None:
        if not node_configs:
            raise ValueError("a deployment needs at least one SuperNode (node_configs is empty)")
        self.node_configs = list(node_configs)
        self.startup_s = startup_s
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def __enter__(self) -> LoopbackDeployment:
        self.home = Path(tempfile.mkdtemp(prefix="flwr-deployment-"))
        self.port = free_port()
        address = f"127.0.0.1:{self.port}"
        connection = f'[superlink.{CONNECTION}]\naddress = "{address}"\ninsecure = true\n'
        (self.home / "config.toml").write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n{connection}')
        try:
            self._start(
                "superlink",
                ["flower-superlink", "--insecure", "--isolation", "subprocess", "--host", "127.0.0.1",
                 "--port", str(self.port), "--database", str(self.home / "state.db")],
            )  # fmt: skip
            self._wait_for_port()
            for index, node_config in enumerate(self.node_configs):
                self._start(
                    f"supernode-{index}",
                    ["flower-supernode", "--insecure", "--superlink", address, "--isolation", "subprocess",
                     "--port", str(free_port()), "--node-config", format_run_config(node_config)],
                )  # fmt: skip
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):  # nodes first, then the SuperLink; each with its children
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in self._logs:
            log.close()
        shutil.rmtree(self.home, ignore_errors=True)

    def environ(self) -> dict[str, str]:
        """The variables that point ``flwr`` at this deployment's SuperLink."""
        return {"FLWR_HOME": str(self.home)}

    def log(self, name: str) -> str:
        """The output of process ``name`` (``superlink``, ``supernode-0``, ...) so far."""
        return (self.home / f"{name}.log").read_text(errors="replace")

    def _start(self, name: str, command: list[str]) -> None:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
        log = (self.home / f"{name}.log").open("wb")
        self._logs.append(log)
        # A session of its own: stopping the group also stops the ServerApp/ClientApp processes it spawns.
        self.processes.append(
            subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        )

    def _wait_for_port(self) -> None:
        import socket

        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.processes[0].poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"the SuperLink did not start on port {self.port}:\n{self.log('superlink')[-2000:]}")
