"""Reference (shadow) models: the target's model, protection and budget, trained on halves of the pool.

A reference model trains on a random half of the attacker's pool with the target's
architecture, optimizer, batch size, learning rate and training recipe, in one of two ways:

- ``centralised`` (the default): one model trained for as many epochs as each client's rows
  saw (``num-server-rounds * local-epochs``), the run's learning-rate schedule spread over
  them;
- ``federated``: a FedAvg run of its own, in process: the half is split IID over as many
  clients as the target had, and every round each client trains ``local-epochs`` from the
  global model with the round's schedule, as a client of the run does; the server averages
  the replies weighted by examples (with the run's server learning rate and momentum).

Client-side protections train a reference model as they train a client: VisualMixer
shuffles its rows with keys of the attacker's own, DP-SGD trains with per-example clipping
and noise at the run's settings. Server-side noise (DP-FedAvg) is not reproduced in either
way (docs/attacks.md).

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
from ...recipe.section import RecipeSection, recipe_of, server_optimizer_of
from ...results import atomic_torch_save
from ...seeding import derive_seed, seeded
from ...train import train

#: Bumped when the way reference models are trained changes (old cache entries then miss).
CACHE_VERSION = 1
#: How a reference model is trained (module docstring).
REFERENCE_TRAININGS = ("centralised", "federated")
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


def server_update(
    current: dict[str, torch.Tensor],
    average: dict[str, torch.Tensor],
    server: RecipeSection | None,
    momentum: dict[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """The next global model: FedAvg's weighted ``average``, or FedAvgM's step towards it.

    FedAvgM (Hsu et al. 2019, as Flower's ``FedAvgM``): the pseudo-gradient ``current - average``
    is accumulated into ``momentum`` (updated in place) and the server steps by its learning rate.
    Integer buffers take the rounded average.
    """
    updated = {}
    for key, value in current.items():
        if not value.is_floating_point():
            updated[key] = average[key].round().to(value.dtype)
            continue
        if server is None:
            updated[key] = average[key].to(value.dtype)
            continue
        step = (value.double() - average[key]).to(value.dtype)
        if server.server_momentum:
            step = momentum[key] = server.server_momentum * momentum[key] + step if key in momentum else step
        updated[key] = value - server.server_learning_rate * step
    return updated


class ReferenceTrainer:
    """Trains (or loads from the cache) reference models for one run.

    Args:
        run: the target run's parsed config.
        model_name: the target's architecture.
        seed: the attack's seed (initialisation, batches and VisualMixer keys of reference models).
        device: where to train.
        cache_dir: where trained models are kept (None: no cache).
        training: one of :data:`REFERENCE_TRAININGS`.
        num_clients: the target's clients (the federated reference runs split their half over as many).
        public: the run's public split: protections prepare on it as the run's server did (MDP trains the
            feature network it broadcast to every client, so any insider knows it).
    """

    def __init__(
        self,
        run: RunConfig,
        model_name: str,
        seed: int,
        device: torch.device,
        cache_dir: Path | None,
        training: str = "centralised",
        num_clients: int = 1,
        public: ImageDataset | None = None,
    ) -> None:
        if training not in REFERENCE_TRAININGS:
            raise ValueError(f"reference training must be one of {REFERENCE_TRAININGS}, got {training!r}")
        self.run = run
        self.model_name = model_name
        self.seed = seed
        self.device = device
        self.cache_dir = cache_dir
        self.training = training
        self.num_clients = num_clients
        self.protections = (
            resolve_protections(run[ProtectionSection].protection, run) if ProtectionSection in run else []
        )
        if public is not None:
            for protection in self.protections:
                protection.prepare(public, build_model(model_name, public.num_classes), model_name)

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
                # (centralised keys are those of before the federated option, so cached models stay valid)
                **({"training": self.training, "clients": self.num_clients} if self.training == "federated" else {}),
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
        rows = pool.subset(np.flatnonzero(membership))
        model = self.train(rows, index) if self.training == "centralised" else self.train_federated(rows, index)
        if path is not None:
            atomic_torch_save(model.state_dict(), path)
        return model

    def train(self, data: ImageDataset, index: int) -> ImageClassifier:
        """Train one reference model centrally on ``data``, for the epochs every client row saw in the run."""
        common = self.run[CommonSection]
        model = self.initial_model(data.num_classes, index)
        context = self.client_context(index, 0)
        data = self.protected(data, context, model)
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
        self.train_client(model, data, context, local)
        return model.cpu()

    def train_federated(self, data: ImageDataset, index: int) -> ImageClassifier:
        """Train one reference model with FedAvg over ``num_clients`` IID shares of ``data``, round by round."""
        common = self.run[CommonSection]
        model = self.initial_model(data.num_classes, index)
        order = np.random.default_rng(derive_seed(self.seed, "reference-partition", index)).permutation(len(data))
        clients = []
        for client, rows in enumerate(np.array_split(order, self.num_clients)):
            context = self.client_context(index, client)
            clients.append((self.protected(data.subset(np.sort(rows)), context, model), context))
        total = sum(len(share) for share, _ in clients)
        server = server_optimizer_of(self.run)
        momentum: dict[str, torch.Tensor] = {}
        for server_round in range(1, common.num_server_rounds + 1):
            current = {key: value.detach().clone() for key, value in model.state_dict().items()}
            average = {key: torch.zeros_like(value, dtype=torch.float64) for key, value in current.items()}
            for client, (share, context) in enumerate(clients):
                local_model = build_model(self.model_name, data.num_classes)
                local_model.load_state_dict(current)
                local = LocalTraining(
                    epochs=common.local_epochs,
                    batch_size=common.batch_size,
                    optimizer=common.optimizer,
                    learning_rate=common.learning_rate,
                    device=self.device,
                    seed=derive_seed(self.seed, "reference-train", index, client, server_round),
                    num_server_rounds=common.num_server_rounds,
                    recipe=recipe_of(self.run, share.image_shape, server_round),
                )
                self.train_client(local_model, share, context, local)
                for key, value in local_model.cpu().state_dict().items():
                    average[key] += value.double() * (len(share) / total)
            updated = server_update(current, average, server, momentum)
            model.load_state_dict(updated)
        return model

    def initial_model(self, num_classes: int, index: int) -> ImageClassifier:
        """Reference model ``index`` before training (seeded by the attack's seed, not the run's)."""
        with seeded(derive_seed(self.seed, "reference-init", index)):
            return build_model(self.model_name, num_classes)

    def client_context(self, index: int, client: int) -> Context:
        """A client context of the attacker's own: its VisualMixer key is the attacker's, not a client's."""
        return Context(
            run_id=0,
            node_id=index * self.num_clients + client,
            node_config={
                "partition-id": client,
                "num-partitions": self.num_clients,
                "vim-seed": derive_seed(self.seed, "reference-visualmixer", index, *((client,) if client else ())),
            },
            state=RecordDict(),
            run_config={},
        )

    def protected(self, data: ImageDataset, context: Context, model: ImageClassifier) -> ImageDataset:
        """``data`` after every client-side protection's data hook (VisualMixer shuffles it; MDP distorts it with
        ``model``, the reference model before training, when its feature source is the global model)."""
        for protection in self.protections:
            data, _ = protection.client_data(data, context, model)
        return data

    def train_client(self, model: ImageClassifier, data: ImageDataset, context: Context, local: LocalTraining) -> None:
        """Train ``model`` in place as a client of the run trains: plainly, or with the protection's own loop."""
        trainer = next((p for p in self.protections if p.replaces_training()), None)
        if trainer is not None:
            trainer.train(model, data, context, local)
        else:
            train(model, data, generator=torch.Generator().manual_seed(local.seed), **local.loop_settings())
