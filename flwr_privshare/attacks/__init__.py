"""Attacks and privacy measurements that run after a run (see :mod:`.base`); importing this registers them."""

from .base import Attack, FinishedRun, build_attack, register_attack, registered_attacks
from .gan import GanAttack, GanSection
from .membership import MembershipInference, MembershipOptions
from .oracle import OracleRecognition, OracleSection, oracle_recognition
from .reconstruction_audit import ReconstructionAudit

__all__ = [
    "Attack",
    "FinishedRun",
    "GanAttack",
    "GanSection",
    "MembershipInference",
    "MembershipOptions",
    "OracleRecognition",
    "OracleSection",
    "ReconstructionAudit",
    "build_attack",
    "oracle_recognition",
    "register_attack",
    "registered_attacks",
]
