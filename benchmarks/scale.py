"""Wall time per round and peak memory of a simulation at growing client counts: our client against a bare one.

For each client count the same federation runs twice on one local SuperLink: the FedAvg app with
no protection and training cut to one step of one image (``samples-per-client=1``,
``batch-size=1``), so that what remains is our client's overhead (loading its partition,
building the model, the reply), and the bare Flower App of ``benchmarks/bare_app`` whose clients
return the model they received (same model, so the same bytes on the wire). Up to 100 clients all
train every round; beyond, ``--sampled`` of them. The round time is the mean of rounds 2 and later
(round 1 starts the Ray actors). Our clients report the seconds of their training loop
(``train-seconds``, summed over the round's clients); the overhead ratio excludes it, spread
over the Ray actors that train in parallel (one per CPU core): ``(ours - train / actors) /
bare``. The raw ratio is reported beside it. The peak memory is the largest sum over the simulation's whole
process tree (SuperLink, ServerApp, Ray and its workers) of each process's proportional set size
(PSS: shared pages, such as the memory-mapped data set, are split between the processes that
map them), sampled every half second.

    python -m benchmarks.scale --data-dir ../shared/datasets/cifar10 --clients 10,100,1000,10000

writes ``benchmarks/results/scale.json`` with, per client count, both round times, the overhead
ratio (ours / bare) and both peaks.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import threading
from itertools import pairwise
from pathlib import Path
from typing import Any

from flwr_privshare.launch import LocalSuperLink, run_app
from flwr_privshare.protocol import TRAIN_SECONDS
from flwr_privshare.results import atomic_write_json, package_versions

from .app_runs import SIMULATIONS, command_line

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
BARE_APP = Path(__file__).resolve().parent / "bare_app"
#: Ray actors training in parallel: one per core (``client-resources-num-cpus=1``).
ACTORS = os.cpu_count() or 1


def descendants(root: int) -> list[int]:
    """``root`` and every process below it."""
    found, frontier = [root], [root]
    while frontier:
        children = subprocess.run(["pgrep", "-P", ",".join(map(str, frontier))], capture_output=True, text=True)
        frontier = [int(pid) for pid in children.stdout.split()]
        found += frontier
    return found


def pss_bytes(pid: int) -> int:
    """The proportional set size of ``pid`` (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakMemory:
    """Sample the PSS of the processes under the SuperLink listening on ``port``; keep the peak."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            found = subprocess.run(["pgrep", "-f", f"flower-superlink.*{self.port}"], capture_output=True, text=True)
            roots = [int(pid) for pid in found.stdout.split()]
            total = sum(pss_bytes(pid) for root in roots for pid in descendants(root))
            self.peak = max(self.peak, total)


def round_times(elapsed: list[float]) -> list[float]:
    """Seconds per round from the elapsed times after rounds 0..R (round 0: before the first round)."""
    return [later - earlier for earlier, later in pairwise(elapsed)]


def measure(
    app: str, clients: int, fraction: float, rounds: int, data_dir: Path, output: Path, link: LocalSuperLink
) -> dict[str, Any]:
    """One run of ``app`` ("ours" or "bare"): its seconds per round (rounds 2..R) and peak memory."""
    federation = f"num-supernodes={clients} client-resources-num-cpus=1"
    common: dict[str, Any] = {"num-server-rounds": rounds, "fraction-train": fraction}
    if app == "bare":
        config = {**common, "output": str(output / f"bare-{clients}.json")}
        with PeakMemory(link.port) as memory:
            outcome = run_app(BARE_APP, config, federation, superlink=link, timeout_s=6 * 3600)
    else:
        config = {
            **common,
            "data-dir": str(data_dir),
            "output-dir": str(output),
            "run-name": f"ours-{clients}",
            "protection": "none",
            "samples-per-client": 1,
            "batch-size": 1,
            "test-size": 10,
            "oracle-epochs": 0,
        }
        with PeakMemory(link.port) as memory:
            outcome = run_app(SIMULATIONS / "visualmixer_cifar", config, federation, superlink=link, timeout_s=6 * 3600)
    if not outcome.completed:
        raise SystemExit(f"{app} with {clients} clients: {outcome.status}\n{outcome.log[-3000:]}")
    training: list[float] = []
    if app == "bare":
        elapsed = json.loads((output / f"bare-{clients}.json").read_text())["elapsed_s"]
    else:
        rows = list(csv.DictReader((output / f"ours-{clients}" / "rounds.csv").open()))
        elapsed = [float(row["elapsed_s"]) for row in rows]
        training = [float(row[f"train_{TRAIN_SECONDS}"]) for row in rows[2:]]
    per_round = round_times(elapsed)[1:]  # round 1 starts the actors
    round_s = statistics.fmean(per_round)
    measured: dict[str, Any] = {"round_s": round_s, "rounds_s": per_round, "peak_gib": memory.peak / 2**30}
    if training:
        train_s = statistics.fmean(training)  # summed over the round's clients
        measured.update(train_s=train_s, round_s_without_training=round_s - train_s / ACTORS)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="a data folder (CIFAR-10)")
    parser.add_argument("--clients", default="10,100,1000,10000", help="comma-separated client counts")
    parser.add_argument("--sampled", type=int, default=1000, help="clients per round beyond 100 clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/privshare-scale"))
    args = parser.parse_args()
    counts = [int(count) for count in args.clients.split(",")]
    results = []
    with LocalSuperLink() as link:
        for clients in counts:
            fraction = 1.0 if clients <= 100 else min(1.0, args.sampled / clients)
            sampled = max(1, int(clients * fraction))
            output = args.output_dir.resolve() / f"{clients}"
            output.mkdir(parents=True, exist_ok=True)
            bare = measure("bare", clients, fraction, args.rounds, args.data_dir.resolve(), output, link)
            ours = measure("ours", clients, fraction, args.rounds, args.data_dir.resolve(), output, link)
            row = {
                "clients": clients,
                "sampled_per_round": sampled,
                "bare": bare,
                "ours": ours,
                "overhead_ratio": ours["round_s_without_training"] / bare["round_s"],
                "raw_ratio": ours["round_s"] / bare["round_s"],
                "ours_ms_per_client": 1000 * ours["round_s_without_training"] / sampled,
                "bare_ms_per_client": 1000 * bare["round_s"] / sampled,
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    command = command_line("benchmarks.scale", vars(args))
    atomic_write_json(
        RESULTS, {"command": command, "actors": ACTORS, "results": results, "versions": package_versions()}
    )


if __name__ == "__main__":
    main()
