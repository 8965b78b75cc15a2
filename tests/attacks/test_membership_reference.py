"""Reference models trained as a FedAvg run of their own: the rounds, shares, seeds and server step are the run's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flwr_privshare.attacks.membership.reference import ReferenceTrainer, server_update
from flwr_privshare.config import RunConfig
from flwr_privshare.data import load_split
from flwr_privshare.models import build_model
from flwr_privshare.recipe.section import RecipeSection
from flwr_privshare.seeding import derive_seed, seeded
from flwr_privshare.train import train

from ..experiments import VISUALMIXER
from ..golden import PLAIN_LOOP

CPU = torch.device("cpu")


def run_config(data_root: Path, **overrides: Any) -> RunConfig:
    values = {
        **PLAIN_LOOP,
        "protection": "none",
        "dataset": "ylecun/mnist",
        "data-dir": str(data_root / "mnist"),
        "num-server-rounds": 2,
        "batch-size": 32,
        **overrides,
    }
    return VISUALMIXER.schema.parse(values)


def test_a_federated_reference_model_is_the_fedavg_of_its_clients_round_by_round(data_root: Path) -> None:
    """Recomputed by hand: two clients train on their IID shares, the server takes the example-weighted mean."""
    run = run_config(data_root)
    data = load_split("ylecun/mnist", "test", str(data_root / "mnist")).head(101)
    trainer = ReferenceTrainer(
        run, "mnist-cnn", seed=7, device=CPU, cache_dir=None, training="federated", num_clients=2
    )
    federated = trainer.train_federated(data, index=3)

    order = np.random.default_rng(derive_seed(7, "reference-partition", 3)).permutation(101)
    shares = [data.subset(np.sort(rows)) for rows in np.array_split(order, 2)]
    with seeded(derive_seed(7, "reference-init", 3)):
        state = build_model("mnist-cnn", 10).state_dict()
    for server_round in (1, 2):
        trained = []
        for client, share in enumerate(shares):
            model = build_model("mnist-cnn", 10)
            model.load_state_dict(state)
            seed = derive_seed(7, "reference-train", 3, client, server_round)
            train(model, share, epochs=1, batch_size=32, optimizer="sgd", learning_rate=0.05,
                  device=CPU, generator=torch.Generator().manual_seed(seed))  # fmt: skip
            trained.append(model.state_dict())
        state = {key: (trained[0][key] * 51 + trained[1][key] * 50) / 101 for key in state}
    for key, value in federated.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=1e-5, atol=1e-6, msg=key)
    # the centralised stand-in of the same rows is another model
    centralised = ReferenceTrainer(run, "mnist-cnn", seed=7, device=CPU, cache_dir=None).train(data, index=3)
    assert not torch.equal(centralised.state_dict()["classifier.weight"], federated.state_dict()["classifier.weight"])


def test_fedavgm_server_step_matches_the_closed_form() -> None:
    """x' = x - lr * v, v = m * v + (x - average): two rounds by hand."""
    section = RecipeSection(server_learning_rate=0.5, server_momentum=0.9)
    momentum: dict[str, torch.Tensor] = {}
    current = {"w": torch.tensor([1.0, 2.0]), "count": torch.tensor(4)}
    first = server_update(
        current, {"w": torch.tensor([0.0, 4.0]).double(), "count": torch.tensor(5.4)}, section, momentum
    )
    torch.testing.assert_close(first["w"], torch.tensor([0.5, 3.0]))  # v = [1, -2]
    assert first["count"].item() == 5 and first["count"].dtype == torch.int64
    second = server_update(
        first, {"w": torch.tensor([0.5, 3.0]).double(), "count": torch.tensor(5.0)}, section, momentum
    )
    torch.testing.assert_close(second["w"], torch.tensor([0.5 - 0.5 * 0.9, 3.0 + 0.5 * 1.8]))  # v = [0.9, -1.8]
    plain = server_update(current, {"w": torch.tensor([0.0, 4.0]).double(), "count": torch.tensor(4.0)}, None, {})
    torch.testing.assert_close(plain["w"], torch.tensor([0.0, 4.0]))


def test_unknown_reference_training_is_refused(data_root: Path) -> None:
    with pytest.raises(ValueError, match="one of \\('centralised', 'federated'\\), got 'gossip'"):
        ReferenceTrainer(run_config(data_root), "mnist-cnn", 1, CPU, None, training="gossip")
