"""Extension points: a protection registered outside the library runs through a real app; registries refuse clashes."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flwr_privshare.attacks import Attack, register_attack, registered_attacks
from flwr_privshare.launch import LocalSuperLink, run_app
from flwr_privshare.protections import Protection, register_protection, registered_protections

EXTENSION_APP = Path(__file__).resolve().parent / "extension_app"


def test_a_test_only_protection_runs_through_the_app_end_to_end(
    tmp_path: Path, data_root: Path, superlink: LocalSuperLink
) -> None:
    config = {
        "data-dir": str(data_root / "mnist"),
        "output-dir": str(tmp_path),
        "run-name": "run",
        "samples-per-client": 64,
        "test-size": 200,
        "public-size": 500,
    }
    outcome = run_app(EXTENSION_APP, config, "num-supernodes=2 client-resources-num-cpus=1", superlink=superlink)  # type: ignore[arg-type]
    assert outcome.completed, outcome.log[-4000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["method"] == "fedavg+invert" and summary["protection"] == "invert"
    assert summary["privacy"] == {"invert": {"rounds_seen": 1}}
    (row,) = list(csv.DictReader((tmp_path / "run" / "rounds.csv").open()))[1:]
    assert float(row["accuracy"]) == float(row["inverted_accuracy"])  # the protected view is the primary one
    assert "plain_accuracy" in row and float(row["train_inverted-mean"]) > 127  # MNIST is mostly black


def test_registries_refuse_a_taken_or_malformed_name() -> None:
    assert {"visualmixer", "dp-sgd", "dp-fedavg"} <= set(registered_protections())
    assert {"oracle", "dpm-audit"} <= set(registered_attacks())
    for name in ("visualmixer", "none", "a,b", "a+b", ""):
        cls = type("Clash", (Protection,), {"name": name})
        with pytest.raises(ValueError, match="cannot register protection"):
            register_protection(cls)
    with pytest.raises(ValueError, match="cannot register attack 'oracle'"):
        register_attack(type("Clash", (Attack,), {"name": "oracle"}))


def test_importing_the_package_is_light_and_opacus_leaves_the_root_logger_alone() -> None:
    code = (
        "import logging, sys, flwr_privshare\n"
        "assert 'opacus' not in sys.modules and 'flwr_privshare.strategies' not in sys.modules\n"
        "from flwr_privshare.dp import train_dp_sgd\n"
        "from flwr_privshare.strategies import DPFedAvg\n"
        "assert 'opacus' in sys.modules\n"
        "print(len(logging.getLogger().handlers))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "0"  # Opacus's import-time basicConfig handler is gone


def test_the_apps_load_without_the_libraries_only_some_runs_use() -> None:
    # Every Ray actor, SuperNode and ServerApp process imports its app: scikit-learn, SciPy's statistics,
    # pyplot and Opacus load in the runs that attack, plot or use DP, not in every process of every run.
    code = (
        "import sys\n"
        "import visualmixer_cifar.client_app, visualmixer_cifar.server_app\n"
        "print(sorted(m for m in ('opacus', 'sklearn', 'scipy.stats', 'matplotlib.pyplot') if m in sys.modules))\n"
    )
    app_root = EXTENSION_APP.parents[1] / "simulations" / "visualmixer_cifar"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=app_root)
    assert done.stdout.strip() == "[]"
