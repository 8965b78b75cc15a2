"""What a client actually sends: only model arrays and scalar metrics, never data or keys.

The train handler of the ClientApp is called on a real Flower ``Message`` and its reply
is inspected: the arrays must be exactly the model's parameters, the metrics scalars, and
nothing may carry images, permutations or the VisualMixer key. The shuffled data stay in
``context.state``, which never leaves the SuperNode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from flwr_privshare.apps import FedAvgExperiment
from flwr_privshare.models import build_model
from flwr_privshare.protections.visualmixer import STATE_KEY as VIM_STATE_KEY
from flwr_privshare.protections.visualmixer import mixing_seed

from .experiments import DP, VISUALMIXER


@pytest.fixture(autouse=True)
def _client_runtime_identity() -> None:
    """Set the task identity as Flower's SuperNode runtime does before it runs a ClientApp."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 7


def run_train(
    data_root: Path,
    partition_id: int,
    state: RecordDict | None = None,
    experiment: FedAvgExperiment = VISUALMIXER,
    **overrides: object,
) -> tuple[Message, Context]:
    run_config = {
        "data-dir": str(data_root / "cifar10"),
        "samples-per-client": 64,
        "public-size": 1000,
        "batch-size": 32,
        **overrides,
    }
    torch.manual_seed(0)
    model = build_model("cifar-cnn")
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "config": ConfigRecord({"server-round": 1})})
    message = Message(content=content, dst_node_id=7, message_type=MessageType.TRAIN)
    context = Context(
        run_id=1,
        node_id=7,
        node_config={"partition-id": partition_id, "num-partitions": 4},
        state=state if state is not None else RecordDict(),
        run_config=run_config,  # type: ignore[arg-type]
    )
    return experiment.train(message, context), context


def test_visualmixer_reply_carries_only_model_arrays_and_metrics(data_root: Path) -> None:
    reply, context = run_train(data_root, 0)
    content = reply.content
    assert set(content.keys()) == {"arrays", "metrics"}
    assert list(content.array_records) == ["arrays"] and list(content.metric_records) == ["metrics"]
    assert not content.config_records
    expected = {name: tuple(p.shape) for name, p in build_model("cifar-cnn").state_dict().items()}
    arrays = content.array_records["arrays"]
    assert {name: tuple(array.shape) for name, array in arrays.items()} == expected
    for array in arrays.values():
        assert array.numpy().dtype == np.float32 and not (array.shape and array.shape[-2:] == (32, 32))
    metrics = dict(content.metric_records["metrics"])
    scalars = {"loss", "num-examples", "partition-id", "vfe-plain", "vfe-mixed", "train-seconds", "on-cuda"}
    assert set(metrics) == scalars
    assert all(isinstance(value, (int, float)) for value in metrics.values())
    key = mixing_seed(42, context)
    assert key not in metrics.values()
    # the shuffled partition is kept on the client, not sent
    assert VIM_STATE_KEY in context.state and context.state.array_records[VIM_STATE_KEY]["images"].shape == (
        64,
        3,
        32,
        32,
    )


def test_shuffled_data_is_reused_and_differs_between_clients(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, first = run_train(data_root, 0)
    images_0 = first.state.array_records[VIM_STATE_KEY]["images"].numpy()
    _, again = run_train(data_root, 0)
    assert np.array_equal(again.state.array_records[VIM_STATE_KEY]["images"].numpy(), images_0)
    import flwr_privshare.protections.visualmixer as protection

    with monkeypatch.context() as patch:
        patch.setattr(protection, "visual_mix", lambda *args, **kwargs: pytest.fail("mixed again"))
        _, reused = run_train(data_root, 0, state=first.state)
    assert np.array_equal(reused.state.array_records[VIM_STATE_KEY]["images"].numpy(), images_0)
    _, other = run_train(data_root, 1)
    assert not np.array_equal(other.state.array_records[VIM_STATE_KEY]["images"].numpy(), images_0)


def test_same_seed_gives_identical_client_updates(data_root: Path) -> None:
    def update(seed: int) -> dict[str, torch.Tensor]:
        reply, _ = run_train(data_root, 2, seed=seed)
        return reply.content.array_records["arrays"].to_torch_state_dict()

    first, second, third = update(5), update(5), update(6)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], third[k]) for k in first)


def test_plain_client_sends_no_visualmixer_metrics(data_root: Path) -> None:
    reply, context = run_train(data_root, 0, protection="none")
    assert set(reply.content.metric_records["metrics"]) == {
        "loss",
        "num-examples",
        "partition-id",
        "train-seconds",
        "on-cuda",
    }
    assert VIM_STATE_KEY not in context.state


def test_a_node_configured_key_replaces_the_derived_one(data_root: Path) -> None:
    context = Context(run_id=1, node_id=1, node_config={"vim-seed": 1234}, state=RecordDict(), run_config={})
    assert mixing_seed(42, context) == 1234


def test_bad_config_fails_before_training(data_root: Path) -> None:
    with pytest.raises(ValueError, match="'optimizer' is 'lbfgs'"):
        run_train(data_root, 0, optimizer="lbfgs")


# Between them, every client-side recipe key away from its default.
RECIPES = [
    {"augmentation": "crop-flip", "crop-padding": 8, "lr-schedule": "cosine"},
    {"augmentation": "flip", "label-smoothing": 0.3, "lr-schedule": "one-cycle", "lr-warmup": 0.5},
]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda recipe: ",".join(f"{k}={v}" for k, v in recipe.items()))
@pytest.mark.parametrize("protection", ["visualmixer", "dp-sgd"])  # plain clients train as VisualMixer ones
def test_no_recipe_option_changes_what_leaves_the_client(
    data_root: Path, recipe: dict[str, object], protection: str
) -> None:
    experiment = DP if protection == "dp-sgd" else VISUALMIXER
    overrides: dict[str, object] = {"protection": protection, "num-server-rounds": 2}
    baseline, _ = run_train(data_root, 0, experiment=experiment, **overrides)
    if protection == "dp-sgd" and recipe.get("augmentation", "none") != "none":
        overrides["augmentation-multiplicity"] = 2
    reply, _ = run_train(data_root, 0, experiment=experiment, **overrides, **recipe)
    assert set(reply.content.keys()) == set(baseline.content.keys()) == {"arrays", "metrics"}
    sent = reply.content.array_records["arrays"]
    expected = baseline.content.array_records["arrays"]
    assert {k: (a.shape, a.dtype) for k, a in sent.items()} == {k: (a.shape, a.dtype) for k, a in expected.items()}
    assert set(reply.content.metric_records["metrics"]) == set(baseline.content.metric_records["metrics"])
    assert not reply.content.config_records
    # the recipe trained the model differently, and nothing else went out
    assert any(not np.array_equal(sent[k].numpy(), expected[k].numpy()) for k in sent)
