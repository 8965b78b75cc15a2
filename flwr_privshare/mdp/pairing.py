"""The distorted mapping: every target image gets a randomly selected image of another class (Li et al., Sec. 2)."""

from __future__ import annotations

import torch

from ..config.checks import ConfigError


def pair_with_other_classes(labels: torch.Tensor, copies: int, generator: torch.Generator) -> torch.Tensor:
    """For every copy and every target ``i``, the index of an image whose label differs from ``labels[i]``.

    Uniform over all images of the other classes, drawn for all targets at once: with the
    indices sorted by class, a draw ``r`` in ``[0, n - n_c)`` skips the block of the target's
    own class ``c``. Returns a ``(copies, n)`` int64 tensor; ``generator`` makes it reproducible.

    Raises:
        ConfigError: when the labels hold a single class (there is no other class to map to).
    """
    labels = labels.long()
    classes, counts = torch.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ConfigError(
            f"MDP needs images of at least two classes to distort the mapping; this data has only class "
            f"{classes.tolist()} ({len(labels)} images)"
        )
    order = torch.sort(labels, stable=True).indices
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.searchsorted(classes, labels)
    own_start, own_count = starts[slot], counts[slot]
    others = len(labels) - own_count
    draws = (torch.rand((copies, len(labels)), generator=generator, dtype=torch.float64) * others).long()
    draws = torch.minimum(draws, others - 1)  # guard the (measure-zero) u = 1 - ulp rounding
    positions = torch.where(draws < own_start, draws, draws + own_count)
    return order[positions]
