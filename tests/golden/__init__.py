"""Same seed, same numbers: app runs at small settings, recorded once per CPU and compared after every change.

:data:`CASES` names each recorded run (app, run-config overrides, number of SuperNodes). The
end-to-end tests run these cases and compare every number of their ``summary.json`` and
``rounds.csv`` with ``numbers.json``, which ``python -m tests.golden.record`` wrote with the CPU
kernels pinned to AVX2 (see ``tests/__init__.py``). Pinning is not enough across CPUs: an AMD
EPYC (Zen 4) and the machine of the first recording differ in the fifth digit of a loss, and the
DPM runs, which are chaotic, diverge from there. So the numbers are kept per CPU
(:func:`cpu_key`); on a CPU without a recording the comparison is skipped with a warning (the
rest of every end-to-end test still runs) until ``python -m tests.golden.record`` is run there.

Re-record only for a change meant to change results; the FedAvg cases pin the plain local loop
(:data:`PLAIN_LOOP`), so new defaults of the training recipe do not move them.
"""

from __future__ import annotations

import csv
import json
import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NUMBERS = Path(__file__).with_name("numbers.json")
# Timings and the like differ between two runs with the same seed.
UNSTABLE = ("wall_time_s", "elapsed_s", "train-seconds")
# Local folders: where the data sets lie differs between machines (CI clones elsewhere), so only
# the folder's name is compared.
LOCATIONS = ("summary/dataset",)


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


# The local loop the numbers were recorded with: the training recipe off, the old defaults.
PLAIN_LOOP = {
    "augmentation": "none",
    "lr-schedule": "constant",
    "label-smoothing": 0.0,
    "local-epochs": 1,
    "batch-size": 32,
    "learning-rate": 0.05,
    "optimizer": "sgd",
    "server-learning-rate": 1.0,
    "server-momentum": 0.0,
}
FEDAVG_SMALL = {
    **PLAIN_LOOP,
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
            "dp-sampling": "fixed",
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


def cpu_key() -> str:
    """The CPU the numbers belong to: vendor, family and model from ``/proc/cpuinfo``."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    fields = {
        key: re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE) for key in ("vendor_id", "cpu family", "model")
    }
    vendor, family, model = (match.group(1).strip() if match else "?" for match in fields.values())
    return f"{vendor} family {family} model {model}"


def recordings() -> dict[str, dict[str, dict[str, Any]]]:
    """``{cpu key: {case: numbers}}``."""
    return dict(json.loads(NUMBERS.read_text())) if NUMBERS.is_file() else {}


def recorded(case: str) -> dict[str, Any] | None:
    """The numbers recorded for ``case`` on this CPU (None: none recorded here)."""
    numbers = recordings().get(cpu_key(), {}).get(case)
    return None if numbers is None else dict(numbers)


def differences(case: str, folder: Path, rel: float = 1e-6) -> list[str]:
    """Every recorded number of ``case`` that the run in ``folder`` does not reproduce."""
    actual = numbers_of(folder)
    expected = recorded(case)
    if expected is None:
        warnings.warn(f"no golden numbers of {case!r} on this CPU ({cpu_key()}); not compared", stacklevel=2)
        return []
    found = []
    for key, value in expected.items():
        if any(word in key for word in UNSTABLE):
            continue
        if key in LOCATIONS and key in actual:
            value, actual[key] = Path(str(value)).name, Path(str(actual[key])).name
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
