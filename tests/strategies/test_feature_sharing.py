"""FeatureSharing: what it sends, how it pools and refines, and how it treats malformed replies."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from flwr_privshare.data import ImageDataset
from flwr_privshare.models import build_model
from flwr_privshare.poisoning import Reconstructor, SelfCheck, poisoned_features
from flwr_privshare.protocol import (
    CHECK_RECONSTRUCTOR_KEY,
    ENSEMBLE_KEY,
    FEATURES_KEY,
    RECONSTRUCTOR_KEY,
    SELF_CHECK_FAILED,
)
from flwr_privshare.strategies import FeatureSharing

from .test_dp_fedavg import FakeGrid

SHAPE = (16, 14, 14)  # mnist-cnn at pool1


def strategy(**overrides: object) -> FeatureSharing:
    torch.manual_seed(0)
    settings: dict[str, object] = {"image_shape": (1, 28, 28), "num_classes": 10, "refine_epochs": 3, **overrides}
    return FeatureSharing("mnist-cnn", "pool1", Reconstructor("px2s2", SHAPE, (1, 28, 28)), **settings)  # type: ignore[arg-type]


def reply(
    node: int, features: np.ndarray, labels: np.ndarray, metrics: dict[str, float] | None = None, **extra: Array
) -> Message:
    instruction = Message(content=RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    record = ArrayRecord({"features": Array(features), "labels": Array(labels), **extra})
    reported = MetricRecord({"num-examples": len(labels), **(metrics or {})})
    return Message(content=RecordDict({FEATURES_KEY: record, "metrics": reported}), reply_to=instruction)


def real_features(sharing: FeatureSharing, data: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
    features = poisoned_features(sharing.split.featurizer, None, data, device=torch.device("cpu"))
    return features.numpy(), data.labels.numpy()


def test_configure_train_sends_phi_psi_and_the_dpm_settings() -> None:
    sharing = strategy(ssim_weight=0.5, feature_noise=0.25, shared_samples=64, warmup_epochs=2)
    model = build_model("mnist-cnn")
    messages = list(
        sharing.configure_train(1, ArrayRecord(model.state_dict()), ConfigRecord(), cast(Grid, FakeGrid(4)))
    )
    assert len(messages) == 4
    content = messages[0].content
    assert set(content.array_records) == {"arrays", RECONSTRUCTOR_KEY}
    assert set(content[RECONSTRUCTOR_KEY]) == set(sharing.reconstructor.state_dict())
    config = content.config_records["config"]
    assert dict(config) == {
        "server-round": 1,
        "task": "feature-sharing",
        "model": "mnist-cnn",
        "hook": "pool1",
        "reconstructor": "px2s2",
        "ssim-weight": 0.5,
        "feature-noise": 0.25,
        "ensemble": "",
        "dpm-epochs": 1,
        "dpm-warmup-epochs": 2,
        "shared-samples": 64,
    }
    for name, tensor in sharing.model.state_dict().items():  # the server's copy is the broadcast Phi
        torch.testing.assert_close(tensor, model.state_dict()[name])


def test_pooled_features_refine_the_decider_and_leave_the_featurizer(mnist_test: ImageDataset) -> None:
    sharing = strategy()
    featurizer_before = {k: v.clone() for k, v in sharing.split.featurizer.state_dict().items()}
    train_a, train_b, held_out = (
        mnist_test.head(600).subset(np.arange(300)),
        mnist_test.subset(np.arange(300, 600)),
        mnist_test.subset(np.arange(1000, 1500)),
    )
    test_features, test_labels = real_features(sharing, held_out)

    def accuracy() -> float:
        logits = sharing.split.decider.eval()(torch.from_numpy(test_features).float())
        return float((logits.argmax(1) == torch.from_numpy(test_labels)).float().mean())

    before = accuracy()
    arrays, metrics = sharing.aggregate_train(
        1, [reply(1, *real_features(sharing, train_a)), reply(2, *real_features(sharing, train_b))]
    )
    assert arrays is not None and metrics is not None
    assert metrics["accepted"] == 2 and metrics["rejected"] == 0 and metrics["pooled-features"] == 600
    assert accuracy() > before + 0.3
    returned = arrays.to_torch_state_dict()
    for name, tensor in featurizer_before.items():
        torch.testing.assert_close(returned[f"features.{name}"], tensor)

    # A client's new features replace its earlier ones; the others stay pooled.
    _, metrics = sharing.aggregate_train(2, [reply(1, *real_features(sharing, train_a.head(100)))])
    assert metrics is not None and metrics["pooled-clients"] == 2 and metrics["pooled-features"] == 400


def test_refinement_does_not_depend_on_node_ids_or_reply_order(mnist_test: ImageDataset) -> None:
    first, second = strategy(seed=3), strategy(seed=3)
    client_a = real_features(first, mnist_test.subset(np.arange(200)))
    client_b = real_features(first, mnist_test.subset(np.arange(200, 400)))
    first.aggregate_train(1, [reply(1, *client_a), reply(2, *client_b)])
    second.aggregate_train(1, [reply(9, *client_b), reply(4, *client_a)])
    for name, tensor in first.split.decider.state_dict().items():
        torch.testing.assert_close(second.split.decider.state_dict()[name], tensor, rtol=0, atol=0)


def bad_replies(good: tuple[np.ndarray, np.ndarray]) -> dict[str, Message]:
    features, labels = good
    nan = features.copy()
    nan[0, 0, 0, 0] = np.nan
    images = np.zeros((len(labels), 1, 28, 28), np.float16)
    return {
        "wrong shape": reply(9, features[:, :8], labels),
        "images instead of features": reply(9, images, labels),
        "integer features": reply(9, features.astype(np.int32), labels),
        "NaN features": reply(9, nan, labels),
        "labels out of range": reply(9, features, labels + 10),
        "label count": reply(9, features, labels[:-1]),
        "extra arrays": reply(9, features, labels, dpm=Array(np.zeros(3, np.float32))),
    }


@pytest.mark.parametrize(
    "case",
    [
        "wrong shape",
        "images instead of features",
        "integer features",
        "NaN features",
        "labels out of range",
        "label count",
        "extra arrays",
    ],
)
def test_a_malformed_reply_is_rejected_and_the_round_goes_on(case: str, mnist_test: ImageDataset) -> None:
    sharing = strategy(refine_epochs=1)
    good = real_features(sharing, mnist_test.head(64))
    arrays, metrics = sharing.aggregate_train(1, [bad_replies(good)[case], reply(1, *good)])
    assert metrics is not None and metrics["rejected"] == 1 and metrics["accepted"] == 1
    assert arrays is not None and set(sharing.pool) == {1}
    assert sharing.rejected == {1: 1}


def test_a_round_with_only_malformed_replies_keeps_the_model(mnist_test: ImageDataset) -> None:
    sharing = strategy()
    arrays, metrics = sharing.aggregate_train(
        1, [bad_replies(real_features(sharing, mnist_test.head(8)))["NaN features"]]
    )
    assert arrays is None and metrics is not None and metrics["rejected"] == 1


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"'dpm-lambda' is -1\.0; it must be a non-negative finite number"):
        strategy(ssim_weight=-1)
    with pytest.raises(ValueError, match=r"'dpm-feature-noise' is -0\.5; it must be a non-negative"):
        strategy(feature_noise=-0.5)
    with pytest.raises(ValueError, match="hook must be one of"):
        FeatureSharing(
            "mnist-cnn", "fc", Reconstructor("px2s2", SHAPE, (1, 28, 28)), image_shape=(1, 28, 28), num_classes=10
        )
    with pytest.raises(ValueError, match="'dpm-shared-samples' is -5; it must be a non-negative integer"):
        strategy(shared_samples=-5)
    with pytest.raises(ValueError, match="'dpm-warmup-epochs' is -1; it must be a non-negative integer"):
        strategy(warmup_epochs=-1)
    seen = Reconstructor("rx3s2", SHAPE, (1, 28, 28))
    with pytest.raises(ValueError, match="the check reconstructor 'rx3s2' is also in the ensemble"):
        strategy(ensemble=[seen], self_check=SelfCheck(seen, threshold=0.1, draws=1))


def test_with_a_self_check_the_checker_and_its_settings_are_sent() -> None:
    torch.manual_seed(3)
    checker = Reconstructor("rx3s2", SHAPE, (1, 28, 28))
    sharing = strategy(self_check=SelfCheck(checker, threshold=0.2, draws=3))
    (message,) = sharing.configure_train(
        1, ArrayRecord(build_model("mnist-cnn").state_dict()), ConfigRecord(), cast(Grid, FakeGrid(1))
    )
    assert set(message.content.array_records) == {"arrays", RECONSTRUCTOR_KEY, CHECK_RECONSTRUCTOR_KEY}
    sent = message.content[CHECK_RECONSTRUCTOR_KEY].to_torch_state_dict()
    for name, tensor in checker.state_dict().items():
        torch.testing.assert_close(sent[name], tensor)
    config = message.content.config_records["config"]
    assert (config["check-reconstructor"], config["check-threshold"], config["check-draws"]) == ("rx3s2", 0.2, 3)


def test_an_ensemble_is_sent_in_order_with_its_names() -> None:
    torch.manual_seed(4)
    members = [Reconstructor(name, SHAPE, (1, 28, 28)) for name in ("rx3s2-c", "px3s2")]
    sharing = strategy(ensemble=members)
    (message,) = sharing.configure_train(
        1, ArrayRecord(build_model("mnist-cnn").state_dict()), ConfigRecord(), cast(Grid, FakeGrid(1))
    )
    assert set(message.content.array_records) == {"arrays", RECONSTRUCTOR_KEY, "ensemble-0", "ensemble-1"}
    assert message.content.config_records["config"][ENSEMBLE_KEY] == "rx3s2-c,px3s2"
    for index, member in enumerate(members):
        sent = message.content[f"{ENSEMBLE_KEY}-{index}"].to_torch_state_dict()
        for name, tensor in member.state_dict().items():
            torch.testing.assert_close(sent[name], tensor)
    (plain,) = strategy().configure_train(
        1, ArrayRecord(build_model("mnist-cnn").state_dict()), ConfigRecord(), cast(Grid, FakeGrid(1))
    )
    assert plain.content.config_records["config"][ENSEMBLE_KEY] == ""


def test_withheld_replies_are_counted_and_client_metrics_averaged(mnist_test: ImageDataset) -> None:
    sharing = strategy(refine_epochs=1)
    good = real_features(sharing, mnist_test.head(32))
    instruction = Message(content=RecordDict(), dst_node_id=7, message_type=MessageType.TRAIN)
    withheld = Message(Error(SELF_CHECK_FAILED, "DPM self-check failed"), reply_to=instruction)
    other_failure = Message(Error(SELF_CHECK_FAILED + 1, "out of memory"), reply_to=instruction)
    replies = [
        reply(1, *good, metrics={"dpm-ssim": 0.01, "dpm-check-ssim": 0.1, "dpm-draws": 1}),
        reply(2, *good, metrics={"dpm-ssim": 0.03, "dpm-check-ssim": 0.2, "dpm-draws": 2}),
        withheld,
        other_failure,
    ]
    _, metrics = sharing.aggregate_train(1, replies)
    assert metrics is not None
    assert (metrics["accepted"], metrics["rejected"], metrics["withheld"]) == (2, 0, 1)
    assert sharing.withheld == {1: 1}
    assert metrics["dpm-ssim"] == pytest.approx(0.02) and metrics["dpm-check-ssim"] == pytest.approx(0.15)
    assert metrics["dpm-draws"] == pytest.approx(1.5)
