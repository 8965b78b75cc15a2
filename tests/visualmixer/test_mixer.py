"""The VFE-guided mixer (Algorithm 1): permutations stay inside windows, windows follow VFE."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from flwr_privshare.visualmixer import VisualMixer, assign_windows, check_window_bounds, visual_mix


def unique_images(batch: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Float images whose values are all distinct, so a value's position identifies it."""
    count = batch * channels * height * width
    values = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).double() / count
    return values.reshape(batch, channels, height, width)


def block_contents(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, C, rows, cols, k)`` sorted values of each ``size`` block (edge blocks padded with -1)."""
    batch, channels, height, width = images.shape
    rows, cols = -(-height // size), -(-width // size)
    padded = torch.full((batch, channels, rows * size, cols * size), -1.0, dtype=torch.float64)
    padded[..., :height, :width] = images.double()
    blocks = padded.unfold(2, size, size).unfold(3, size, size).reshape(batch, channels, rows, cols, -1)
    return blocks.sort(dim=-1).values


@pytest.mark.parametrize(
    ("shape", "bounds"), [((4, 3, 32, 32), (2, 8)), ((4, 1, 28, 28), (2, 8)), ((3, 3, 32, 32), (1, 32))]
)
@pytest.mark.parametrize("channel_shuffle", [True, False])
def test_every_shuffle_is_a_permutation_inside_its_window(
    shape: tuple[int, int, int, int], bounds: tuple[int, int], channel_shuffle: bool
) -> None:
    images = unique_images(*shape)
    result = visual_mix(images, *bounds, channel_shuffle=channel_shuffle, generator=torch.Generator().manual_seed(1))
    assert result.images.shape == images.shape and result.images.dtype == images.dtype
    assert not torch.equal(result.images, images)
    sizes = result.window_size_map()
    covered = torch.zeros(sizes.shape, dtype=torch.int64)
    for size, decided in result.levels:
        before, after = block_contents(images, size), block_contents(result.images, size)
        same = (before == after).all(dim=-1).all(dim=1)  # per block: every channel's multiset unchanged
        assert bool(same[decided].all()), f"values left their {size}x{size} window"
        covered += decided.repeat_interleave(size, 1).repeat_interleave(size, 2)[:, : shape[2], : shape[3]]
    assert torch.equal(covered, torch.ones_like(covered)), "every pixel lies in exactly one window"
    assert set(sizes.unique().tolist()) <= {s for s, _ in result.levels}


def test_uint8_batches_keep_their_values() -> None:
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mixed = visual_mix(images, 4, 4, generator=torch.Generator().manual_seed(0)).images
    assert mixed.dtype == torch.uint8
    assert torch.equal(block_contents(images, 4), block_contents(mixed, 4))


def test_low_vfe_blocks_get_larger_windows() -> None:
    images = torch.full((2, 3, 32, 32), 0.5)
    images[:, :, :, 16:] = torch.rand((2, 3, 32, 16), generator=torch.Generator().manual_seed(0))
    sizes = visual_mix(images, 2, 16, generator=torch.Generator().manual_seed(0)).window_size_map()
    flat_side, detailed_side = sizes[:, :, :16].float().mean(), sizes[:, :, 16:].float().mean()
    assert flat_side == 16 and detailed_side < flat_side


def test_windows_follow_block_vfe_on_real_images(cifar_images: torch.Tensor) -> None:
    levels = assign_windows(cifar_images, 2, 8)
    (_, large), _, _ = levels
    from flwr_privshare.visualmixer import region_vfe

    block_vfe = region_vfe(cifar_images, 8).mean(dim=1)
    assert float(block_vfe[large].mean()) < float(block_vfe[~large].mean())


def test_channel_shuffle_switch() -> None:
    gray = torch.rand((3, 1, 32, 32), generator=torch.Generator().manual_seed(0)).expand(3, 3, 32, 32).contiguous()
    joint = visual_mix(gray, 2, 8, channel_shuffle=False, generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(joint[:, 0], joint[:, 1]) and torch.equal(joint[:, 0], joint[:, 2])
    independent = visual_mix(gray, 2, 8, channel_shuffle=True, generator=torch.Generator().manual_seed(0)).images
    assert not torch.equal(independent[:, 0], independent[:, 1])


def test_same_seed_same_output_different_seed_different_output(cifar_images: torch.Tensor) -> None:
    def mix(seed: int) -> torch.Tensor:
        return visual_mix(cifar_images, 2, 8, generator=torch.Generator().manual_seed(seed)).images

    assert torch.equal(mix(3), mix(3))
    assert not torch.equal(mix(3), mix(4))


def test_transform_on_images_and_batches(cifar_images: torch.Tensor) -> None:
    mixer = VisualMixer(2, 8, seed=0)
    assert repr(mixer) == "VisualMixer(window_min=2, window_max=8, channel_shuffle=True, seed=0)"
    single = mixer(cifar_images[0])
    assert single.shape == (3, 32, 32) and single.dtype == torch.uint8
    composed = v2.Compose([mixer, v2.ToDtype(torch.float32, scale=True)])(cifar_images[:4])
    assert composed.shape == (4, 3, 32, 32) and composed.dtype == torch.float32
    assert torch.equal(VisualMixer(2, 8, seed=5)(cifar_images), VisualMixer(2, 8, seed=5)(cifar_images))


def test_achieved_vfe_is_reported(cifar_images: torch.Tensor) -> None:
    from flwr_privshare.visualmixer import image_vfe

    result = visual_mix(cifar_images, 2, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.vfe_after, image_vfe(result.images))
    torch.testing.assert_close(result.vfe_before, image_vfe(cifar_images))
    assert float(result.vfe_after.mean()) > float(result.vfe_before.mean())


@pytest.mark.parametrize(
    ("window_min", "window_max", "message"),
    [
        (8, 4, "must not exceed window_max"),
        (3, 8, "window_min must be a power of two"),
        (2, 12, "window_max must be a power of two"),
        (2, 64, "must not exceed the image size"),
        (0, 4, "window_min must be a power of two"),
    ],
)
def test_bad_window_bounds_are_rejected(window_min: int, window_max: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_window_bounds(window_min, window_max, 32, 32)
    with pytest.raises(ValueError, match=message):
        visual_mix(torch.zeros((1, 3, 32, 32)), window_min, window_max)


@pytest.mark.parametrize(("bounds", "count"), [((2, 8), 16), ((1, 16), 8), ((4, 8), 8)])
def test_window_sizes_match_the_per_window_loop_reference(
    cifar_images: torch.Tensor, bounds: tuple[int, int], count: int
) -> None:
    from flwr_privshare.visualmixer.reference import reference_visual_mix, reference_window_sizes

    sizes = visual_mix(cifar_images[:count], *bounds).window_size_map()
    for image, image_sizes in zip(cifar_images[:count], sizes, strict=True):
        assert torch.equal(reference_window_sizes(image, *bounds), image_sizes)
    reference = reference_visual_mix(cifar_images[0], 4, 4, torch.Generator().manual_seed(0))
    assert torch.equal(block_contents(reference[None], 4), block_contents(cifar_images[:1], 4))
    assert not torch.equal(reference, cifar_images[0])


def test_window_sizes_match_the_reference_on_mnist(data_root) -> None:  # type: ignore[no-untyped-def]
    from flwr_privshare.data import load_split
    from flwr_privshare.visualmixer.reference import reference_window_sizes

    images = load_split("", "test", str(data_root / "mnist")).images[:8]
    sizes = visual_mix(images, 2, 8).window_size_map()
    for image, image_sizes in zip(images, sizes, strict=True):
        assert torch.equal(reference_window_sizes(image, 2, 8), image_sizes)


@pytest.mark.parametrize("size", [2, 4, 8])
def test_window_permutations_are_uniform(size: int) -> None:
    """Every source position lands on every target position of a window equally often."""
    count = 3000
    n = size * size
    images = torch.arange(n, dtype=torch.float64).reshape(1, 1, size, size).repeat(count, 1, 1, 1)
    images = images + 1000.0 * torch.arange(count, dtype=torch.float64)[:, None, None, None]  # distinct per image
    mixed = visual_mix(images / images.max(), size, size, generator=torch.Generator().manual_seed(size)).images
    sources = torch.round(mixed * images.max()).long().reshape(count, n) % 1000  # source position per target
    counts = torch.zeros((n, n))
    counts.index_put_((torch.arange(n).repeat(count), sources.reshape(-1)), torch.ones(count * n), accumulate=True)
    expected = count / n
    assert float((counts - expected).abs().max()) < 5 * (expected * (1 - 1 / n)) ** 0.5
    if size == 2:  # all 24 permutations of a 2x2 window occur about equally often
        _, frequency = torch.unique(sources, dim=0, return_counts=True)
        assert len(frequency) == 24 and float((frequency - count / 24).abs().max()) < 5 * (count / 24) ** 0.5
