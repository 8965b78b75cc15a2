"""Learned inversion of VisualMixer's shuffling (:mod:`.attack`) with a small U-Net (:mod:`.network`)."""

from .attack import InversionAttack, InversionOptions, invert, similarity, train_inversion
from .network import InversionUNet

__all__ = ["InversionAttack", "InversionOptions", "InversionUNet", "invert", "similarity", "train_inversion"]
