"""VFE (Eq. 2-4) against a brute-force loop, and its behaviour under shuffling."""

from __future__ import annotations

import pytest
import torch

from flwr_privshare.visualmixer import image_vfe, region_vfe, visual_mix


def brute_force_image_vfe(image: torch.Tensor, region: int) -> float:
    """Loop over channels, regions and pixels; differences only inside one region."""
    x = image.double() / 255.0 if image.dtype == torch.uint8 else image.double()
    channels, height, width = x.shape
    per_channel = []
    for c in range(channels):
        region_values = []
        for top in range(0, height, region):
            for left in range(0, width, region):
                total = 0.0
                for y in range(top, min(top + region, height)):
                    for xx in range(left, min(left + region, width)):
                        if xx + 1 < min(left + region, width):
                            total += float(x[c, y, xx + 1] - x[c, y, xx]) ** 2
                        if y + 1 < min(top + region, height):
                            total += float(x[c, y + 1, xx] - x[c, y, xx]) ** 2
                region_values.append(total)
        per_channel.append(sum(region_values) / len(region_values))
    return sum(per_channel) / channels


@pytest.mark.parametrize("region", [2, 3, 4, 8])
def test_vfe_matches_brute_force_on_random_images(region: int) -> None:
    images = torch.rand((3, 3, 12, 10), generator=torch.Generator().manual_seed(region))
    expected = torch.tensor([brute_force_image_vfe(img, region) for img in images], dtype=torch.float64)
    torch.testing.assert_close(image_vfe(images, region).double(), expected, rtol=1e-5, atol=1e-6)


def test_vfe_matches_brute_force_on_real_images(cifar_images: torch.Tensor) -> None:
    images = cifar_images[:3]
    expected = torch.tensor([brute_force_image_vfe(img, 4) for img in images], dtype=torch.float64)
    torch.testing.assert_close(image_vfe(images, 4).double(), expected, rtol=1e-5, atol=1e-6)


def test_region_vfe_sums_to_the_brute_force_total() -> None:
    image = torch.rand((1, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    regions = region_vfe(image, 4)
    assert regions.shape == (1, 1, 2, 2)
    assert float(regions.mean()) == pytest.approx(brute_force_image_vfe(image[0], 4), rel=1e-5)


def test_constant_image_has_zero_vfe() -> None:
    assert torch.equal(image_vfe(torch.full((2, 3, 32, 32), 0.7)), torch.zeros(2))
    assert float(image_vfe(torch.full((1, 28, 28), 200, dtype=torch.uint8))) == 0.0


def test_shuffled_vfe_rises_with_window_size(cifar_images: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(0)
    means = []
    for size in (1, 2, 4, 8, 16, 32):
        mixed = visual_mix(cifar_images, size, size, generator=generator).images
        means.append(float(image_vfe(mixed).mean()))
    assert means == sorted(means), means
    assert means[-1] > 3 * means[0]
