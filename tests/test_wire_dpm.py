"""What a DPM client actually sends: poisoned features and labels, never images or the DPM itself.

``share_poisoned_features`` is called on a real Flower ``Message`` as the server's
``FeatureSharing`` builds it, and its reply is inspected byte by byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from flwr_privshare.apps.feature_sharing_client import DPM_STATE_KEY, share_poisoned_features
from flwr_privshare.config import CommonSection
from flwr_privshare.data import client_partition, load_split
from flwr_privshare.models import build_model
from flwr_privshare.poisoning import DeepPoisoningModule, Reconstructor, SelfCheck, split_model, train_dpm
from flwr_privshare.poisoning.section import DPMSection
from flwr_privshare.protocol import SELF_CHECK_FAILED
from flwr_privshare.seeding import derive_seed, seeded
from flwr_privshare.strategies import FeatureSharing

from .experiments import DPM_LIBRARY_DEFAULTS
from .strategies.test_dp_fedavg import FakeGrid


def client_run_config(data_root: Path) -> dict[str, object]:
    return {"data-dir": str(data_root / "mnist"), "samples-per-client": 48, "public-size": 1000, "batch-size": 16}


def dpm_round(
    data_root: Path,
    server_round: int,
    state: RecordDict,
    self_check: SelfCheck | None = None,
    ensemble: Sequence[Reconstructor] = (),
    warmup_epochs: int = 0,
) -> tuple[Message, Context]:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0  # the server builds the message
    torch.manual_seed(0)
    model = build_model("mnist-cnn")
    sharing = FeatureSharing(
        "mnist-cnn", "pool1", Reconstructor("px2s2", (16, 14, 14), (1, 28, 28)),
        image_shape=(1, 28, 28), num_classes=10, shared_samples=32, self_check=self_check, ensemble=ensemble,
        warmup_epochs=warmup_epochs,
    )  # fmt: skip
    (message,) = sharing.configure_train(
        server_round, ArrayRecord(model.state_dict()), ConfigRecord(), cast(Grid, FakeGrid(1))
    )
    TaskIdentity.node_id = 1  # the client runs it
    run_config = client_run_config(data_root)
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": 0, "num-partitions": 4},
        state=state,
        run_config=run_config,  # type: ignore[arg-type]
    )
    return share_poisoned_features(DPM_LIBRARY_DEFAULTS.schema.parse(run_config), message, context), context


def test_reply_holds_poisoned_features_and_labels_only(data_root: Path) -> None:
    reply, context = dpm_round(data_root, 1, RecordDict())
    content = reply.content
    assert set(content.keys()) == {"features", "metrics"} and not content.config_records
    shared = content.array_records["features"]
    assert set(shared) == {"features", "labels"}
    features, labels = shared["features"].numpy(), shared["labels"].numpy()
    assert features.shape == (32, 16, 14, 14) and features.dtype == np.float16
    assert labels.shape == (32,) and labels.dtype == np.int64
    metrics = dict(content.metric_records["metrics"])
    assert set(metrics) == {"num-examples", "partition-id", "dpm-cross-entropy", "dpm-ssim", "dpm-draws"}

    # The DPM stays in the client's state and nothing in the reply can stand in for it.
    kept = context.state.array_records[DPM_STATE_KEY]
    dpm_state = kept.to_torch_state_dict()
    DeepPoisoningModule(16).load_state_dict(dpm_state)
    for array in shared.values():
        with pytest.raises((RuntimeError, KeyError)):
            DeepPoisoningModule(16).load_state_dict({"0.body.0.weight": torch.from_numpy(array.numpy())})
    reply_bytes = b"".join(array.data for array in shared.values())
    for tensor in dpm_state.values():
        if tensor.numel() > 4 and tensor.abs().sum() > 0:  # a parameter's bytes never appear in the reply
            assert tensor.numpy().tobytes() not in reply_bytes
            assert tensor.half().numpy().tobytes() not in reply_bytes

    # No image: the client's own images are nowhere in the reply.
    images = load_split("ylecun/mnist", "train", str(data_root / "mnist")).images
    assert not any(array.shape[-2:] == tuple(images.shape[-2:]) for array in shared.values())


def test_the_dpm_persists_across_rounds_in_the_client_state(data_root: Path) -> None:
    state = RecordDict()
    _, context = dpm_round(data_root, 1, state)
    first = {k: v.clone() for k, v in context.state.array_records[DPM_STATE_KEY].to_torch_state_dict().items()}
    _, context = dpm_round(data_root, 2, context.state)
    second = context.state.array_records[DPM_STATE_KEY].to_torch_state_dict()
    assert set(first) == set(second) and any(not torch.equal(first[k], second[k]) for k in first)
    # Round 2 continued from round 1: a client without a stored DPM ends round 2 elsewhere.
    _, without_history = dpm_round(data_root, 2, RecordDict())
    restarted = without_history.state.array_records[DPM_STATE_KEY].to_torch_state_dict()
    assert any(not torch.equal(second[k], restarted[k]) for k in second)


def test_a_fresh_dpm_warms_up_before_it_shares_and_a_stored_one_does_not(data_root: Path) -> None:
    _, warmed = dpm_round(data_root, 1, RecordDict(), warmup_epochs=2)
    first = warmed.state.array_records[DPM_STATE_KEY].to_torch_state_dict()

    # Reference: the client's first P, trained directly for dpm-epochs (1) + warm-up (2) epochs.
    torch.manual_seed(0)  # as dpm_round builds Phi and the straw man
    split = split_model(build_model("mnist-cnn"), "pool1")
    straw_man = Reconstructor("px2s2", (16, 14, 14), (1, 28, 28))
    run = DPM_LIBRARY_DEFAULTS.schema.parse(client_run_config(data_root))
    config = run[CommonSection]
    with seeded(derive_seed(config.seed, "dpm-init", 0)):
        reference = DeepPoisoningModule(16)
    train_dpm(
        reference,
        split,
        straw_man,
        client_partition(config, 0, 4),
        ssim_weight=1.0,
        epochs=3,
        batch_size=16,
        learning_rate=run[DPMSection].dpm_learning_rate,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(derive_seed(config.seed, "dpm", 0, 1)),
    )
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(first[name], tensor)

    # A stored P continues for dpm-epochs only, whatever the warm-up.
    def round_two(warmup_epochs: int) -> dict[str, torch.Tensor]:
        state = RecordDict({DPM_STATE_KEY: ArrayRecord(first)})
        _, context = dpm_round(data_root, 2, state, warmup_epochs=warmup_epochs)
        return context.state.array_records[DPM_STATE_KEY].to_torch_state_dict()

    with_warmup, without = round_two(2), round_two(0)
    assert all(torch.equal(with_warmup[name], without[name]) for name in without)
    assert any(not torch.equal(with_warmup[name], first[name]) for name in first)


def checker() -> Reconstructor:
    torch.manual_seed(1)
    return Reconstructor("rx3s2", (16, 14, 14), (1, 28, 28))


def test_a_client_that_passes_its_self_check_shares_and_reports_the_check(data_root: Path) -> None:
    reply, _ = dpm_round(data_root, 1, RecordDict(), SelfCheck(checker(), threshold=1.0, draws=3))
    assert set(reply.content.keys()) == {"features", "metrics"}
    assert set(reply.content.array_records["features"]) == {"features", "labels"}  # no checker weights come back
    metrics = dict(reply.content.metric_records["metrics"])
    assert set(metrics) == {
        "num-examples", "partition-id", "dpm-cross-entropy", "dpm-ssim", "dpm-draws", "dpm-check-ssim",
    }  # fmt: skip
    assert metrics["dpm-draws"] == 1 and -1.0 <= cast(float, metrics["dpm-check-ssim"]) <= 1.0


def test_a_client_whose_every_draw_fails_the_self_check_shares_nothing(data_root: Path) -> None:
    # |SSIM| <= 1e-9 cannot hold for any real P, so all three draws fail.
    reply, context = dpm_round(data_root, 1, RecordDict(), SelfCheck(checker(), threshold=1e-9, draws=3))
    assert reply.has_error() and not reply.has_content()
    assert reply.error.code == SELF_CHECK_FAILED
    assert "self-check failed on all 3 draws" in cast(str, reply.error.reason)
    # The client keeps its last draw and trains it on next round; it never left the client.
    DeepPoisoningModule(16).load_state_dict(context.state.array_records[DPM_STATE_KEY].to_torch_state_dict())


def test_a_client_trains_against_the_ensemble_it_receives_and_sends_none_of_it_back(data_root: Path) -> None:
    torch.manual_seed(2)
    members = [Reconstructor(name, (16, 14, 14), (1, 28, 28)) for name in ("px3s2", "rx3s2-c")]
    reply, context = dpm_round(data_root, 1, RecordDict(), ensemble=members)
    assert set(reply.content.keys()) == {"features", "metrics"}
    assert set(reply.content.array_records["features"]) == {"features", "labels"}  # no straw man comes back
    with_ensemble = context.state.array_records[DPM_STATE_KEY].to_torch_state_dict()
    _, alone = dpm_round(data_root, 1, RecordDict())
    without = alone.state.array_records[DPM_STATE_KEY].to_torch_state_dict()
    assert any(not torch.equal(with_ensemble[k], without[k]) for k in without)  # the ensemble term was trained on
