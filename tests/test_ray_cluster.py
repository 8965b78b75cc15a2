"""A simulation on a Ray cluster started beforehand (the multi-node recipe of docs/deployment.md, on one machine)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flwr_privshare.launch import LocalSuperLink, free_port, run_app

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[str]:
    """``ray start --head`` in a temp dir of its own; every process of that cluster is stopped afterwards.

    ``ray stop`` would stop every Ray instance on the machine; this kills the cluster's processes by
    its temp dir instead, and removes the dir (with the address file a later ``ray.init()`` would
    otherwise try to join).
    """
    temp_dir = Path("/tmp") / f"privshare-ray-{os.getpid()}-{time.monotonic_ns()}"  # Ray's socket paths stay short
    port = free_port()
    subprocess.run(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            f"--temp-dir={temp_dir}",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        found = subprocess.run(["pgrep", "-f", str(temp_dir)], capture_output=True, text=True)
        for pid in map(int, found.stdout.split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_a_simulation_joins_the_ray_cluster_that_ray_address_names(
    ray_head: str, tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", ray_head)  # the SuperLink's simulation process inherits it
    config = {
        "data-dir": str(data_root / "mnist"),
        "dataset": "ylecun/mnist",
        "output-dir": str(tmp_path),
        "run-name": "on-cluster",
        "num-server-rounds": 1,
        "samples-per-client": 16,
        "test-size": 64,
        "public-size": 0,
        "batch-size": 16,
    }
    with LocalSuperLink() as link:
        outcome = run_app(ROOT / "tests" / "faulty_app", config, "num-supernodes=2 client-resources-num-cpus=1",
                          superlink=link, timeout_s=600)  # fmt: skip
    assert outcome.completed, outcome.log[-2000:]
    assert (tmp_path / "on-cluster" / "summary.json").is_file()
    probe = (
        f"import ray; from ray._private.state import actors; ray.init(address='{ray_head}');"
        "print(sorted({a['ActorClassName'] for a in actors().values()}))"
    )
    listed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "ClientAppActor" in listed.stdout  # the clients ran on the cluster, not on a private Ray instance
