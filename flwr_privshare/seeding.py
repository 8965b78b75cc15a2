"""Seeds derived from the one run seed, so that partitions, sampling and every RNG follow from it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from the run seed and a purpose (e.g. ``"vim", partition_id``)."""
    text = ":".join(str(part) for part in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global RNG seeded to ``seed``, then restore its state.

    For module initialisation, which draws from the global RNG: a model built inside
    ``seeded(derive_seed(run_seed, purpose))`` is the same in every run with that seed,
    wherever it is built (the ServerApp or a Ray actor).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
