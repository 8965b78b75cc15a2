"""Same seed, same numbers: app runs at small settings, recorded once and compared after every change.

:data:`CASES` names each recorded run (app, run-config overrides, number of SuperNodes). The
end-to-end tests run these cases and compare their ``summary.json`` and ``rounds.csv`` numbers
with ``numbers.json``, which ``python -m tests.golden.record`` wrote on commit 7f9d2c8 (before the
experiment-skeleton refactor), installed on its own in a fresh environment. Two recordings of that
commit differed in some numbers, listed under ``"unstable"`` and not compared:

- the DP-FedAvg cases' noise-dependent numbers: Flower's DP wrappers drew their noise from NumPy's
  unseeded global RNG (the run seed now seeds it);
- the DPM case with the FedAvg bootstrap, everything computed from the bootstrapped Phi (the
  reconstructors, the rounds, the audit): the bootstrap's FedAvg summed the replies in arrival
  order, so Phi differed in the last bits (it now aggregates in content order). Two audit numbers
  that happened to agree between the recordings are listed too.

For those cases ``seeded.json`` holds every number of a run of the fixed code
(``python -m tests.golden.record --into seeded.json CASE ...``), so that a run is compared on all
its numbers: the stable ones with the numbers from before the refactor, the rest with the fixed
code's. Re-record only for a change meant to change results.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NUMBERS = Path(__file__).with_name("numbers.json")
SEEDED = NUMBERS.with_name("seeded.json")
# Timings and the like differ between two runs with the same seed.
UNSTABLE = ("wall_time_s", "elapsed_s")
VISUALMIXER_REPORT = ("window_min", "window_max", "channel_shuffle", "vfe_plain", "vfe_mixed", "vfe_gain")
DPM_SETTINGS = ("straw_man", "ensemble", "ensemble_instances", "self_check", "unseen_reconstructors")


@dataclass(frozen=True)
class Case:
    """One recorded app run: ``app`` under ``simulations/``, run-config ``overrides`` on ``data``."""

    app: str
    data: str
    overrides: Mapping[str, object] = field(default_factory=dict)
    supernodes: int = 3
    slow: bool = False

    def run_config(self, data_root: Path, output_dir: Path, run_name: str = "run") -> dict[str, object]:
        return {
            **self.overrides,
            "data-dir": str(data_root / self.data),
            "output-dir": str(output_dir),
            "run-name": run_name,
        }

    @property
    def app_dir(self) -> Path:
        return ROOT / "simulations" / self.app

    @property
    def federation_config(self) -> str:
        return f"num-supernodes={self.supernodes} client-resources-num-cpus=1"


FEDAVG_SMALL = {
    "num-server-rounds": 2,
    "samples-per-client": 128,
    "test-size": 500,
    "public-size": 1000,
    "oracle-epochs": 1,
}
DP_SMALL = {**FEDAVG_SMALL, "samples-per-client": 256}
DPM_SMALL = {
    "num-server-rounds": 2,
    "samples-per-client": 96,
    "test-size": 200,
    "public-size": 400,
    "dpm-shared-samples": 64,
    "dpm-bootstrap-epochs": 1,
    "reconstructor-epochs": 1,
    # Passes every DPM: 1-epoch reconstructors on 400 images make the check's value arbitrary;
    # the self-check's decisions are tested in tests/poisoning/test_self_check.py and tests/test_wire_dpm.py.
    "dpm-check-threshold": 1.0,
}

CASES: dict[str, Case] = {
    "visualmixer-cifar": Case("visualmixer_cifar", "cifar10", FEDAVG_SMALL),
    "none-mnist": Case(
        "visualmixer_cifar",
        "mnist",
        {**FEDAVG_SMALL, "protection": "none", "dataset": "ylecun/mnist", "samples-per-client": 600},
    ),
    "dp-sgd": Case("dp_fedavg_cifar", "mnist", {**DP_SMALL, "protection": "dp-sgd", "noise-multiplier": 1.0}),
    "dp-fedavg": Case(
        "dp_fedavg_cifar",
        "mnist",
        {**DP_SMALL, "protection": "dp-fedavg", "noise-multiplier": 0.5, "clipping-norm": 1.0},
    ),
    "dp-fedavg-client": Case(
        "dp_fedavg_cifar",
        "mnist",
        {**DP_SMALL, "protection": "dp-fedavg", "noise-multiplier": 0.5, "clipping-norm": 1.0, "dp-clipping": "client"},
    ),
    "dp-fedavg-client-adaptive": Case(
        "dp_fedavg_cifar",
        "mnist",
        {
            **DP_SMALL,
            "protection": "dp-fedavg",
            "noise-multiplier": 0.5,
            "clipping-norm": 1.0,
            "dp-clipping": "client-adaptive",
            "dp-clipped-count-stddev": 1.0,
        },
    ),
    "visualmixer+dp-sgd": Case(
        "dp_fedavg_cifar", "mnist", {**DP_SMALL, "protection": "visualmixer+dp-sgd", "target-epsilon": 8.0}
    ),
    "dpm-mnist-fedavg": Case(
        "dpm_cifar",
        "mnist",
        {
            **DPM_SMALL,
            "dpm-bootstrap": "fedavg",
            "dataset": "ylecun/mnist",
            "dpm-ensemble": "px3s2",
            "dpm-ensemble-instances": 2,
        },
    ),
    "dpm-cifar-server": Case("dpm_cifar", "cifar10", DPM_SMALL, slow=True),
}


def numbers_of(folder: Path) -> dict[str, Any]:
    """The numbers of a finished run folder: ``summary.json`` leaves and ``rounds.csv`` cells."""
    summary = json.loads((folder / "summary.json").read_text())
    rounds = list(csv.DictReader((folder / "rounds.csv").open()))
    numbers: dict[str, Any] = {}
    _flatten("summary", summary, numbers)
    for row in rounds:
        for column, value in row.items():
            if value != "" and not any(word in column for word in UNSTABLE):
                numbers[f"rounds/{row['round']}/{column}"] = float(value)
    return {key: value for key, value in numbers.items() if not any(word in key for word in UNSTABLE)}


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}/{key}", item, into)
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        into[prefix] = value
    else:
        into[prefix] = float(value)


def recorded(case: str) -> dict[str, Any]:
    """The numbers recorded for ``case``, less those that differed between two recordings of the same code."""
    stored = json.loads(NUMBERS.read_text())
    unstable = set(stored.get("unstable", {}).get(case, []))
    return {key: value for key, value in stored[case].items() if key not in unstable}


def current_key(case: str, key: str) -> str:
    """Where a recorded number lives now: ``summary.json``'s privacy block has one section per
    protection and attack since the experiment skeleton (see ``docs/results.md``)."""
    prefix = "summary/privacy/"
    if not key.startswith(prefix):
        return key
    rest = key[len(prefix) :]
    first = rest.split("/")[0]
    if CASES[case].app == "dpm_cifar":
        return prefix + ("dpm/" if first in DPM_SETTINGS else "dpm-audit/") + rest
    if first in VISUALMIXER_REPORT:
        return prefix + "visualmixer/" + rest
    if first in ("oracle_plain_accuracy", "oracle_recognition"):
        return prefix + "oracle/" + {"oracle_plain_accuracy": "plain_accuracy"}.get(first, "recognition")
    if first == "dp":
        protection = str(CASES[case].overrides["protection"])
        return prefix + protection.split("+")[-1] + rest[len("dp") :]
    return key


def differences(case: str, folder: Path, rel: float = 1e-6) -> list[str]:
    """Every recorded number of ``case`` that the run in ``folder`` does not reproduce.

    The stable numbers recorded before the refactor (under their current keys), then, for a case
    that was not reproducible before, every number recorded with the fixed code (``seeded.json``).
    """
    actual = numbers_of(folder)
    expected = {current_key(case, key): value for key, value in recorded(case).items()}
    if SEEDED.is_file() and case in (seeded := json.loads(SEEDED.read_text())):
        expected.update(seeded[case])
    found = []
    for key, value in expected.items():
        if any(word in key for word in UNSTABLE):
            continue
        if key not in actual:
            found.append(f"{key}: recorded {value!r}, missing now")
        elif isinstance(value, float) and isinstance(actual[key], float):
            if not math.isclose(value, actual[key], rel_tol=rel, abs_tol=1e-9) and not (
                math.isnan(value) and math.isnan(actual[key])
            ):
                found.append(f"{key}: recorded {value!r}, now {actual[key]!r}")
        elif value != actual[key]:
            found.append(f"{key}: recorded {value!r}, now {actual[key]!r}")
    return found
