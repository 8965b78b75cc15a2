"""MDP's maths: the pairing always maps to another class, reproducibly; the PGD lowers its own feature distance
for every image and stays in [0, 1]; AugMDP makes T copies."""

from __future__ import annotations

import pytest
import torch
from pytorch_msssim import ssim

from flwr_privshare.config import ConfigError
from flwr_privshare.data import ImageDataset
from flwr_privshare.mdp import Distortion, distort_batch, map_distort, pair_with_other_classes, penultimate_features
from flwr_privshare.models import GroupNormCNN

from ..experiments import VISUALMIXER


def tiny_network() -> GroupNormCNN:
    torch.manual_seed(3)
    return GroupNormCNN(3, 4, widths=(8, 16), groups=4).eval()


def random_data(count: int = 24, classes: int = 4) -> ImageDataset:
    generator = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (count, 3, 16, 16), generator=generator, dtype=torch.uint8)
    return ImageDataset(images, torch.arange(count) % classes, classes)


def independent_distance(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    """The objectives written another way: torch's mse_loss and the infinity norm."""
    if distance == "mse":
        return torch.nn.functional.mse_loss(a, b, reduction="none").mean(dim=1)
    return torch.linalg.vector_norm(a - b, ord=float("inf"), dim=1)


@pytest.mark.parametrize(("distance", "step_size"), [("mse", 0.5), ("linf", 0.01)])
def test_pgd_lowers_its_own_distance_for_every_image_and_stays_in_the_unit_box(distance: str, step_size: float) -> None:
    network, data = tiny_network(), random_data()
    start = data.images[:12].float() / 255
    targets = penultimate_features(network, data.images[12:].float() / 255).detach()
    best, at_start, at_best = distort_batch(network, start, targets, steps=15, step_size=step_size, distance=distance)
    with torch.no_grad():
        before = independent_distance(penultimate_features(network, start), targets, distance)
        after = independent_distance(penultimate_features(network, best), targets, distance)
    assert torch.allclose(at_start, before, rtol=1e-5) and torch.allclose(at_best, after, rtol=1e-4)
    assert bool((after < before).all()), (before, after)
    assert float(best.min()) >= 0.0 and float(best.max()) <= 1.0
    assert not torch.equal(best, start)


def test_every_selected_image_is_of_another_class_and_the_pairing_is_seeded() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    pairs = pair_with_other_classes(labels, 500, torch.Generator().manual_seed(1))
    assert pairs.shape == (500, 10) and bool((labels[pairs] != labels).all())
    assert torch.equal(pairs, pair_with_other_classes(labels, 500, torch.Generator().manual_seed(1)))
    assert not torch.equal(pairs, pair_with_other_classes(labels, 500, torch.Generator().manual_seed(2)))
    # uniform over the images of the other classes: brute-force the allowed set of target 0 and count
    allowed = [j for j in range(10) if labels[j] != labels[0]]
    counts = torch.bincount(pairs[:, 0], minlength=10).float()
    assert sorted(torch.nonzero(counts).flatten().tolist()) == allowed
    expected = 500 / len(allowed)
    assert float(((counts[allowed] - expected) ** 2 / expected).sum()) < 20.3  # chi-square, 6 dof, p = 0.0025


def test_one_class_is_refused_before_any_work() -> None:
    with pytest.raises(ConfigError, match=r"at least two classes.*only class \[2\]"):
        pair_with_other_classes(torch.full((5,), 2), 1, torch.Generator().manual_seed(0))


def augmdp(data: ImageDataset, batch_size: int) -> Distortion:
    """AugMDP with T = 3 copies, 4 MSE steps and a fixed seed, in batches of ``batch_size``."""
    return map_distort(
        data,
        tiny_network(),
        copies=3,
        steps=4,
        step_size=0.5,
        distance="mse",
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
        batch_size=batch_size,
    )


def test_augmdp_makes_t_copies_with_the_targets_labels_and_reports_ssim_to_the_selected_images() -> None:
    data = random_data()
    made = augmdp(data, batch_size=10)
    assert len(made.data) == 3 * len(data) and made.data.images.dtype == torch.uint8
    assert torch.equal(made.target_index, torch.arange(len(data)).repeat(3))
    assert torch.equal(made.data.labels, data.labels.repeat(3))
    assert bool((made.selected_labels != made.data.labels).all()) and made.metrics()["mdp-label-differs"] == 1.0
    selected = data.images[made.selected_index].float() / 255
    expected = ssim(made.data.images.float() / 255, selected, data_range=1.0, size_average=False)
    assert torch.allclose(made.ssim, expected, atol=1e-5)  # against the selected image, not the target
    # the batch size does not change the pairing
    again = augmdp(data, batch_size=7)
    assert torch.equal(again.selected_index, made.selected_index)
    assert bool((made.end_distance < made.start_distance).float().mean() > 0.9)


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("mdp-distance", "l2", "one of"),
        ("mdp-steps", 0, "a positive integer"),
        ("mdp-copies", 0, "a positive integer"),
        ("mdp-step-size", -0.1, "a positive finite number"),
        ("mdp-feature-source", "oracle", "one of"),
    ],
)
def test_bad_settings_are_refused_naming_the_key_and_what_is_allowed(key: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}' is .*{allowed}"):
        VISUALMIXER.schema.parse({"protection": "mdp", key: value})


def test_mdp_and_visualmixer_are_refused_together() -> None:
    with pytest.raises(ConfigError, match=r"'visualmixer' and 'mdp'"):
        VISUALMIXER.schema.parse({"protection": "visualmixer,mdp"})
