"""The membership options of ``privshare-attack`` (the command is :mod:`flwr_privshare.attacks.cli`)."""

from __future__ import annotations

import argparse

from .attack import MembershipOptions
from .reference import REFERENCE_TRAININGS


def add_membership_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the membership attacks."""
    defaults = MembershipOptions()
    group = parser.add_argument_group("membership inference")
    group.add_argument("--reference-models", type=int, default=defaults.reference_models)
    group.add_argument("--members", type=int, default=defaults.members, help="member candidates")
    group.add_argument("--non-members", type=int, default=defaults.non_members, help="non-member candidates")
    group.add_argument("--population", type=int, default=defaults.population, help="RMIA's population samples")
    group.add_argument(
        "--extra-pool",
        type=int,
        default=None,
        help="further pool rows for reference models (default: the rest of the test split)",
    )
    group.add_argument(
        "--reference-training",
        default=defaults.reference_training,
        help=f"one of {', '.join(REFERENCE_TRAININGS)}: one model for the run's epochs, or a FedAvg run of its own "
        "over as many clients as the target's",
    )


def parse_membership_options(args: argparse.Namespace, attacks: tuple[str, ...]) -> MembershipOptions:
    """The membership options of the command line, for the membership ``attacks`` it names."""
    return MembershipOptions(
        attacks=attacks,
        reference_models=args.reference_models,
        members=args.members,
        non_members=args.non_members,
        population=args.population,
        extra_pool=args.extra_pool,
        seed=args.seed,
        reference_training=args.reference_training,
    )
