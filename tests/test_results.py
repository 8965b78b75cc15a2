"""The run folder appears only when complete; files are written atomically."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from flwr_privshare import results
from flwr_privshare.results import RunFolder, atomic_write_json
from flwr_privshare.summary import RunSummary, load_summary


def test_run_folder_is_published_only_on_finish(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path, "run-a", {"seed": 1, "lr": 0.1}, seed=1)
    assert not (tmp_path / "run-a").exists()
    folder.add_round({"round": 0, "accuracy": 0.1})
    folder.add_round({"round": 1, "accuracy": 0.4, "train_failures": 1})
    final = folder.finish({"final_accuracy": 0.4}, {"accuracy": ("round", ["accuracy"])})
    assert final == tmp_path / "run-a" and not folder.path.exists()
    config = json.loads((final / "config.json").read_text())
    assert config["seed"] == 1 and config["config"]["lr"] == 0.1 and "torch" in config["versions"]
    rows = list(csv.DictReader((final / "rounds.csv").open()))
    assert [r["accuracy"] for r in rows] == ["0.1", "0.4"] and rows[1]["train_failures"] == "1"
    assert (final / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((final / "summary.json").read_text()) == {"final_accuracy": 0.4}
    assert not list(final.glob("*.tmp*"))


def test_aborted_run_leaves_nothing_and_existing_runs_are_not_overwritten(tmp_path: Path) -> None:
    RunFolder(tmp_path, "run-b", {}, seed=0).abort()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "run-c").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        RunFolder(tmp_path, "run-c", {}, seed=0)


def test_atomic_json_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"b": 2})
    assert json.loads(target.read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_write_gives_a_plain_files_permissions(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_failed_atomic_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"a": 1})

    def fail(source: object, destination: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(target, {"b": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_figure_that_fails_to_save_leaves_no_temporary(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = RunFolder(tmp_path, "run-d", {}, seed=0)
    figure = plt.figure()

    def fail(target: Path, **kwargs: object) -> None:
        target.write_bytes(b"half a png")
        raise OSError("disk full")

    figure.savefig = fail  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk full"):
        folder.save_figure("broken", figure)
    assert sorted(p.name for p in folder.path.iterdir()) == ["config.json"]
    assert not plt.fignum_exists(figure.number)


def test_as_a_context_manager_a_failing_block_leaves_nothing_and_a_normal_one_publishes(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="training diverged"), RunFolder(tmp_path, "failed", {}, seed=0) as folder:
        folder.add_round({"round": 0, "accuracy": 0.1})
        raise RuntimeError("training diverged")
    assert list(tmp_path.iterdir()) == []
    with RunFolder(tmp_path, "done", {}, seed=0) as folder:
        folder.add_round({"round": 0, "accuracy": 0.1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done"]
    assert (tmp_path / "done" / "rounds.csv").is_file()
    with RunFolder(tmp_path, "finished", {}, seed=0) as folder:
        folder.finish({"final_accuracy": 0.5}, {})
    assert json.loads((tmp_path / "finished" / "summary.json").read_text()) == {"final_accuracy": 0.5}


def test_a_summary_round_trips_through_its_typed_form(tmp_path: Path) -> None:
    summary = RunSummary(
        method="dp-fedavg",
        protection="dp-fedavg",
        dataset="mnist",
        final_accuracy=0.9,
        num_rounds=2,
        num_clients=3,
        client_failures=0,
        seed=42,
        wall_time_s=1.0,
        privacy={"dp-fedavg": {"epsilon": 3.0, "delta": 1e-5}, "oracle": {"recognition": 0.1}},
        details={"final_plain_accuracy": 0.9},
    )
    written = summary.to_json()
    assert written["epsilon"] == 3.0 and written["delta"] == 1e-5 and written["final_plain_accuracy"] == 0.9
    atomic_write_json(tmp_path / "summary.json", written)
    assert load_summary(tmp_path) == summary
    assert RunSummary.from_json({**written, "privacy": {}}).epsilon is None
