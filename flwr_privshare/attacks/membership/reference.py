"""Reference (shadow) models: the target's model, protection and budget, trained on halves of the pool.

A reference model is a centralised stand-in for the target run: the same architecture,
optimizer, batch size, learning rate and training recipe, trained for the same number of
epochs as each client's rows saw (``num-server-rounds * local-epochs``), on a random half of
the attacker's pool. Client-side protections train it as they train a client: VisualMixer
shuffles its half with a key of the attacker's own, DP-SGD trains it with per-example clipping
and noise at the run's settings. Server-side protections (DP-FedAvg's noise on the average)
have no centralised counterpart and are not reproduced (docs/attacks.md).

Memberships are balanced as in Carlini et al. (2022): every pool row is IN for exactly
half of the reference models (rounded down), so online LiRA has IN and OUT models for every
candidate. Trained models are cached under the run folder, keyed by everything that decides
them (run config, pool rows, membership, index, seed), so a second attack reuses them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from flwr.app import Context, RecordDict

from ...config import CommonSection, RunConfig
from ...data import ImageDataset
from ...models import ImageClassifier, build_model
from ...protections import ProtectionSection, resolve_protections
from ...protections.base import LocalTraining
from ...recipe import Recipe
from ...recipe.section import RecipeSection
from ...results import atomic_target
from ...seeding import derive_seed, seeded
from ...train import train

#: Bumped when the way reference models are trained changes (old cache entries then miss).
CACHE_VERSION = 1
#: Run-config keys that do not change what a client trains.
IRRELEVANT_KEYS = ("output-dir", "run-name", "oracle-epochs")


def reference_memberships(pool_size: int, count: int, seed: int) -> np.ndarray:
    """``(count, pool_size)`` booleans: which pool rows reference model k trains on (half the pool each)."""
    rng = np.random.default_rng(seed)
    if count == 1:
        return (rng.permutation(pool_size) < pool_size // 2)[None, :]
    order = rng.uniform(size=(count, pool_size)).argsort(axis=0)
    return np.asarray(order < count // 2)


def reference_epochs(run: RunConfig) -> int:
    """The epochs each client row trains for over the run (all clients train every round)."""
    common = run[CommonSection]
    return common.num_server_rounds * common.local_epochs


class ReferenceTrainer:
    """Trains (or loads from the cache) reference models for one run.

    Args:
        run: the target run's parsed config.
        model_name: the target's architecture.
        seed: the attack's seed (initialisation, batches and VisualMixer keys of reference models).
        device: where to train.
        cache_dir: where trained models are kept (None: no cache).
    """

    def __init__(
        self, run: RunConfig, model_name: str, seed: int, device: torch.device, cache_dir: Path | None
    ) -> None:
        self.run = run
        self.model_name = model_name
        self.seed = seed
        self.device = device
        self.cache_dir = cache_dir
        self.protections = (
            resolve_protections(run[ProtectionSection].protection, run) if ProtectionSection in run else []
        )

    def cache_key(self, pool_rows_digest: str, membership: np.ndarray, index: int) -> str:
        """A digest of everything that decides reference model ``index``."""
        config = {key: value for key, value in self.run.to_run_config().items() if key not in IRRELEVANT_KEYS}
        text = json.dumps(
            {
                "version": CACHE_VERSION,
                "config": config,
                "model": self.model_name,
                "seed": self.seed,
                "index": index,
                "pool": pool_rows_digest,
                "membership": hashlib.sha256(np.packbits(membership).tobytes()).hexdigest(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def model(self, pool: ImageDataset, membership: np.ndarray, index: int, pool_rows_digest: str) -> ImageClassifier:
        """Reference model ``index``, trained on ``pool``'s rows where ``membership`` holds (or from the cache)."""
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{self.cache_key(pool_rows_digest, membership, index)}.pt"
            if path.is_file():
                model = build_model(self.model_name, pool.num_classes)
                model.load_state_dict(torch.load(path, weights_only=True))
                return model
        model = self.train(pool.subset(np.flatnonzero(membership)), index)
        if path is not None:
            with atomic_target(path) as temporary:
                torch.save(model.state_dict(), temporary)
        return model

    def train(self, data: ImageDataset, index: int) -> ImageClassifier:
        """Train one reference model on ``data`` as a client of the run would, for the run's epochs."""
        common = self.run[CommonSection]
        with seeded(derive_seed(self.seed, "reference-init", index)):
            model = build_model(self.model_name, data.num_classes)
        # A client context of the attacker's own: its VisualMixer key is the attacker's, not a client's.
        context = Context(
            run_id=0,
            node_id=index,
            node_config={
                "partition-id": index,
                "num-partitions": index + 1,
                "vim-seed": derive_seed(self.seed, "reference-visualmixer", index),
            },
            state=RecordDict(),
            run_config={},
        )
        for protection in self.protections:
            data, _ = protection.client_data(data, context)
        recipe = (
            Recipe.from_section(self.run[RecipeSection], data.image_shape, 1, 1)
            if RecipeSection in self.run
            else Recipe()
        )
        local = LocalTraining(
            epochs=reference_epochs(self.run),
            batch_size=common.batch_size,
            optimizer=common.optimizer,
            learning_rate=common.learning_rate,
            device=self.device,
            seed=derive_seed(self.seed, "reference-train", index),
            num_server_rounds=1,
            recipe=recipe,
        )
        trainer = next((p for p in self.protections if p.replaces_training()), None)
        if trainer is not None:
            trainer.train(model, data, context, local)
        else:
            train(model, data, generator=torch.Generator().manual_seed(local.seed), **local.loop_settings())
        return model.cpu()
