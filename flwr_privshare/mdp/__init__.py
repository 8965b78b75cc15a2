"""MDP / AugMDP (Li et al., ICASSP 2021): training pairs whose images look like another class (:mod:`.distortion`)."""

from .distortion import DISTANCES, Distortion, distort_batch, feature_distance, map_distort, penultimate_features
from .pairing import pair_with_other_classes
from .section import FEATURE_SOURCES, MDPSection

__all__ = [
    "DISTANCES",
    "FEATURE_SOURCES",
    "Distortion",
    "MDPSection",
    "distort_batch",
    "feature_distance",
    "map_distort",
    "pair_with_other_classes",
    "penultimate_features",
]
