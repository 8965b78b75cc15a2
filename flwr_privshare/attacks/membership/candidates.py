"""The membership game's rows: members, non-members, the reference pool and RMIA's population.

- **Members**: training-split rows that some client trained on, recomputed from the run's
  seeded partitions and, when clients are sampled, the partitions recorded in the run's
  ``participation.json`` (:func:`trained_rows`); in a DPM run, the rows whose poisoned features
  some client shared (:func:`shared_rows`). This is the only place the attack reads a
  client's partition, and only to label the ground truth; no score ever sees which rows they are.
- **Non-members**: test-split rows. No client and no server step trains on the test split
  (the server only evaluates on it), so no model of the run saw them.
- **Extra pool rows**: further test-split rows that only reference models train on.
- **Population**: test-split rows no model trains on (RMIA's ``z``).

The attacker's pool (what reference models train random halves of) is
``members + non-members + extra``: the candidates plus held-out rows from the same distribution.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ...config.common import CommonSection
from ...data import ImageDataset, client_rows, load_split
from ...poisoning.procedures import shared_sample
from ...poisoning.section import DPMSection


class MembershipError(ValueError):
    """Options the run folder or the data cannot serve (raised before any work)."""


def require_every_client(common: CommonSection) -> None:
    """Refuse a run without ``participation.json`` whose clients were sampled: who trained is unknown."""
    if common.fraction_train < 1.0:
        raise MembershipError(
            f"fraction-train is {common.fraction_train:g} and the run folder has no participation.json, so "
            "which clients trained is unknown (re-run it with this version)"
        )


def trained_rows(common: CommonSection, num_clients: int, participants: set[int] | None = None) -> np.ndarray:
    """Training-split rows of every partition whose client trained: the ground truth of membership.

    Args:
        participants: the partitions whose clients trained in some round (the run's
            ``participation.json``); None for a run without that record, where every client
            must have trained every round (``fraction-train`` = 1).
    """
    if participants is None:
        require_every_client(common)
    partitions = range(num_clients) if participants is None else sorted(participants)
    rows = [client_rows(common, partition, num_clients) for partition in partitions]
    if not rows:
        raise MembershipError("no client trained in this run (participation.json is empty): there are no members")
    return np.unique(np.concatenate(rows))


def shared_rows(
    common: CommonSection, dpm: DPMSection, num_clients: int, participation: dict[int, list[int]] | None = None
) -> np.ndarray:
    """Training-split rows whose poisoned features some client shared in some round: a DPM run's ground truth.

    With ``dpm-bootstrap = "server"`` these are the only client rows that trained the model
    (the server refines phi2 on them).

    Args:
        participation: ``{round: partitions}`` whose features the server received (the run's
            ``participation.json``); None: every client shared in every round (``fraction-train``
            = 1 and, as the attack checks in the summary, no reply withheld or rejected).
    """
    if participation is None:
        require_every_client(common)
        rounds = range(1, common.num_server_rounds + 1)
        participation = {server_round: list(range(num_clients)) for server_round in rounds}
    partition_rows = {
        partition: client_rows(common, partition, num_clients) for partition in set().union(*participation.values())
    }
    shared = [np.zeros(0, dtype=np.int64)]
    for server_round, partitions in participation.items():
        for partition in partitions:
            rows = partition_rows[partition]
            sample = shared_sample(common.seed, partition, server_round, dpm.dpm_shared_samples, len(rows))
            shared.append(rows[sample.numpy()])
    return np.unique(np.concatenate(shared))


@dataclass(frozen=True)
class MembershipData:
    """The rows of one membership game and their images.

    Attributes:
        pool: members, then non-members, then the extra rows (reference models train halves of it).
        population: RMIA's ``z`` (no model trains on them).
        num_members: members at the head of ``pool``.
        num_non_members: non-members after them.
        member_rows: their indices in the training split.
        non_member_rows: their indices in the test split.
        extra_rows: the extra pool rows' indices in the test split.
    """

    pool: ImageDataset
    population: ImageDataset
    num_members: int
    num_non_members: int
    member_rows: np.ndarray
    non_member_rows: np.ndarray
    extra_rows: np.ndarray

    @property
    def num_candidates(self) -> int:
        return self.num_members + self.num_non_members

    @property
    def pool_digest(self) -> str:
        """A digest of which rows the pool holds, in order (training-split rows, then test-split rows)."""
        rows = np.concatenate([self.member_rows, [-1], self.non_member_rows, self.extra_rows]).astype(np.int64)
        return hashlib.sha256(rows.tobytes()).hexdigest()

    @property
    def is_member(self) -> np.ndarray:
        """``(num_candidates,)`` the ground truth of the candidates."""
        return np.arange(self.num_candidates) < self.num_members


def _concat(*parts: ImageDataset) -> ImageDataset:
    return ImageDataset(
        torch.cat([part.images for part in parts]), torch.cat([part.labels for part in parts]), parts[0].num_classes
    )


def membership_data(
    common: CommonSection,
    num_clients: int,
    *,
    members: int,
    non_members: int,
    population: int,
    extra: int | None,
    seed: int,
    dpm: DPMSection | None = None,
    participation: dict[int, list[int]] | None = None,
) -> MembershipData:
    """Draw the game's rows with ``seed``; refuse counts the data cannot serve, naming the option.

    Args:
        extra: further pool rows from the test split (None: all that are left).
        dpm: the run's DPM settings (members are then the rows whose features were shared).
        participation: ``{round: partitions whose clients trained}`` (``participation.json``), or None.
    """
    train_split = load_split(common.dataset, "train", common.data_dir)
    test_split = load_split(common.dataset, "test", common.data_dir)
    if dpm is not None:
        trained = shared_rows(common, dpm, num_clients, participation)
    else:
        participants = None if participation is None else set().union(*participation.values())
        trained = trained_rows(common, num_clients, participants)
    if not 1 <= members <= len(trained):
        raise MembershipError(f"--members must be in [1, {len(trained)}] (rows the clients trained on), got {members}")
    if non_members < 1 or non_members + population > len(test_split):
        raise MembershipError(
            f"--non-members ({non_members}) and --population ({population}) come from the "
            f"{len(test_split)} test rows: each at least 1 and together at most {len(test_split)}"
        )
    if population < 1:
        raise MembershipError(f"--population must be at least 1, got {population}")
    left = len(test_split) - non_members - population
    extra = left if extra is None else extra
    if not 0 <= extra <= left:
        raise MembershipError(f"--extra-pool must be in [0, {left}] (the test rows left), got {extra}")
    rng = np.random.default_rng(seed)
    member_rows = np.sort(rng.choice(trained, size=members, replace=False))
    test_order = rng.permutation(len(test_split))
    non_member_rows = np.sort(test_order[:non_members])
    population_rows = test_order[non_members : non_members + population]
    extra_rows = test_order[non_members + population :][:extra]
    pool = _concat(train_split.subset(member_rows), test_split.subset(non_member_rows), test_split.subset(extra_rows))
    return MembershipData(
        pool, test_split.subset(population_rows), members, non_members, member_rows, non_member_rows, extra_rows
    )
