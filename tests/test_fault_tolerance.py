"""No fault loses a run: failing, withholding and hanging clients, killed servers, unusable machines.

The runs are in-process (:mod:`tests.inprocess`) on 4 tiny MNIST clients of the test-only
faulty app (``tests/faulty_app``), whose clients raise, sleep or kill their process on request;
one end-to-end run goes through ``flwr run`` and Ray.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
import torch

from flwr_privshare.config import ConfigError
from flwr_privshare.environment import EnvironmentCheckError
from flwr_privshare.launch import LocalSuperLink, run_app, superlink_tree
from flwr_privshare.protocol import TRAIN_SECONDS

from .inprocess import run_in_process

ROOT = Path(__file__).resolve().parents[1]
FAULTY_APP = ROOT / "tests" / "faulty_app"
sys.path.insert(0, str(FAULTY_APP))

from faulty_app.experiment import EXPERIMENT, KILL_AT_ROUND  # noqa: E402


def tiny(data_root: Path, output_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A run config of 32 MNIST digits per client and 64 test digits."""
    return {
        "dataset": "ylecun/mnist",
        "data-dir": str(data_root / "mnist"),
        "output-dir": str(output_dir),
        "run-name": "run",
        "samples-per-client": 32,
        "test-size": 64,
        "public-size": 0,
        "batch-size": 16,
        "num-server-rounds": 2,
        **overrides,
    }


def read(folder: Path, name: str) -> Any:
    path = folder / name
    return list(csv.DictReader(path.open())) if name.endswith(".csv") else json.loads(path.read_text())


def test_half_the_clients_raising_every_round_are_counted_with_their_reasons(tmp_path: Path, data_root: Path) -> None:
    folder = run_in_process(EXPERIMENT, 4, tiny(data_root, tmp_path, **{"fail-partitions": "0,1"}))
    summary = read(folder, "summary.json")
    assert summary["client_failures"] == 4
    assert summary["failed_clients"] == [
        {"node_id": 1, "partition_id": None, "failures": 2},
        {"node_id": 2, "partition_id": None, "failures": 2},
    ]
    rows = read(folder, "rounds.csv")
    assert [(row["train_replies"], row["train_failures"]) for row in rows[1:]] == [("2", "2"), ("2", "2")]
    assert float(rows[2]["accuracy"]) != float(rows[0]["accuracy"])  # the other half trained the model
    failures = read(folder, "failures.json")
    assert [(entry["round"], entry["node_id"]) for entry in failures] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(f"partition {entry['node_id'] - 1} failed on purpose" in entry["reason"] for entry in failures)
    wire = read(folder, "wire.json")
    assert [len(entry["errors"]) for entry in wire] == [2, 2] and [len(entry["replies"]) for entry in wire] == [2, 2]
    assert read(folder, "participation.json") == {"1": [2, 3], "2": [2, 3]}
    assert not (folder / "checkpoint.pt").exists()  # a finished run keeps no checkpoint


@pytest.mark.parametrize("protection", ["none", "dp-fedavg-fixed", "dp-fedavg-poisson"])
def test_a_run_in_which_every_client_fails_keeps_its_model_and_finishes(
    tmp_path: Path, data_root: Path, protection: str
) -> None:
    method = {"protection": "none"}
    if protection != "none":
        method = {"protection": "dp-fedavg", "dp-sampling": protection.removeprefix("dp-fedavg-")}
    config = tiny(data_root, tmp_path, **method, **{"fail-partitions": "0,1,2,3"})
    folder = run_in_process(EXPERIMENT, 4, config)
    summary = read(folder, "summary.json")
    assert summary["client_failures"] == 8 and [c["failures"] for c in summary["failed_clients"]] == [2, 2, 2, 2]
    rows = read(folder, "rounds.csv")
    assert [(row["train_replies"], row["train_failures"]) for row in rows[1:]] == [("0", "4"), ("0", "4")]
    initial = EXPERIMENT.prepare(EXPERIMENT.schema.parse(config), None).model.state_dict()  # type: ignore[arg-type]
    final = torch.load(folder / "model.pt")
    if protection == "dp-fedavg-poisson":  # the noisy sum over nobody is still released, and accounted
        dp = summary["privacy"]["dp-fedavg"]
        assert dp["rounds_accounted"] == 2 and dp["rounds_without_replies"] == [] and dp["epsilon"] > 0
        assert not any(torch.equal(initial[name], final[name]) for name in initial)
        return
    assert rows[0]["accuracy"] == rows[1]["accuracy"] == rows[2]["accuracy"]
    assert all(torch.equal(initial[name], final[name]) for name in initial)  # no update, no noise
    if protection == "dp-fedavg-fixed":
        dp = summary["privacy"]["dp-fedavg"]
        assert dp["rounds_accounted"] == 0 and dp["rounds_without_replies"] == [1, 2] and dp["epsilon"] == 0.0


def test_a_client_that_hangs_past_the_round_timeout_fails_with_timeout(tmp_path: Path, data_root: Path) -> None:
    # the timeout leaves the three other clients room on a loaded machine (parallel test workers)
    faults = {"sleep-partition": 2, "sleep-seconds": 12.0, "sleep-round": 1, "round-timeout": 8.0}
    folder = run_in_process(EXPERIMENT, 4, tiny(data_root, tmp_path, **faults))
    rows = read(folder, "rounds.csv")
    assert [(row["train_replies"], row["train_failures"]) for row in rows[1:]] == [("3", "1"), ("4", "0")]
    (failure,) = read(folder, "failures.json")
    assert (failure["round"], failure["node_id"], failure["reason"]) == (1, 3, "timeout")
    assert failure["partition_id"] == 2  # known from its reply in round 2
    assert read(folder, "summary.json")["failed_clients"] == [{"node_id": 3, "partition_id": 2, "failures": 1}]
    assert read(folder, "participation.json") == {"1": [0, 1, 3], "2": [0, 1, 2, 3]}


def killed_run(config: dict[str, Any], at_round: int) -> None:
    """Run ``config`` in a child process whose clients SIGKILL it when round ``at_round`` starts. The child
    trains on this process's number of threads, so its numbers are the ones this process would get."""
    script = (
        "import json, sys, torch; torch.set_num_threads(int(sys.argv[2])); "
        "from faulty_app.experiment import EXPERIMENT; from tests.inprocess import run_in_process; "
        "run_in_process(EXPERIMENT, 4, json.loads(sys.argv[1]))"
    )
    env = {**os.environ, KILL_AT_ROUND: str(at_round), "PYTHONPATH": os.pathsep.join([str(ROOT), str(FAULTY_APP)])}
    command = [sys.executable, "-c", script, json.dumps(config), str(torch.get_num_threads())]
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-3000:]


def without_timings(summary: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in summary.items() if key != "wall_time_s"}


@pytest.mark.parametrize(
    ("protection", "overrides"),
    [("visualmixer,dp-sgd", {}), ("dp-fedavg", {"server-momentum": 0.9})],
)
def test_a_run_killed_after_round_2_of_4_resumes_to_the_numbers_of_an_uninterrupted_run(
    tmp_path: Path, data_root: Path, protection: str, overrides: dict[str, Any]
) -> None:
    config = tiny(data_root, tmp_path, protection=protection, **{"num-server-rounds": 4, **overrides})
    killed_run(config, at_round=3)
    unfinished = tmp_path / ".run.incomplete"
    assert read(unfinished, "rounds.csv")[-1]["round"] == "2" and (unfinished / "checkpoint.pt").is_file()
    assert not (tmp_path / "run").exists()

    resumed = run_in_process(EXPERIMENT, 4, {**config, "resume": True})
    reference = run_in_process(EXPERIMENT, 4, {**config, "run-name": "reference"})
    assert without_timings(read(resumed, "summary.json")) == without_timings(read(reference, "summary.json"))
    assert (resumed / "model.pt").read_bytes() == (reference / "model.pt").read_bytes()
    for name in ("wire.json", "participation.json"):
        assert read(resumed, name) == read(reference, name)
    timings = ("elapsed_s", f"train_{TRAIN_SECONDS}")
    columns = [key for key in read(reference, "rounds.csv")[0] if key not in timings]
    assert [[row[key] for key in columns] for row in read(resumed, "rounds.csv")] == [
        [row[key] for key in columns] for row in read(reference, "rounds.csv")
    ]
    (resume,) = read(resumed, "resumes.json")
    assert resume["after_round"] == 2 and not (resumed / "checkpoint.pt").exists()


def test_a_resume_under_another_config_is_refused_naming_the_keys(tmp_path: Path, data_root: Path) -> None:
    config = tiny(data_root, tmp_path, **{"num-server-rounds": 3})
    killed_run(config, at_round=2)
    changed = {**config, "resume": True, "learning-rate": 0.1, "local-epochs": 2}
    with pytest.raises(ConfigError, match=r"differing keys: 'learning-rate': 0.05 -> 0.1, 'local-epochs': 1 -> 2"):
        run_in_process(EXPERIMENT, 4, changed)
    with pytest.raises(FileExistsError, match="resume=true"):  # a new run would overwrite the checkpoint
        run_in_process(EXPERIMENT, 4, config)
    assert read(tmp_path / ".run.incomplete", "rounds.csv")[-1]["round"] == "1"  # untouched by both


def test_a_resume_without_a_run_name_continues_the_newest_unfinished_run_of_the_config(
    tmp_path: Path, data_root: Path
) -> None:
    config = tiny(data_root, tmp_path, **{"num-server-rounds": 2, "run-name": ""})
    killed_run(config, at_round=2)
    (unfinished,) = tmp_path.glob(".none-mnist-s42-*.incomplete")
    folder = run_in_process(EXPERIMENT, 4, {**config, "resume": True})
    assert folder.name == unfinished.name[1 : -len(".incomplete")] and not unfinished.exists()
    with pytest.raises(ConfigError, match="holds no unfinished run named none-mnist-s42-<time>"):
        run_in_process(EXPERIMENT, 4, {**config, "resume": True})


@pytest.mark.parametrize(
    ("app", "overrides", "obstacle"),
    [
        ("faulty", {"protection": "dp-sgd", "fraction-train": 0.5}, "dp-sgd keeps each client's accountant history"),
        ("visualmixer", {"protection": "none", "gan-attacker": 0}, "the GAN attack: the insider's generator"),
        ("dpm", {"dpm-bootstrap": "server"}, "feature sharing with DPM: each client's DPM continues"),
    ],
)
def test_a_run_whose_client_state_cannot_be_rebuilt_refuses_to_resume_before_any_work(
    tmp_path: Path, data_root: Path, app: str, overrides: dict[str, Any], obstacle: str
) -> None:
    from .experiments import DPM, VISUALMIXER

    experiment = {"faulty": EXPERIMENT, "visualmixer": VISUALMIXER, "dpm": DPM}[app]
    config = {**tiny(data_root, tmp_path, **overrides), "resume": True, "public-size": 100}
    with pytest.raises(ConfigError, match=f"this run cannot resume: {obstacle}"):
        run_in_process(experiment, 4, config)
    assert not any(tmp_path.iterdir())


def test_a_failed_reply_before_the_kill_stops_a_dp_sgd_resume(tmp_path: Path, data_root: Path) -> None:
    config = tiny(data_root, tmp_path, protection="dp-sgd", **{"num-server-rounds": 3, "fail-partitions": "1"})
    killed_run(config, at_round=3)
    with pytest.raises(ConfigError, match="dp-sgd: 2 replies failed in the rounds already run"):
        run_in_process(EXPERIMENT, 4, {**config, "resume": True})


def test_an_output_folder_that_cannot_be_written_fails_before_any_training(tmp_path: Path, data_root: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(EnvironmentCheckError, match=f"output-dir {blocker / 'results'} cannot be written"):
        run_in_process(EXPERIMENT, 4, tiny(data_root, blocker / "results", **{"fail-partitions": "0,1,2,3"}))


def test_a_data_file_that_cannot_be_read_fails_before_any_training(tmp_path: Path, data_root: Path) -> None:
    data = tmp_path / "mnist"
    data.mkdir()
    (data / "train.parquet").write_bytes((data_root / "mnist" / "train.parquet").read_bytes()[:1000])  # truncated
    (data / "test.parquet").symlink_to(data_root / "mnist" / "test.parquet")
    config = {**tiny(data_root, tmp_path / "out"), "data-dir": str(data)}
    with pytest.raises(EnvironmentCheckError, match=f"data file {data / 'train.parquet'} cannot be read"):
        run_in_process(EXPERIMENT, 4, config)
    assert not (tmp_path / "out" / ".run.incomplete").exists()


def test_too_little_free_disk_fails_before_any_training(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flwr_privshare.environment as environment

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(environment.shutil, "disk_usage", lambda path: usage(2**40, 2**40 - 10 * 2**20, 10 * 2**20))
    with pytest.raises(EnvironmentCheckError, match=f"output-dir {tmp_path} has 10.0 MiB free; the run needs about"):
        run_in_process(EXPERIMENT, 4, tiny(data_root, tmp_path))
    assert not any(tmp_path.iterdir())


def test_failing_and_hanging_clients_under_flwr_run_and_ray(
    tmp_path: Path, data_root: Path, superlink: LocalSuperLink
) -> None:
    # 4 SuperNodes on 2 Ray actors: partition 0 raises in every round, partition 1 sleeps past the
    # round timeout in round 2, on a warm actor (round 1 includes the actors' start-up: 12 s to 16 s on
    # an idle machine, over 40 s beside a busy test worker; the timeout leaves it room).
    faults = {
        "fail-partitions": "0",
        "sleep-partition": 1,
        "sleep-round": 2,
        "sleep-seconds": 100.0,
        "round-timeout": 90.0,
    }
    config = tiny(data_root, tmp_path, **faults)
    outcome = run_app(FAULTY_APP, config, "num-supernodes=4 client-resources-num-cpus=1", superlink=superlink)
    assert outcome.completed, outcome.log[-4000:]
    folder = tmp_path / "run"
    rows = read(folder, "rounds.csv")
    assert [(row["train_replies"], row["train_failures"]) for row in rows[1:]] == [("3", "1"), ("2", "2")]
    failures = read(folder, "failures.json")
    reasons = sorted(entry["reason"] for entry in failures if entry["round"] == 2)
    assert "ClientAppException" in reasons[0] and "partition 0 failed on purpose" in reasons[0]
    assert reasons[1] == "timeout"
    summary = read(folder, "summary.json")
    assert summary["client_failures"] == 3
    failed = {(client["partition_id"], client["failures"]) for client in summary["failed_clients"]}
    assert failed == {(None, 2), (1, 1)}  # partition 0 never told its partition: it never replied


def simulation_process(superlink: LocalSuperLink) -> int | None:
    """The pid of the simulation process (ServerApp and Ray driver) under ``superlink``, if one runs."""
    for pid in superlink_tree(superlink.port):
        if "flwr-simulation" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
            return pid
    return None


@pytest.mark.slow
def test_a_simulation_killed_after_round_2_of_4_resumes_through_flwr_run(tmp_path: Path, data_root: Path) -> None:
    # The real thing: SIGKILL the simulation process (ServerApp, Ray) once round 2 is recorded, then the
    # same `flwr run` plus resume=true; DP-FedAvg with server momentum, compared with an uninterrupted run.
    config = {
        **tiny(data_root, tmp_path, protection="dp-fedavg", **{"server-momentum": 0.9, "num-server-rounds": 4}),
        "samples-per-client": 512,
    }
    federation = "num-supernodes=3 client-resources-num-cpus=1"
    rounds_csv = tmp_path / ".run.incomplete" / "rounds.csv"
    with LocalSuperLink() as superlink:

        def kill_after_round_2() -> None:
            while not (rounds_csv.exists() and len(rounds_csv.read_text().splitlines()) > 3):
                time.sleep(0.1)
            pid = simulation_process(superlink)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_after_round_2, daemon=True)
        killer.start()
        killed = run_app(FAULTY_APP, config, federation, superlink=superlink)
        killer.join()
        assert not killed.completed and read(tmp_path / ".run.incomplete", "rounds.csv")[-1]["round"] in ("2", "3")
        resumed = run_app(FAULTY_APP, {**config, "resume": True}, federation, superlink=superlink)
        reference = run_app(FAULTY_APP, {**config, "run-name": "reference"}, federation, superlink=superlink)
    assert resumed.completed and reference.completed
    folder, expected = tmp_path / "run", tmp_path / "reference"
    assert without_timings(read(folder, "summary.json")) == without_timings(read(expected, "summary.json"))
    assert (folder / "model.pt").read_bytes() == (expected / "model.pt").read_bytes()
    assert read(folder, "resumes.json")[0]["after_round"] >= 2
