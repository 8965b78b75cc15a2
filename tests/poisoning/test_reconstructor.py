"""Reconstructor family: names, output contract, and that L1 training learns to invert a featurizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flwr_privshare.data import ImageDataset
from flwr_privshare.models import build_model
from flwr_privshare.poisoning import RECONSTRUCTORS, Reconstructor, feature_shape, split_model, train_reconstructor
from flwr_privshare.poisoning.dpm import ssim_per_image
from flwr_privshare.poisoning.reconstructor import stretch, upsampling_factors


@pytest.mark.parametrize("name", RECONSTRUCTORS)
@pytest.mark.parametrize(
    ("model", "hook", "image_shape"), [("cifar-cnn", "pool1", (3, 32, 32)), ("mnist-cnn", "pool2", (1, 28, 28))]
)
def test_every_reconstructor_maps_features_to_images_in_unit_range(
    name: str, model: str, hook: str, image_shape: tuple[int, int, int]
) -> None:
    featurizer, _ = split_model(build_model(model), hook)
    reconstructor = Reconstructor(name, feature_shape(featurizer, image_shape), image_shape)
    out = reconstructor(featurizer(torch.rand((3, *image_shape))))
    assert out.shape == (3, *image_shape)
    assert out.min() >= 0.0 and out.max() <= 1.0
    if not name.endswith("-c"):  # min-max normalised: every image spans [0, 1]
        torch.testing.assert_close(out.flatten(1).amin(1), torch.zeros(3))
        torch.testing.assert_close(out.flatten(1).amax(1), torch.ones(3))


def test_stretch_maps_quantiles_to_the_unit_range_like_numpy() -> None:
    raw = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 3 + 1
    flat = raw.flatten(1).numpy()
    for tail in (0.0, 0.05):
        low = np.quantile(flat, tail, axis=1, keepdims=True)
        high = np.quantile(flat, 1 - tail, axis=1, keepdims=True)
        expected = np.clip((flat - low) / (high - low), 0, 1).reshape(raw.shape)
        torch.testing.assert_close(stretch(raw, tail), torch.from_numpy(expected))


@pytest.mark.parametrize("tail", [-0.1, 0.5, 0.7])
def test_stretch_rejects_a_tail_outside_zero_to_one_half(tail: float) -> None:
    with pytest.raises(ValueError, match=rf"tail must be in \[0, 0.5\), got {tail}"):
        stretch(torch.rand(1, 3, 4, 4), tail)


def test_stretch_sees_through_a_stripe_that_blinds_min_max() -> None:
    """A few extreme pixels squeeze a min-max normalised image to one grey level; quantiles ignore them."""
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    striped = images.clone()
    striped[:, :, 0, :] = 50.0
    assert ssim_per_image(stretch(striped, 0.0), images).max() < 0.1
    assert ssim_per_image(stretch(striped, 0.05), images).min() > 0.8


def test_names_set_blocks_residuals_and_upsampling() -> None:
    def blocks(name: str) -> list[torch.nn.Module]:
        return [
            m for m in Reconstructor(name, (32, 8, 8), (3, 32, 32)).modules() if type(m).__name__ == "InverseBottleneck"
        ]

    assert len(blocks("px2s2")) == 4 and len(blocks("px4s2")) == 8 and len(blocks("rx4s4")) == 4
    assert all(b.residual for b in blocks("rx2s2")) and not any(b.residual for b in blocks("px2s2"))
    assert upsampling_factors(8, 32, 2) == [2, 2]
    assert upsampling_factors(8, 32, 4) == [4]
    assert upsampling_factors(16, 32, 4) == [2]
    assert upsampling_factors(32, 32, 2) == [1]
    assert upsampling_factors(7, 28, 2) == [2, 2]


def test_unknown_reconstructor_name_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"reconstructor must be one of .*got 'px9'"):
        Reconstructor("px9", (32, 16, 16), (3, 32, 32))


def test_l1_training_learns_to_invert_the_featurizer(cifar_test: ImageDataset) -> None:
    torch.manual_seed(0)
    featurizer, _ = split_model(build_model("cifar-cnn"), "block1")
    reconstructor = Reconstructor("rx2s2", feature_shape(featurizer, (3, 32, 32)), (3, 32, 32))
    data = cifar_test.head(256)
    common = {"batch_size": 32, "device": torch.device("cpu"), "generator": torch.Generator().manual_seed(0)}
    first = train_reconstructor(reconstructor, featurizer, data, epochs=1, **common)
    later = train_reconstructor(reconstructor, featurizer, data, epochs=3, **common)
    assert later < 0.8 * first
