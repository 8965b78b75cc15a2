"""Membership inference on a run's global model (LOSS, shadow models, LiRA, RMIA); see :mod:`.attack`."""

from .attack import ATTACKS, MembershipInference, MembershipOptions
from .candidates import MembershipError

__all__ = ["ATTACKS", "MembershipError", "MembershipInference", "MembershipOptions"]
