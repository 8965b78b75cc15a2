"""``privshare-attack RUN_FOLDER ...``: membership inference on finished run folders.

    privshare-attack ~/flwr-privshare-results/my-run --attack loss,lira,rmia --reference-models 8

writes ``RUN_FOLDER/attacks/membership.json``, ``membership_scores.npz`` and
``membership_roc.png`` (``membership_roc_shuffled.png`` too for VisualMixer runs). Every
folder and option is checked before the first model trains; a bad one exits with the reason
and writes nothing.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from ...config import ConfigError
from ...data import DataError
from ..run_folder import LoadedRun, RunFolderError, load_run_folder
from .attack import ATTACKS, MembershipInference, MembershipOptions
from .candidates import MembershipData, MembershipError
from .reference import REFERENCE_TRAININGS


def parse_options(args: argparse.Namespace) -> MembershipOptions:
    """The options of the command line."""
    return MembershipOptions(
        attacks=tuple(name.strip() for name in args.attack.split(",") if name.strip()),
        reference_models=args.reference_models,
        members=args.members,
        non_members=args.non_members,
        population=args.population,
        extra_pool=args.extra_pool,
        seed=args.seed,
        reference_training=args.reference_training,
    )


def build_parser() -> argparse.ArgumentParser:
    defaults = MembershipOptions()
    parser = argparse.ArgumentParser(
        prog="privshare-attack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_folders", nargs="+", metavar="RUN_FOLDER", help="finished run folders")
    parser.add_argument("--attack", default=",".join(ATTACKS), help=f"comma-separated, of {', '.join(ATTACKS)}")
    parser.add_argument("--reference-models", type=int, default=defaults.reference_models)
    parser.add_argument("--members", type=int, default=defaults.members, help="member candidates")
    parser.add_argument("--non-members", type=int, default=defaults.non_members, help="non-member candidates")
    parser.add_argument("--population", type=int, default=defaults.population, help="RMIA's population samples")
    parser.add_argument(
        "--extra-pool",
        type=int,
        default=None,
        help="further pool rows for reference models (default: the rest of the test split)",
    )
    parser.add_argument(
        "--reference-training",
        default=defaults.reference_training,
        help=f"one of {', '.join(REFERENCE_TRAININGS)}: one model for the run's epochs, or a FedAvg run of its own "
        "over as many clients as the target's",
    )
    parser.add_argument("--seed", type=int, default=None, help="the attack's seed (default: from the run seed)")
    parser.add_argument("--data-dir", default="", help="the data folder, when it moved since the run")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    attack = MembershipInference(parse_options(args))
    loaded: list[tuple[LoadedRun, MembershipData]] = []
    try:
        for folder in args.run_folders:
            run = load_run_folder(folder, args.data_dir)
            loaded.append((run, attack.check(run.finished, run.summary)))
    except (MembershipError, RunFolderError, ConfigError, DataError) as error:
        parser.error(str(error))
    for run, data in loaded:
        report = attack.run(run.finished, run.summary, data)
        print(f"{run.finished.folder.path}/attacks/membership.json")
        print(json.dumps(report["queries"], indent=1))


if __name__ == "__main__":
    main()
