"""The GPU checks in one go, for a machine with CUDA: mixer throughput, DP-SGD throughput ratio, 100 clients on one GPU.

1. ``benchmarks.vim_throughput`` on the GPU (the vectorised mixer against its loop reference);
2. ``benchmarks.dp_overhead`` on the GPU (DP-SGD's images/s against plain training);
3. one simulation of ``simulations/visualmixer_cifar`` with 100 clients packed onto the GPU by
   fractional resources (``client-resources-num-gpus``, default 0.1: ten Ray actors share it),
   two rounds; it checks that every client trained on CUDA (the ``on-cuda`` metric, 1 when the
   client's device was CUDA) and reports the seconds per round.

Each check runs in its own process, so one failing does not hide the others; the figures go to
``benchmarks/results/gpu_checks.json`` (with each check's status) and the exit status is 1 when
any check failed. Without CUDA it refuses before running anything.

    python -m benchmarks.gpu_checks --data-root ../shared/datasets
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

from flwr_privshare.launch import RunConfigValue, run_app
from flwr_privshare.protocol import ON_CUDA
from flwr_privshare.results import atomic_write_json, package_versions
from flwr_privshare.train import describe_device, get_device

from .app_runs import SIMULATIONS, command_line

RESULTS = Path(__file__).resolve().parent / "results" / "gpu_checks.json"


def module_check(module: str, data_dir: Path | None, output: Path) -> dict[str, Any]:
    """Run ``python -m module`` with its results written to ``output``; its figures, or why it failed."""
    command = [sys.executable, "-m", module, "--output", str(output)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"status": "failed", "reason": (done.stdout + done.stderr)[-3000:]}
    return {"status": "passed", **json.loads(output.read_text())}


def fractional_gpu_round(data_dir: Path, clients: int, gpus_per_client: float, work: Path) -> dict[str, Any]:
    """Two rounds of the VisualMixer app with ``clients`` clients sharing the GPU; seconds per round, CUDA share."""
    federation = f"num-supernodes={clients} client-resources-num-cpus=1 client-resources-num-gpus={gpus_per_client}"
    config: dict[str, RunConfigValue] = {
        "data-dir": str(data_dir),
        "output-dir": str(work),
        "run-name": "fractional-gpu",
        "num-server-rounds": 2,
        "oracle-epochs": 0,
    }
    outcome = run_app(SIMULATIONS / "visualmixer_cifar", config, federation, timeout_s=1800)
    if not outcome.completed:
        return {"status": "failed", "reason": outcome.status + "\n" + outcome.log[-3000:]}
    rows = list(csv.DictReader((work / "fractional-gpu" / "rounds.csv").open()))
    elapsed = [float(row["elapsed_s"]) for row in rows]
    on_cuda = [float(row[f"train_{ON_CUDA}"]) for row in rows[1:]]
    return {
        "status": "passed" if all(share == 1.0 for share in on_cuda) else "failed",
        "reason": "" if all(share == 1.0 for share in on_cuda) else f"share of clients on CUDA per round: {on_cuda}",
        "clients": clients,
        "gpus_per_client": gpus_per_client,
        "round_s": [later - earlier for earlier, later in pairwise(elapsed)],
        "cuda_share_per_round": on_cuda,
        "final_accuracy": float(rows[-1]["accuracy"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True, help="folder with cifar10/")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--gpus-per-client", type=float, default=0.1)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: the GPU checks need one (the CPU figures are the other benchmarks')")
    data_dir = (args.data_root / "cifar10").resolve()
    if not data_dir.is_dir():
        raise SystemExit(f"--data-root: {data_dir} is not a folder (the CIFAR-10 parquet files go there)")
    with tempfile.TemporaryDirectory(prefix="privshare-gpu-") as scratch:
        work = Path(scratch)
        checks = {
            "mixer_throughput": module_check("benchmarks.vim_throughput", data_dir, work / "vim.json"),
            "dp_sgd_throughput": module_check("benchmarks.dp_overhead", data_dir, work / "dp.json"),
            "fractional_gpu_round": fractional_gpu_round(data_dir, args.clients, args.gpus_per_client, work),
        }
    result = {
        "command": command_line("benchmarks.gpu_checks", vars(args)),
        "device": describe_device(get_device()),
        "checks": checks,
        "versions": package_versions(),
    }
    atomic_write_json(RESULTS, result)
    for name, check in checks.items():
        print(f"{name}: {check['status']} {check.get('reason', '')[:300]}")
    sys.exit(0 if all(check["status"] == "passed" for check in checks.values()) else 1)


if __name__ == "__main__":
    main()
