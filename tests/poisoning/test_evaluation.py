"""Reference SSIM levels: chance (an unrelated image) and a flat image of the mean colour."""

from __future__ import annotations

import pytest
import torch

from flwr_privshare.data import ImageDataset
from flwr_privshare.poisoning import reference_ssim
from flwr_privshare.poisoning.dpm import ssim_per_image

CPU = torch.device("cpu")


def random_images(count: int, seed: int = 0) -> ImageDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, 32, 32), generator=generator, dtype=torch.uint8)
    return ImageDataset(images, torch.zeros(count, dtype=torch.long), 10)


def test_reference_ssim_matches_a_per_image_loop_across_batch_boundaries(cifar_test: ImageDataset) -> None:
    data = cifar_test.head(5)
    images = data.images.float() / 255
    other, flat = [], []
    for i in range(5):
        j = (i - 5 // 2) % 5
        assert j != i
        other.append(ssim_per_image(images[j : j + 1], images[i : i + 1]).item())
        colour = images[i].reshape(3, -1).mean(dim=1)
        flat.append(ssim_per_image(colour.view(1, 3, 1, 1).expand(1, 3, 32, 32), images[i : i + 1]).item())
    levels = reference_ssim(data, device=CPU, batch_size=2)
    assert levels["other_image"] == pytest.approx(sum(other) / 5, abs=1e-6)
    assert levels["mean_colour"] == pytest.approx(sum(flat) / 5, abs=1e-6)


def test_reference_ssim_is_one_for_identical_images_and_for_flat_images() -> None:
    same = ImageDataset(random_images(1).images.expand(4, -1, -1, -1).clone(), torch.zeros(4, dtype=torch.long), 10)
    assert reference_ssim(same, device=CPU)["other_image"] == pytest.approx(1.0, abs=1e-5)
    colours = torch.tensor([0, 90, 200, 255], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 3, 32, 32).clone()
    flat = ImageDataset(colours, torch.zeros(4, dtype=torch.long), 10)
    levels = reference_ssim(flat, device=CPU)
    assert levels["mean_colour"] == pytest.approx(1.0, abs=1e-4)
    assert levels["other_image"] < 0.9


def test_reference_ssim_on_cifar_puts_chance_below_the_mean_colour(cifar_test: ImageDataset) -> None:
    levels = reference_ssim(cifar_test.head(512), device=CPU)
    assert 0.0 < levels["other_image"] < 0.1 < levels["mean_colour"] < 0.2


def test_reference_ssim_needs_two_images() -> None:
    with pytest.raises(ValueError, match=r"at least 2 images.*got 1"):
        reference_ssim(random_images(1), device=CPU)
