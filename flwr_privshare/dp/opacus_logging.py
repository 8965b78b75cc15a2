"""Undo the root log handler that importing Opacus adds.

``opacus/utils/module_utils.py`` calls ``logging.basicConfig`` at import time, which gives the
root logger a stderr handler. Flower's own logger propagates to the root, so every log line of
``flwr run --stream`` would then appear twice (Flower's line, then a timestamped copy). Every
module of this package that imports Opacus calls :func:`drop_opacus_root_handler` after its
imports, which leaves the root logger as Flower (or the user) set it.
"""

from __future__ import annotations

import logging

OPACUS_FORMAT = "%(asctime)s:%(levelname)s:%(message)s"  # the format of Opacus's basicConfig


def drop_opacus_root_handler() -> None:
    """Remove root handlers whose format is the one Opacus's ``basicConfig`` sets."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.formatter is not None and handler.formatter._fmt == OPACUS_FORMAT:
            root.removeHandler(handler)
