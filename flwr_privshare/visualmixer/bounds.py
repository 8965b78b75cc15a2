"""Window-size bounds of VisualMixer (Xu et al., NDSS 2024, Sections IV-B and IV-C).

Lower bound (privacy, Section IV-B). After a window of ``n = WS^2`` pixels is shuffled,
its pixels are modelled as i.i.d. with variance ``sigma^2``. The window's VFE is then the
quadratic form ``x^T L x`` with ``L`` the Laplacian of the ``WS x WS`` grid graph (one edge
per neighbouring pair), so

    E[VFE]   = sigma^2 tr(L)                     = 4 sigma^2 WS (WS - 1)
    Var[VFE] = 2 sigma^4 ||L||_F^2 + kappa sigma^4 sum_i L_ii^2

with ``kappa`` the pixels' excess kurtosis (0 for Gaussian pixels). The paper's
``chi^2(2 WS (WS - 1))`` model has the same mean but treats the pairs as independent; it
underestimates the variance by about 2.4x because neighbouring pairs share pixels (a
Monte Carlo check shows this), so we use the exact quadratic-form moments instead of a
calibration factor. ``WS_min`` is the smallest power of two whose VFE reaches the target
with the requested confidence under the normal approximation.

Upper bound (utility, Section IV-C). For a 2x2 convolution with ``N(0, sigma_w^2)``
weights followed by 2x2 max pooling, the output bias of a shuffled window is
``d = |maxpool(conv(I)) - maxpool(conv(I'))|`` per output. Instead of the paper's
enumeration of extreme 3x3 patterns we estimate ``p = P(d < d0)`` per output by Monte
Carlo (random weights, random windows, random shuffles) and require that all ``m``
outputs of a window stay within the tolerance, ``p^m >= confidence``. The window grows
while that holds.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
import torch.nn.functional as F

from .mixer import is_power_of_two


def _grid_degree_moments(window_size: int) -> tuple[int, int, int]:
    """``(#edges, sum deg, sum deg^2)`` of the ``WS x WS`` 4-neighbour grid graph."""
    if window_size == 1:
        return 0, 0, 0
    inner = window_size - 2
    edges = 2 * window_size * (window_size - 1)
    degree_squares = 4 * 2**2 + 4 * inner * 3**2 + inner * inner * 4**2
    return edges, 2 * edges, degree_squares


def shuffled_window_vfe_moments(window_size: int, variance: float, excess_kurtosis: float = 0.0) -> tuple[float, float]:
    """Mean and variance of a shuffled window's VFE with i.i.d. pixels (Section IV-B).

    Args:
        window_size: window side ``WS``.
        variance: pixel variance ``sigma^2`` inside the window.
        excess_kurtosis: the pixels' excess kurtosis (0 Gaussian, -1.2 uniform).

    Returns:
        ``(mean, variance)`` of ``VFE = sum over neighbouring pairs (a - b)^2``.
    """
    if window_size < 1:
        raise ValueError(f"window_size must be a positive integer, got {window_size}")
    if variance < 0:
        raise ValueError(f"variance must be non-negative, got {variance}")
    edges, trace, diagonal_squares = _grid_degree_moments(window_size)
    frobenius_squared = diagonal_squares + 2 * edges  # off-diagonal entries are -1, twice per edge
    mean = variance * trace
    var = variance**2 * (2.0 * frobenius_squared + excess_kurtosis * diagonal_squares)
    return mean, var


def window_size_lower_bound(
    target_vfe: float,
    variance: float,
    *,
    confidence: float = 0.95,
    excess_kurtosis: float = 0.0,
    max_window_size: int = 256,
) -> int:
    """Smallest power-of-two window whose shuffled VFE reaches ``target_vfe`` (Section IV-B).

    Uses the normal approximation ``mean - z_confidence * std >= target_vfe`` with the
    moments of :func:`shuffled_window_vfe_moments`.

    Raises:
        ValueError: for bad arguments or when no window up to ``max_window_size`` works.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if variance <= 0:
        raise ValueError(f"variance must be positive, got {variance}")
    z = NormalDist().inv_cdf(confidence)
    size = 1
    while size <= max_window_size:
        mean, var = shuffled_window_vfe_moments(size, variance, excess_kurtosis)
        if mean - z * math.sqrt(var) >= target_vfe:
            return size
        size *= 2
    raise ValueError(
        f"target_vfe {target_vfe} is not reached by any window up to {max_window_size} "
        f"at variance {variance} and confidence {confidence}"
    )


def output_bias(windows: torch.Tensor, shuffled: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-output bias ``|maxpool(conv(I)) - maxpool(conv(I'))|`` (Section IV-C).

    Args:
        windows: ``(N, 1, WS, WS)`` original windows.
        shuffled: ``(N, 1, WS, WS)`` the same windows shuffled.
        weights: ``(N, 1, 2, 2)`` one 2x2 kernel per window.

    Returns:
        ``(N, m)`` biases of the ``m = ceil((WS - 1) / 2)^2`` pooled outputs.
    """
    count, _, size, _ = windows.shape
    both = torch.cat([windows, shuffled]).reshape(1, 2 * count, size, size)
    conv = F.conv2d(both, weights.repeat(2, 1, 1, 1), groups=2 * count)
    pooled = F.max_pool2d(conv, 2, ceil_mode=True).reshape(2, count, -1)
    return (pooled[0] - pooled[1]).abs()


def output_bias_pass_probability(
    window_size: int,
    tolerance: float,
    *,
    weight_std: float = 1.0,
    num_samples: int = 4096,
    images: torch.Tensor | None = None,
    seed: int = 0,
) -> float:
    """Monte Carlo ``p^m``: the probability that all outputs of a shuffled window stay under ``tolerance``.

    Args:
        window_size: window side ``WS`` (a window of 1 pixel never changes: probability 1).
        tolerance: the bias threshold ``d0``.
        weight_std: standard deviation of the 2x2 kernel weights.
        num_samples: Monte Carlo windows.
        images: optional ``(B, C, H, W)`` images in [0, 1] (or uint8) to draw windows
            from; without them pixels are uniform on [0, 1].
        seed: seed of the Monte Carlo generator; the same seed gives the same samples for
            every tolerance, so the estimate is monotone in ``tolerance``.
    """
    if window_size == 1:
        return 1.0
    generator = torch.Generator().manual_seed(seed)
    windows = _sample_windows(window_size, num_samples, images, generator)
    keys = torch.rand((num_samples, window_size * window_size), generator=generator)
    shuffled = windows.flatten(1).gather(1, keys.argsort(dim=1)).reshape(windows.shape)
    weights = weight_std * torch.randn((num_samples, 1, 2, 2), generator=generator)
    bias = output_bias(windows, shuffled, weights)
    per_output = float((bias < tolerance).double().mean())
    return per_output ** bias.shape[1]


def _sample_windows(size: int, count: int, images: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """``(count, 1, size, size)`` windows: uniform pixels or random crops of one channel."""
    if images is None:
        return torch.rand((count, 1, size, size), generator=generator)
    data = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    batch, channels, height, width = data.shape
    if size > min(height, width):
        raise ValueError(f"window size {size} exceeds the image size {height}x{width}")
    b = torch.randint(0, batch, (count,), generator=generator)
    c = torch.randint(0, channels, (count,), generator=generator)
    y = torch.randint(0, height - size + 1, (count,), generator=generator)
    x = torch.randint(0, width - size + 1, (count,), generator=generator)
    offsets = torch.arange(size)
    rows = (y[:, None] + offsets)[:, :, None]
    cols = (x[:, None] + offsets)[:, None, :]
    return data[b[:, None, None], c[:, None, None], rows, cols].unsqueeze(1)


def window_size_upper_bound(
    tolerance: float,
    *,
    confidence: float = 0.9,
    max_window_size: int = 32,
    weight_std: float = 1.0,
    num_samples: int = 4096,
    images: torch.Tensor | None = None,
    seed: int = 0,
) -> int:
    """Largest power-of-two window whose output bias stays under ``tolerance`` (Section IV-C).

    The window doubles from 1 while :func:`output_bias_pass_probability` is at least
    ``confidence``; the result is monotone non-decreasing in ``tolerance`` for a fixed seed.
    """
    if tolerance <= 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if not is_power_of_two(max_window_size):
        raise ValueError(f"max_window_size must be a power of two, got {max_window_size}")
    size = 1
    while size * 2 <= max_window_size:
        probability = output_bias_pass_probability(
            size * 2,
            tolerance,
            weight_std=weight_std,
            num_samples=num_samples,
            images=images,
            seed=seed,
        )
        if probability < confidence:
            break
        size *= 2
    return size
