"""Plain FedAvg vs client DP-SGD vs user-level DP-FedAvg at epsilon ~ 8 and ~ 3: the DP results table.

Every row is one ``flwr run`` of ``simulations/dp_fedavg_cifar`` with the same federation
(10 IID clients by default, all sampled every round), the same model, rounds and local
training (the app's defaults); only ``protection`` and ``target-epsilon`` change. Each row
reports the oracle recognition of what its clients train on: DP leaves the images plain, so it
equals the oracle's plain accuracy. The noise multiplier of each
DP row is the one Opacus's RDP accountant picks so that the whole run stays within the
target epsilon at ``delta``:

- DP-SGD: per client, over every batch it trains on in every round (sample-level DP);
- DP-FedAvg: per user, one Gaussian release per round at sample rate sampled/total clients.

    python -m benchmarks.dp_table --data-root ../shared/datasets --output-dir /tmp/dp-runs

writes ``experiments/dp_table/dp_table.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flwr_privshare.results import atomic_write_json, atomic_write_text, package_versions
from flwr_privshare.summary import RunSummary

from .app_runs import app_defaults, command_line, run_summary

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "dp_table"

# (protection, target epsilon; 0 = no DP)
SETTINGS = [("none", 0.0), ("dp-sgd", 8.0), ("dp-sgd", 3.0), ("dp-fedavg", 8.0), ("dp-fedavg", 3.0)]


def table_rows(summaries: list[RunSummary]) -> list[str]:
    """Markdown rows, one per run."""
    lines = [
        "| data | protection | target epsilon | epsilon spent | noise multiplier | accuracy "
        "| oracle recognition | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        dp = s.dp
        target = f"{dp['target_epsilon']:g}" if dp and dp.get("target_epsilon") else "-"
        spent = f"{s.epsilon:.2f}" if dp else "-"
        noise = f"{dp['noise_multiplier']:.3f}" if dp else "-"
        oracle = s.privacy.get("oracle")
        recognition = f"{oracle['recognition']:.1%}" if oracle else "-"
        lines.append(
            f"| {Path(s.dataset).name} | {s.protection} | {target} | {spent} | {noise} "
            f"| {s.final_accuracy:.1%} | {recognition} | {s.wall_time_s:.0f} s |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True, help="folder with cifar10/ and mnist/")
    parser.add_argument("--output-dir", type=Path, required=True, help="where the run folders go")
    parser.add_argument("--num-clients", type=int, default=10)
    parser.add_argument("--num-server-rounds", type=int, default=app_defaults("dp_fedavg_cifar")["num-server-rounds"])
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--oracle-epochs", type=int, default=10)
    parser.add_argument("--only", default="", help="comma-separated data folders to run (default: all)")
    args = parser.parse_args()

    summaries = []
    for data in ("mnist", "cifar10"):
        if args.only and data not in args.only.split(","):
            continue
        for protection, target_epsilon in SETTINGS:
            name = f"{data}-{protection}-eps{target_epsilon:g}-s{args.seed}"
            config = {
                "data-dir": str((args.data_root / data).resolve()),
                "protection": protection,
                "target-epsilon": target_epsilon,
                "delta": args.delta,
                "num-server-rounds": args.num_server_rounds,
                "seed": args.seed,
                "oracle-epochs": args.oracle_epochs,
            }
            summary = run_summary("dp_fedavg_cifar", name, config, args.num_clients, args.output_dir)
            summaries.append(summary)
            print("\n".join(table_rows([summary])[2:]), flush=True)

    text = "\n".join(
        [
            f"Produced by `{command_line('benchmarks.dp_table', vars(args))}`",
            f"({args.num_clients} IID clients, all sampled in each of {args.num_server_rounds} rounds, "
            f"delta {args.delta:g}, seed {args.seed}; other settings are the app's defaults).",
            "",
            *table_rows(summaries),
            "",
        ]
    )
    runs = [summary.to_json() for summary in summaries]
    atomic_write_json(RESULTS / "dp_table.json", {"runs": runs, "versions": package_versions()})
    atomic_write_text(RESULTS / "dp_table.md", text)
    print(text)


if __name__ == "__main__":
    main()
