"""``privshare-attack RUN_FOLDER ...``: attacks on finished run folders.

    privshare-attack ~/flwr-privshare-results/my-run --attack loss,lira,rmia --reference-models 8
    privshare-attack ~/flwr-privshare-results/my-vm-run --attack inversion

Membership inference (``loss``, ``shadow``, ``lira``, ``rmia``) writes ``attacks/membership.json``,
``membership_scores.npz`` and ``membership_roc.png`` (``membership_roc_shuffled.png`` too for
VisualMixer runs); the learned inversion of VisualMixer (``inversion``) writes
``attacks/inversion.json`` and ``inversion_examples.png``. Every folder and option is checked
before the first model trains; a bad one exits with the reason and writes nothing.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from ..config import ConfigError
from ..data import DataError
from .inversion import InversionAttack
from .inversion.cli import add_inversion_arguments, parse_inversion_options
from .membership import ATTACKS as MEMBERSHIP_ATTACKS
from .membership import MembershipInference
from .membership.candidates import MembershipData, MembershipError
from .membership.cli import add_membership_arguments, parse_membership_options
from .run_folder import LoadedRun, RunFolderError, load_run_folder

INVERSION = "inversion"
ATTACK_NAMES = (*MEMBERSHIP_ATTACKS, INVERSION)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privshare-attack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_folders", nargs="+", metavar="RUN_FOLDER", help="finished run folders")
    parser.add_argument(
        "--attack",
        default=",".join(MEMBERSHIP_ATTACKS),
        help=f"comma-separated, of {', '.join(ATTACK_NAMES)} (default: the membership attacks)",
    )
    parser.add_argument("--seed", type=int, default=None, help="the attack's seed (default: from the run seed)")
    parser.add_argument("--data-dir", default="", help="the data folder, when it moved since the run")
    add_membership_arguments(parser)
    add_inversion_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = tuple(name.strip() for name in args.attack.split(",") if name.strip())
    unknown = [name for name in names if name not in ATTACK_NAMES]
    if unknown or not names:
        parser.error(f"--attack must name some of {', '.join(ATTACK_NAMES)}, got {args.attack!r}")
    membership_names = tuple(name for name in names if name in MEMBERSHIP_ATTACKS)
    try:
        membership = MembershipInference(parse_membership_options(args, membership_names)) if membership_names else None
        inversion = InversionAttack(parse_inversion_options(args)) if INVERSION in names else None
        loaded: list[tuple[LoadedRun, MembershipData | None]] = []
        for folder in args.run_folders:
            run = load_run_folder(folder, args.data_dir)
            if inversion is not None:
                inversion.check(run.finished)
            data = membership.check(run.finished, run.summary) if membership is not None else None
            loaded.append((run, data))
    except (MembershipError, RunFolderError, ConfigError, DataError) as error:
        parser.error(str(error))
    for run, data in loaded:
        if membership is not None and data is not None:
            report = membership.run(run.finished, run.summary, data)
            print(f"{run.finished.folder.path}/attacks/membership.json")
            print(json.dumps(report["queries"], indent=1))
        if inversion is not None:
            report = inversion.run(run.finished)
            print(f"{run.finished.folder.path}/attacks/inversion.json")
            print(json.dumps({view: report[view] for view in ("client_data", "test")}, indent=1))


if __name__ == "__main__":
    main()
