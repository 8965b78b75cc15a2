"""End-to-end runs of simulations/dpm_cifar (small versions) and the wire audit of what DPM clients send."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from flwr_privshare.launch import LocalSuperLink, run_app
from flwr_privshare.models import build_model
from flwr_privshare.poisoning import RECONSTRUCTORS, DeepPoisoningModule, feature_shape, split_model

from .experiments import DPM
from .golden import CASES, differences
from .inprocess import run_in_process

APP = CASES["dpm-mnist-fedavg"].app_dir


def run_dpm(case: str, tmp_path: Path, data_root: Path, superlink: LocalSuperLink) -> Path:
    config = CASES[case].run_config(data_root, tmp_path)
    outcome = run_app(APP, config, CASES[case].federation_config, superlink=superlink, timeout_s=900)  # type: ignore[arg-type]
    assert outcome.completed, outcome.log[-4000:]
    return tmp_path / "run"


def check_wire(folder: Path, model_name: str, image_shape: tuple[int, int, int]) -> None:
    """Every reply carries poisoned features and labels only: no images, no model, nothing of the DPM."""
    shape = feature_shape(split_model(build_model(model_name), "pool1").featurizer, image_shape)
    dpm_arrays = {(name, tuple(t.shape)) for name, t in DeepPoisoningModule(shape[0]).state_dict().items()}
    rounds = json.loads((folder / "wire.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2]
    for round_log in rounds:
        assert len(round_log["replies"]) == 3
        for reply in round_log["replies"]:
            assert {name: record["type"] for name, record in reply.items()} == {
                "features": "array",
                "metrics": "metric",
            }
            entries = reply["features"]["entries"]
            assert entries == {
                "features": {"shape": [64, *shape], "dtype": "float16"},
                "labels": {"shape": [64], "dtype": "int64"},
            }
            assert not any((name, tuple(e["shape"])) in dpm_arrays for name, e in entries.items())
            assert not any(tuple(e["shape"][1:]) == image_shape for e in entries.values())
            assert all(t in ("int", "float") for t in reply["metrics"]["entries"].values())


@pytest.mark.slow
def test_dpm_run_on_cifar_with_server_bootstrap(tmp_path: Path, data_root: Path, superlink: LocalSuperLink) -> None:
    folder = run_dpm("dpm-cifar-server", tmp_path, data_root, superlink)
    assert differences("dpm-cifar-server", folder) == []
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["method"] == "feature-sharing+dpm" and summary["num_clients"] == 3
    assert summary["client_failures"] == 0 and summary["rejected_replies"] == 0
    assert summary["feature_shape"] == [32, 16, 16]
    privacy = summary["privacy"]["dpm-audit"]
    for name in RECONSTRUCTORS:
        for key in ("l1_original", "ssim_original", "l1_poisoned", "ssim_poisoned", "ssim_poisoned_stretched"):
            assert f"{name}/{key}" in privacy
    assert {"accuracy_original", "accuracy_poisoned", "accuracy_lambda_zero", "secondary/ssim_with_dpm"} <= set(privacy)
    assert 0.0 < privacy["reference/ssim_other_image"] < privacy["reference/ssim_mean_colour"] < 0.3
    rows = list(csv.DictReader((folder / "rounds.csv").open()))
    assert [int(r["round"]) for r in rows] == [0, 1, 2]
    assert rows[-1]["train_pooled-features"] == str(3 * 64) and rows[-1]["train_rejected"] == "0"
    assert float(rows[1]["payload_bytes_per_client"]) >= 64 * 32 * 16 * 16 * 2
    for figure in ("accuracy", "reconstructions", "audit"):
        assert (folder / f"{figure}.png").stat().st_size > 1000
    check_wire(folder, "cifar-cnn", (3, 32, 32))


@pytest.mark.slow  # CI runs the DPM app in process (below) and its strategies in tests/strategies; this is flwr run
def test_dpm_run_on_mnist_with_fedavg_bootstrap(tmp_path: Path, data_root: Path, superlink: LocalSuperLink) -> None:
    # Two instances of one further straw man (the app's default has none) run the ensemble through the app.
    folder = run_dpm("dpm-mnist-fedavg", tmp_path, data_root, superlink)
    assert differences("dpm-mnist-fedavg", folder) == []
    summary = json.loads((folder / "summary.json").read_text())
    settings, audit = summary["privacy"]["dpm"], summary["privacy"]["dpm-audit"]
    assert summary["bootstrap"] == "fedavg" and summary["model"] == "mnist-cnn"
    rows = list(csv.DictReader((folder / "rounds.csv").open()))
    assert float(rows[0]["accuracy"]) == pytest.approx(summary["bootstrap_accuracy"])
    assert summary["final_accuracy"] > summary["bootstrap_accuracy"]  # refinement on pooled features helps
    assert summary["client_failures"] == 0
    assert {"reference/ssim_other_image", "reference/ssim_mean_colour"} <= set(audit)
    # The app's self-check ran: the checker was trained and sent, clients and the stand-in checked their DPMs.
    assert settings["self_check"] == {"checker": "rx3s2", "threshold": 1.0, "draws": 3}
    assert settings["ensemble"] == ["px3s2"] and settings["ensemble_instances"] == 2
    assert summary["withheld_replies"] == 0
    assert audit["stand_in_draws"] == 1 and audit["stand_in_check_passed"] == 1.0
    # The audit also measures the DPM a client shares with in round 1 (one round of training).
    first_round = {f"first_round/{name}/ssim_poisoned" for name in RECONSTRUCTORS}
    assert first_round | {"first_round/accuracy_poisoned", "first_round/draws"} <= set(audit)
    assert audit["first_round/check_passed"] == 1.0
    assert all(-1.0 <= float(row["train_dpm-check-ssim"]) <= 1.0 for row in rows[1:])
    assert all(float(row["train_dpm-draws"]) == 1.0 and row["train_withheld"] == "0" for row in rows[1:])
    check_wire(folder, "mnist-cnn", (1, 28, 28))


def test_a_round_in_which_every_client_withholds_keeps_the_model_and_the_run_finishes(
    tmp_path: Path, data_root: Path
) -> None:
    # A threshold no DPM meets: every client withholds its features in the one round, the pool is empty.
    # The skeleton, FeatureSharing and the clients' handler run in this process (no Ray needed for the point).
    config = {
        **CASES["dpm-mnist-fedavg"].run_config(data_root, tmp_path),
        "num-server-rounds": 1,
        "dpm-check-threshold": 1e-9,
        "dpm-check-draws": 1,
        "dpm-warmup-epochs": 0,
        "dpm-bootstrap": "server",
    }
    folder = run_in_process(DPM, 3, config)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["withheld_replies"] == 3 and summary["client_failures"] == 3
    assert summary["final_accuracy"] == summary["bootstrap_accuracy"]  # the model stayed as it was
    rows = list(csv.DictReader((folder / "rounds.csv").open()))
    assert rows[1]["train_replies"] == "0" and rows[1]["train_failures"] == "3" and rows[1]["train_withheld"] == "3"
    (round_log,) = json.loads((folder / "wire.json").read_text())
    assert round_log["replies"] == [] and len(round_log["errors"]) == 3
    assert all("self-check failed" in error["reason"] for error in round_log["errors"])
    failures = json.loads((folder / "failures.json").read_text())
    assert [(entry["round"], entry["node_id"]) for entry in failures] == [(1, 1), (1, 2), (1, 3)]
    assert [client["failures"] for client in summary["failed_clients"]] == [1, 1, 1]
