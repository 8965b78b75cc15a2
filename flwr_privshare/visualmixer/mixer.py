"""The non-uniform, VFE-guided pixel mixer of VisualMixer (Algorithm 1, Xu et al., NDSS 2024).

Starting from the largest window ``window_max``, the image is tiled into blocks and each
block's VFE is compared with the median VFE of the image's still-undecided blocks at that
size. A block at or below the median (few visual features) is shuffled at this size; a
block above it (detailed) is split into four and decided at half the size, down to
``window_min``, where every block left is shuffled. Low-VFE regions therefore get large
windows and detailed regions small ones.

A shuffle permutes the pixel positions inside a window with all channels together and
then permutes every channel independently. The composition of a uniform joint
permutation with independent uniform per-channel permutations is again a set of
independent uniform per-channel permutations, so with ``channel_shuffle=True`` we draw
those directly in one sort; with ``channel_shuffle=False`` one permutation moves whole
pixels.

Everything is vectorised over the batch: per level, the image is reshaped into windows,
the windows decided at that level are gathered, permuted by sorting random keys and
written back. There is no Python loop over images, pixels or windows. Windows that hang
over the right or bottom edge (e.g. 8x8 windows on 28x28 MNIST) are shuffled over the
pixels they contain.

The comparison uses ``<=`` rather than the paper's ``<``: with ``<`` a flat image (every
block at the median) would be split down to the smallest window, the opposite of the
intent, and ``<=`` guarantees that at least half of the undecided blocks settle per level.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .vfe import DEFAULT_REGION_SIZE, image_vfe, region_sums, squared_differences


def is_power_of_two(value: object) -> bool:
    """Whether ``value`` is an int of the form 2**k, k >= 0 (bools are not ints here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1 and value & (value - 1) == 0


def check_window_bounds(window_min: int, window_max: int, height: int, width: int) -> None:
    """Raise ``ValueError`` unless ``1 <= window_min <= window_max <= min(H, W)`` are powers of two."""
    for name, value in (("window_min", window_min), ("window_max", window_max)):
        if not is_power_of_two(value):
            raise ValueError(f"{name} must be a power of two (1, 2, 4, 8, ...), got {value!r}")
    if window_min > window_max:
        raise ValueError(f"window_min ({window_min}) must not exceed window_max ({window_max})")
    if window_max > min(height, width):
        raise ValueError(f"window_max ({window_max}) must not exceed the image size {height}x{width}")


@dataclass(frozen=True)
class MixResult:
    """What :func:`visual_mix` returns.

    The VFE report is computed on first access, so a caller that only needs the shuffled
    images (the transform, a training pipeline) does not pay for it.

    Attributes:
        images: the shuffled batch, same shape and dtype as the input.
        levels: ``(window_size, decided)`` per level, largest first; ``decided`` is a
            ``(B, ceil(H / s), ceil(W / s))`` bool map of the blocks shuffled at size ``s``.
        region_size: region side of the reported image VFE.
    """

    images: torch.Tensor
    levels: tuple[tuple[int, torch.Tensor], ...]
    region_size: int
    _energy: tuple[torch.Tensor, torch.Tensor]

    @functools.cached_property
    def vfe_before(self) -> torch.Tensor:
        """``(B,)`` image VFE of the input (Eq. 4)."""
        return region_sums(*self._energy, self.region_size).mean(dim=(1, 2))

    @functools.cached_property
    def vfe_after(self) -> torch.Tensor:
        """``(B,)`` image VFE of the shuffled batch: the achieved VFE."""
        return image_vfe(self.images, self.region_size)

    def window_size_map(self) -> torch.Tensor:
        """``(B, H, W)`` int tensor: the size of the window each pixel was shuffled in."""
        height, width = self.images.shape[-2:]
        sizes = torch.zeros((self.images.shape[0], height, width), dtype=torch.int64, device=self.images.device)
        for size, decided in self.levels:
            pixels = decided.repeat_interleave(size, 1).repeat_interleave(size, 2)
            sizes += size * pixels[:, :height, :width]
        return sizes


def assign_windows(images: torch.Tensor, window_min: int, window_max: int) -> tuple[tuple[int, torch.Tensor], ...]:
    """Decide the window size of every block (the recursion of Algorithm 1, per level).

    Returns:
        ``(window_size, decided)`` pairs from ``window_max`` down to ``window_min``; every
        pixel lies in exactly one decided block.
    """
    check_window_bounds(window_min, window_max, *images.shape[-2:])
    dx2, dy2 = squared_differences(images)
    return _assign_windows(dx2.mean(dim=1), dy2.mean(dim=1), window_min, window_max)


def _assign_windows(
    energy_x: torch.Tensor, energy_y: torch.Tensor, window_min: int, window_max: int
) -> tuple[tuple[int, torch.Tensor], ...]:
    """:func:`assign_windows` on channel-mean squared differences ``(B, H, W-1)``, ``(B, H-1, W)``.

    A block's VFE is compared as a mean per pixel, which orders full blocks exactly as
    the paper's sum does and does not favour the partial blocks at the image's edges.
    """
    batch, height, width = energy_x.shape[0], energy_y.shape[1] + 1, energy_x.shape[2] + 1
    size = window_max
    undecided = torch.ones(
        (batch, math.ceil(height / size), math.ceil(width / size)), dtype=torch.bool, device=energy_x.device
    )
    levels = []
    while size > window_min:
        block_vfe = region_sums(energy_x, energy_y, size) / _pixels_per_block(height, width, size, energy_x.device)
        masked = torch.where(undecided, block_vfe, torch.full_like(block_vfe, math.nan))
        median = masked.flatten(1).nanmedian(dim=1).values
        decided = undecided & (block_vfe <= median[:, None, None])
        levels.append((size, decided))
        size //= 2
        rows, cols = math.ceil(height / size), math.ceil(width / size)
        undecided = (undecided & ~decided).repeat_interleave(2, 1).repeat_interleave(2, 2)
        undecided = undecided[:, :rows, :cols]
    levels.append((size, undecided))
    return tuple(levels)


def _pixels_per_block(height: int, width: int, size: int, device: torch.device) -> torch.Tensor:
    """``(rows, cols)`` count of image pixels in each block of a ``size`` grid."""
    row_counts = (height - torch.arange(0, height, size, device=device)).clamp(max=size)
    col_counts = (width - torch.arange(0, width, size, device=device)).clamp(max=size)
    return (row_counts[:, None] * col_counts[None, :]).float()


_ALL_PERMUTATIONS_OF_4 = torch.tensor(list(itertools.permutations(range(4))))


@functools.lru_cache(maxsize=64)
def _window_layout(height: int, width: int, size: int, device: torch.device) -> tuple[torch.Tensor, bool]:
    """Flat pixel indices of every window of a ``size`` grid, valid pixels first.

    Returns:
        ``((rows * cols, size * size) int64, padded)``: row ``w`` lists the ``y * W + x``
        indices of window ``w`` (row-major over the grid) with the pixels inside the
        image first; positions of an edge window that fall outside the image hold the
        dummy index ``H * W``. ``padded`` says whether any window has such positions.
    """
    rows, cols = math.ceil(height / size), math.ceil(width / size)
    ys = torch.arange(rows * size, device=device).reshape(rows, 1, size, 1)
    xs = torch.arange(cols * size, device=device).reshape(1, cols, 1, size)
    inside = (ys < height) & (xs < width)
    flat = torch.where(inside, ys * width + xs, torch.full_like(ys * xs, height * width))
    flat = flat.permute(0, 2, 1, 3).reshape(rows, size, cols, size).permute(0, 2, 1, 3)
    flat = flat.reshape(rows * cols, size * size)
    valid_first = (flat == height * width).to(torch.uint8).argsort(dim=1, stable=True)
    return flat.gather(1, valid_first), bool((flat == height * width).any())


def _random_permutations(
    count: int, n: int, padding: torch.Tensor | None, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``(count, n)`` independent uniform permutations of each window's valid positions.

    ``padding`` (``(count, n)`` bool, or ``None`` when no window is partial) marks positions
    outside the image; they sort last and stay in place. For ``n == 4`` (2x2 windows) an
    index into the table of all 24 permutations is exactly uniform and needs no sort.
    Otherwise every position gets a random key with its own index packed into the low
    bits, and sorting the packed keys yields the permutation directly; on the CPU numpy's
    SIMD sort does this several times faster than ``torch.argsort``. The keys carry at
    least 25 random bits (int32 up to 8x8 windows, int64 beyond), so ties, which would
    keep two pixels in index order, occur in fewer than 1e-4 of the windows.
    """
    if padding is None and n == 4:
        table = _ALL_PERMUTATIONS_OF_4.to(device)
        return table[torch.randint(0, 24, (count,), generator=generator, device=device)]
    shift = (n - 1).bit_length()
    dtype = torch.int32 if n <= 64 else torch.int64
    top = (1 << ((31 if dtype == torch.int32 else 63) - shift)) - 1
    keys = torch.empty((count, n), dtype=dtype, device=device).random_(0, top, generator=generator)
    if padding is not None:
        keys.masked_fill_(padding, top)  # larger than every random key
    keys = (keys << shift) | torch.arange(n, dtype=dtype, device=device)
    on_cpu = device.type == "cpu"
    keys = torch.from_numpy(np.sort(keys.numpy(), axis=-1)) if on_cpu else keys.sort(dim=-1).values
    return (keys & ((1 << shift) - 1)).long()


def _shuffle_windows(
    images: torch.Tensor,
    levels: tuple[tuple[int, torch.Tensor], ...],
    channel_shuffle: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Move every pixel to a random position of its window (one shuffle per decided window).

    For each level, the decided windows draw permutations of their pixel positions (one
    per channel when ``channel_shuffle``) and ``out[layout] = images[layout[perm]]`` is
    written for all of them at once through flat indices (``index_select`` and
    ``index_copy_``, about three times faster than advanced indexing on the CPU). A spare
    column at index ``H * W`` absorbs the padding positions of edge windows.
    """
    batch, channels, height, width = images.shape
    device = images.device
    num_pixels = height * width
    source = F.pad(images.reshape(batch * channels, num_pixels), (0, 1)).reshape(-1)
    out = torch.empty_like(source)
    channel_offsets = torch.arange(channels, device=device)
    for size, decided in levels:
        layout, padded = _window_layout(height, width, size, device)
        image_idx, window_idx = decided.flatten(1).nonzero(as_tuple=True)
        count, n = window_idx.numel(), size * size
        if count == 0:
            continue
        key_channels = channels if channel_shuffle else 1
        local = layout[window_idx]  # (K, n)
        padding = (local == num_pixels).repeat_interleave(key_channels, 0) if padded else None
        perm = _random_permutations(count * key_channels, n, padding, generator, device)
        perm = perm.reshape(count, key_channels, n).expand(count, channels, n)
        rows = ((image_idx * channels)[:, None, None] + channel_offsets[None, :, None]) * (num_pixels + 1)
        moved_from = local[:, None, :].expand(count, channels, n).gather(-1, perm)
        values = source.index_select(0, (rows + moved_from).reshape(-1))
        out.index_copy_(0, (rows + local[:, None, :]).reshape(-1), values)
    return out.reshape(batch * channels, num_pixels + 1)[:, :num_pixels].reshape(images.shape)


def visual_mix(
    images: torch.Tensor,
    window_min: int,
    window_max: int,
    *,
    channel_shuffle: bool = True,
    region_size: int = DEFAULT_REGION_SIZE,
    generator: torch.Generator | None = None,
) -> MixResult:
    """Shuffle a batch with VisualMixer's VFE-guided windows (Algorithm 1).

    Args:
        images: ``(B, C, H, W)`` uint8 or float in [0, 1]; the output keeps the dtype.
        window_min: smallest window side (the privacy lower bound), a power of two.
        window_max: largest window side (the utility upper bound), a power of two.
        channel_shuffle: also permute each channel independently inside its window.
        region_size: region side for the reported image VFE.
        generator: the source of randomness; pass a seeded one for reproducible output.

    Returns:
        A :class:`MixResult` with the shuffled batch, its windows and (on access) its VFE
        before and after.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be a (B, C, H, W) batch, got shape {tuple(images.shape)}")
    check_window_bounds(window_min, window_max, *images.shape[-2:])
    dx2, dy2 = squared_differences(images)
    energy_x, energy_y = dx2.mean(dim=1), dy2.mean(dim=1)
    levels = _assign_windows(energy_x, energy_y, window_min, window_max)
    mixed = _shuffle_windows(images, levels, channel_shuffle, generator)
    return MixResult(images=mixed, levels=levels, region_size=region_size, _energy=(energy_x, energy_y))


class VisualMixer:
    """VisualMixer as a torchvision-style transform on an image or a batch.

    ``VisualMixer(2, 8, seed=0)(images)`` shuffles a ``(C, H, W)`` image or a
    ``(B, C, H, W)`` batch (uint8 or float in [0, 1]) and returns the same shape and dtype;
    it composes in ``torchvision.transforms.v2.Compose``. Use :func:`visual_mix` to also get
    the VFE report and the window map.

    Args:
        window_min: smallest window side, a power of two.
        window_max: largest window side, a power of two.
        channel_shuffle: also permute each channel independently.
        seed: seeds the transform's own generator (``None``: PyTorch's global RNG).
    """

    def __init__(
        self, window_min: int, window_max: int, *, channel_shuffle: bool = True, seed: int | None = None
    ) -> None:
        check_window_bounds(window_min, window_max, window_max, window_max)
        self.window_min = window_min
        self.window_max = window_max
        self.channel_shuffle = channel_shuffle
        self.seed = seed
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        single = images.dim() == 3
        batch = images.unsqueeze(0) if single else images
        mixed = visual_mix(
            batch,
            self.window_min,
            self.window_max,
            channel_shuffle=self.channel_shuffle,
            generator=self.generator,
        ).images
        return mixed[0] if single else mixed

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(window_min={self.window_min}, window_max={self.window_max}, "
            f"channel_shuffle={self.channel_shuffle}, seed={self.seed})"
        )
