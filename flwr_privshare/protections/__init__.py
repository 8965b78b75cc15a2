"""Protections as composable, registered parts (see :mod:`.base`); importing this package registers the built-ins.

A new protection is one module (or package) with a :class:`Protection` subclass decorated
with :func:`register_protection`, plus one import line here.
"""

from .base import (
    HeadlineColumn,
    LocalTraining,
    Protection,
    ProtectionSection,
    method_name,
    parse_protection_names,
    protection_classes,
    register_protection,
    registered_protections,
    resolve_protections,
)
from .dp_fedavg import DPFedAvgProtection, dp_clipping_mod
from .dp_sgd import DPSGDProtection
from .mdp import MDPProtection
from .visualmixer import VisualMixerProtection

__all__ = [
    "DPFedAvgProtection",
    "DPSGDProtection",
    "HeadlineColumn",
    "LocalTraining",
    "MDPProtection",
    "Protection",
    "ProtectionSection",
    "VisualMixerProtection",
    "dp_clipping_mod",
    "method_name",
    "parse_protection_names",
    "protection_classes",
    "register_protection",
    "registered_protections",
    "resolve_protections",
]
