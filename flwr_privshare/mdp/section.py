"""The MDP section: PGD settings, the number of copies (AugMDP) and where the feature network comes from."""

from __future__ import annotations

from dataclasses import dataclass

from ..config.checks import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, one_of
from ..config.section import Section, setting
from .distortion import DISTANCES

#: Where a client's feature network f comes from (see docs/mdp.md for the cost of each).
FEATURE_SOURCES = ("public", "global-model")


@dataclass(frozen=True)
class MDPSection(Section):
    """MDP / AugMDP (Li et al., ICASSP 2021): every training pair becomes (an image that looks like another
    class's image, its own label), by PGD on a feature network's penultimate layer."""

    title = "MDP"

    mdp_distance: str = setting(
        "mse",
        'feature distance of the PGD: "mse" (squared l2, l2-normalised steps: the official code) '
        'or "linf" (l-infinity, sign steps: the paper)',
        one_of(DISTANCES),
    )
    mdp_steps: int = setting(100, "PGD steps per image", POSITIVE_INT)
    mdp_step_size: float = setting(
        0.1, "PGD step length (l2 norm of an mse step, per-pixel size of a linf step)", POSITIVE
    )
    mdp_copies: int = setting(1, "modified copies of every image (T; 1 is MDP, 2 or more AugMDP)", POSITIVE_INT)
    mdp_feature_source: str = setting(
        "public",
        'f: "public" (a network the server trains on the public split and sends before round 1) '
        'or "global-model" (the global model the client receives in its first round)',
        one_of(FEATURE_SOURCES),
    )
    mdp_pretrain_epochs: int = setting(10, 'epochs of the server\'s feature network ("public" source)', POSITIVE_INT)
    mdp_batch_size: int = setting(64, "images per PGD batch (64 was the fastest on 2 CPU cores)", POSITIVE_INT)
    mdp_audit_size: int = setting(
        500, "test images the server distorts itself to report SSIM and the oracle's view (0: none)", NON_NEGATIVE_INT
    )
    mdp_record_dir: str = setting(
        "", "folder where every client keeps its protection record for leak detection (on its own machine)"
    )
