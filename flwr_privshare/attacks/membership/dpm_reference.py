"""Reference models of a DPM feature-sharing run (Guo et al., arXiv 1912.06895, §4).

In a DPM run with ``dpm-bootstrap = "server"`` the featurizer phi1 is trained on the server's
public split only and stays fixed; the clients' rows reach the model only through the
decider phi2, which the server refines on the poisoned features ``P(phi1 x)`` the clients
share. The global model the attacker queries is phi1 followed by the refined phi2 (a query
image goes through the shared featurizer and the refined head, without any client's P).

A reference model is a centralised stand-in for that procedure on its half of the pool:

1. phi1 and the initial phi2: the run's own bootstrap on the public split, recomputed from
   the run config (it depends on no client row; it is the very phi1 of the target);
2. a DPM trained as a client trains one, against the run's straw-man reconstructor (and its
   ensemble and self-check), for the epochs a client's DPM trains over the run
   (:func:`~flwr_privshare.poisoning.procedures.train_stand_in_dpm`);
3. ``num-server-rounds`` rounds of refinement of phi2 on the poisoned features, as the server
   refines: every IN row is shared in the first round, and in each later round a fresh
   random share of them as large as a client's share of its partition
   (``dpm-shared-samples`` of its rows).
"""

from __future__ import annotations

from functools import cached_property
from typing import NamedTuple

import numpy as np
import torch

from ...config import CommonSection
from ...data import ImageDataset, load_split, public_split
from ...models import ImageClassifier, build_model
from ...poisoning import Reconstructor, SelfCheck, feature_shape, poisoned_features, split_model, train_decider
from ...poisoning.procedures import (
    bootstrap_on_public,
    ensemble_for,
    self_check_for,
    train_public_reconstructor,
    train_stand_in_dpm,
)
from ...poisoning.section import DPMSection
from ...seeding import derive_seed, seeded
from .reference import ReferenceTrainer


class ServerProcedure(NamedTuple):
    """What every reference model of a DPM run starts from: the run's bootstrap and its reconstructors."""

    bootstrap: dict[str, torch.Tensor]
    straw_man: Reconstructor
    ensemble: list[Reconstructor]
    self_check: SelfCheck | None


class DPMReferenceTrainer(ReferenceTrainer):
    """Reference models of a DPM run (module docstring); cached like every reference model."""

    @cached_property
    def procedure(self) -> ServerProcedure:
        """The run's bootstrap and reconstructors, recomputed once (only when a model is not cached)."""
        common = self.run[CommonSection]
        public = public_split(common)
        with seeded(derive_seed(common.seed, "model-init")):
            model = build_model(self.model_name, public.num_classes)
        bootstrap_on_public(self.run, model, public)
        split = split_model(model, self.run[DPMSection].dpm_hook)
        shape = feature_shape(split.featurizer, public.image_shape)
        straw_man = train_public_reconstructor(self.run, self.run[DPMSection].dpm_reconstructor, split, public, shape)
        return ServerProcedure(
            {key: value.detach().clone() for key, value in model.cpu().state_dict().items()},
            straw_man,
            ensemble_for(self.run, split, public, shape),
            self_check_for(self.run, split, public, shape),
        )

    def client_share(self) -> float:
        """The fraction of its partition a client of the run shares per round (from the split sizes, not the rows)."""
        common, dpm = self.run[CommonSection], self.run[DPMSection]
        private = len(load_split(common.dataset, "train", common.data_dir)) - common.public_size
        partition = private / self.num_clients
        if common.samples_per_client:
            partition = min(partition, common.samples_per_client)
        return 1.0 if dpm.dpm_shared_samples == 0 else min(1.0, dpm.dpm_shared_samples / partition)

    def train(self, data: ImageDataset, index: int) -> ImageClassifier:
        """One reference model: the run's bootstrap, a DPM of its own and phi2 refined on its poisoned features."""
        common, dpm = self.run[CommonSection], self.run[DPMSection]
        procedure = self.procedure
        model = build_model(self.model_name, data.num_classes)
        model.load_state_dict(procedure.bootstrap)
        split = split_model(model, dpm.dpm_hook)
        checked = train_stand_in_dpm(
            self.run,
            split,
            procedure.straw_man,
            data,
            ssim_weight=dpm.dpm_lambda,
            ensemble=procedure.ensemble,
            self_check=procedure.self_check,
            stream=("membership", self.seed, index),
        )
        features = poisoned_features(split.featurizer, checked.dpm, data, device=self.device)
        share = self.client_share()
        rng = np.random.default_rng(derive_seed(self.seed, "reference-share", index))
        generator = torch.Generator().manual_seed(derive_seed(self.seed, "reference-refine", index))
        for server_round in range(1, common.num_server_rounds + 1):
            rows = np.arange(len(data)) if server_round == 1 else np.flatnonzero(rng.uniform(size=len(data)) < share)
            index_tensor = torch.from_numpy(rows)
            train_decider(
                split.decider,
                features[index_tensor],
                data.labels[index_tensor],
                epochs=dpm.refine_epochs,
                generator=generator,
                device=self.device,
            )
        return model.cpu().eval()
