"""The inversion options of ``privshare-attack`` (the command is :mod:`flwr_privshare.attacks.cli`)."""

from __future__ import annotations

import argparse

from .attack import InversionOptions


def add_inversion_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the inversion attack."""
    defaults = InversionOptions()
    group = parser.add_argument_group("inversion of VisualMixer")
    group.add_argument("--inversion-epochs", type=int, default=defaults.epochs, help="epochs of the inversion network")
    group.add_argument(
        "--inversion-images", type=int, default=defaults.images, help="leaked client images and test images inverted"
    )
    group.add_argument("--inversion-oracle-epochs", type=int, default=defaults.oracle_epochs)


def parse_inversion_options(args: argparse.Namespace) -> InversionOptions:
    """The inversion options of the command line."""
    return InversionOptions(
        epochs=args.inversion_epochs,
        images=args.inversion_images,
        oracle_epochs=args.inversion_oracle_epochs,
        seed=args.seed,
    )
