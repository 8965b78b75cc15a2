"""Keep the root log handler that importing Opacus adds out of Flower's log.

``opacus/utils/module_utils.py`` calls ``logging.basicConfig`` at import time, which gives the
root logger a stderr handler. Flower's own logger propagates to the root, so every log line of
``flwr run --stream`` would then appear twice (Flower's line, then a timestamped copy).

- :func:`quiet_import` imports a module of this package while the root logger holds a
  placeholder handler, so ``basicConfig`` finds a handler and adds none; the names of
  :mod:`flwr_privshare.dp` load through it (and so do the strategies and protections).
- :func:`drop_opacus_root_handler` removes the handler afterwards where a submodule was imported
  directly; every module that imports Opacus calls it after its imports.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

OPACUS_FORMAT = "%(asctime)s:%(levelname)s:%(message)s"  # the format of Opacus's basicConfig


def quiet_import(name: str, package: str) -> ModuleType:
    """``importlib.import_module(name, package)`` without letting an import-time ``basicConfig`` add a root handler."""
    root = logging.getLogger()
    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder is not None:
        root.addHandler(placeholder)
    try:
        return importlib.import_module(name, package)
    finally:
        if placeholder is not None:
            root.removeHandler(placeholder)


def drop_opacus_root_handler() -> None:
    """Remove root handlers whose format is the one Opacus's ``basicConfig`` sets."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.formatter is not None and handler.formatter._fmt == OPACUS_FORMAT:
            root.removeHandler(handler)
