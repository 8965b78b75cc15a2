"""End-to-end runs of the FedAvg-family apps through ``flwr run`` (small versions).

Each test runs on the session's private SuperLink (the ``superlink`` fixture), runs a few clients for a couple of
rounds on a small subset, checks the run folder the ServerApp leaves and that it reproduces
the recorded numbers (:mod:`tests.golden`): same seed, same numbers, DP-FedAvg's noise included.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from flwr_privshare.launch import LocalSuperLink, run_app
from flwr_privshare.models import build_model, model_name_for

from .golden import CASES, FEDAVG_SMALL, differences

APP = CASES["visualmixer-cifar"].app_dir


def run_recorded(case: str, tmp_path: Path, data_root: Path, superlink: LocalSuperLink) -> Path:
    """Run a recorded case, check that it reproduces the recorded numbers, and return its run folder."""
    config = CASES[case].run_config(data_root, tmp_path)
    outcome = run_app(CASES[case].app_dir, config, CASES[case].federation_config, superlink=superlink, timeout_s=600)  # type: ignore[arg-type]
    assert outcome.completed, outcome.log[-4000:]
    assert differences(case, tmp_path / "run") == []
    return tmp_path / "run"


def check_run_folder(folder: Path, image_shape: tuple[int, int, int], protection: str) -> dict:  # type: ignore[type-arg]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["protection"] == protection and summary["num_rounds"] == 2 and summary["num_clients"] == 3
    assert (summary["epsilon"] is None) == ("dp" not in protection)
    assert summary["client_failures"] == 0 and summary["seed"] == 42 and summary["wall_time_s"] > 0
    assert 0.0 <= summary["final_accuracy"] <= 1.0
    config = json.loads((folder / "config.json").read_text())
    assert config["seed"] == 42 and config["config"]["protection"] == protection and "flwr" in config["versions"]
    rows = list(csv.DictReader((folder / "rounds.csv").open()))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    assert float(rows[-1]["accuracy"]) == pytest.approx(summary["final_accuracy"])
    assert all(r["train_replies"] == "3" and r["train_failures"] == "0" for r in rows[1:])
    assert (folder / "accuracy.png").stat().st_size > 1000 and (folder / "model.pt").is_file()
    # what crossed the wire: model arrays and scalar metrics only
    model_keys = set(build_model(model_name_for(image_shape)).state_dict())
    for round_log in json.loads((folder / "wire.json").read_text()):
        assert round_log["stage"] == "train" and "errors" not in round_log
        assert len(round_log["replies"]) == 3
        for reply in round_log["replies"]:
            assert {name: record["type"] for name, record in reply.items()} == {"arrays": "array", "metrics": "metric"}
            assert set(reply["arrays"]["entries"]) == model_keys
            assert all(t in ("int", "float") for t in reply["metrics"]["entries"].values())
    return summary


def test_visualmixer_run_on_cifar(tmp_path: Path, data_root: Path, superlink: LocalSuperLink) -> None:
    folder = run_recorded("visualmixer-cifar", tmp_path, data_root, superlink)
    summary = check_run_folder(folder, (3, 32, 32), "visualmixer")
    privacy = summary["privacy"]
    assert set(privacy) == {"visualmixer", "oracle"} and summary["method"] == "fedavg+visualmixer"
    assert privacy["visualmixer"]["window_min"] == 2 and privacy["visualmixer"]["window_max"] == 8
    assert privacy["visualmixer"]["vfe_gain"] > 1.0
    assert 0.0 <= privacy["oracle"]["recognition"] <= 1.0 and privacy["oracle"]["view"] == "mixed"
    rows = list(csv.DictReader((folder / "rounds.csv").open()))
    assert {"mixed_accuracy", "plain_accuracy", "train_vfe-mixed"} <= set(rows[0])


@pytest.mark.slow  # the plain client path runs in every CI run in process (tests/test_wire.py) and under flwr run
# in the sweep test; this recorded case is the MNIST baseline's
def test_plain_baseline_on_mnist(tmp_path: Path, data_root: Path, superlink: LocalSuperLink) -> None:
    folder = run_recorded("none-mnist", tmp_path, data_root, superlink)
    summary = check_run_folder(folder, (1, 28, 28), "none")
    assert summary["final_accuracy"] > 0.3  # 3 x 600 MNIST digits, 2 rounds: clearly above chance
    oracle = summary["privacy"].pop("oracle")  # nothing changes the images: recognition is the plain accuracy
    assert summary["privacy"] == {} and oracle["view"] == "plain" and oracle["recognition"] == oracle["plain_accuracy"]


def test_bad_input_fails_the_run_before_training_and_leaves_no_folder(
    tmp_path: Path, data_root: Path, superlink: LocalSuperLink
) -> None:
    config = {**FEDAVG_SMALL, "data-dir": str(data_root / "mnist"), "output-dir": str(tmp_path), "vim-window-max": 32}
    outcome = run_app(APP, config, "num-supernodes=2 client-resources-num-cpus=1", superlink=superlink, timeout_s=300)  # type: ignore[arg-type]
    assert outcome.status == "finished:failed"
    assert "'vim-window-max' is 32; it must be at most the image size 28x28" in outcome.log
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "case",
    [
        # Slow-only but the adaptive case (the clipping mod under flwr run). Every CI run covers the others'
        # paths: Opacus and its composition with VisualMixer in process (tests/test_fault_tolerance.py,
        # tests/dp), server clipping in the deployment test
        pytest.param("dp-sgd", marks=pytest.mark.slow),
        pytest.param("dp-fedavg", marks=pytest.mark.slow),
        pytest.param("dp-fedavg-client", marks=pytest.mark.slow),
        "dp-fedavg-client-adaptive",
        pytest.param("visualmixer+dp-sgd", marks=pytest.mark.slow),
    ],
)
def test_dp_protections(tmp_path: Path, data_root: Path, superlink: LocalSuperLink, case: str) -> None:
    overrides = CASES[case].overrides
    protection = str(overrides["protection"])
    folder = run_recorded(case, tmp_path, data_root, superlink)
    summary = check_run_folder(folder, (1, 28, 28), protection)
    dp = summary["privacy"][protection.split("+")[-1]]
    rows = list(csv.DictReader((folder / "rounds.csv").open()))
    column = "train_epsilon" if protection == "dp-fedavg" else "train_epsilon-max"
    epsilons = [float(row[column]) for row in rows[1:]]
    assert 0 < epsilons[0] < epsilons[1] == pytest.approx(summary["epsilon"])
    assert summary["delta"] == 1e-5 and dp["delta"] == 1e-5 and dp["sampling_assumption"]
    if protection == "dp-fedavg":
        assert summary["method"] == "dp-fedavg"
        assert dp["sample_rate"] == 1.0 and dp["epsilon_no_amplification"] == pytest.approx(dp["epsilon"])
        assert dp["clipping"] == overrides.get("dp-clipping", "server")
        adaptive = str(dp["clipping"]).endswith("adaptive")
        assert (dp["final_clipping_norm"] != dp["clipping_norm"]) == adaptive  # the clients' norm bits moved it
        assert float(rows[-1]["train_clipping-norm"]) == pytest.approx(dp["final_clipping_norm"])
    else:
        assert float(rows[-1]["train_epsilon-mean"]) <= summary["epsilon"]
    if protection == "visualmixer+dp-sgd":
        assert summary["method"] == "fedavg+visualmixer+dp-sgd"
        assert summary["epsilon"] <= 8.0 + 0.05 and summary["privacy"]["visualmixer"]["vfe_gain"] > 1.0
    assert (folder / "accuracy_vs_epsilon.png").stat().st_size > 1000
