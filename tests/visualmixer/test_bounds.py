"""Window-size bounds against Monte Carlo simulation and closed forms."""

from __future__ import annotations

import pytest
import torch

from flwr_privshare.visualmixer import (
    output_bias_pass_probability,
    region_vfe,
    shuffled_window_vfe_moments,
    window_size_lower_bound,
    window_size_upper_bound,
)


def dense_grid_laplacian(size: int) -> torch.Tensor:
    """An independent construction: L = D - A of the 4-neighbour grid, by enumeration."""
    n = size * size
    laplacian = torch.zeros((n, n), dtype=torch.float64)
    for y in range(size):
        for x in range(size):
            for dy, dx in ((0, 1), (1, 0)):
                if y + dy < size and x + dx < size:
                    a, b = y * size + x, (y + dy) * size + x + dx
                    laplacian[a, b] = laplacian[b, a] = -1.0
                    laplacian[a, a] += 1.0
                    laplacian[b, b] += 1.0
    return laplacian


def simulated_vfe(size: int, count: int, sampler: str, seed: int = 0) -> torch.Tensor:
    """VFE of ``count`` shuffled ``size x size`` windows of i.i.d. pixels."""
    generator = torch.Generator().manual_seed(seed)
    if sampler == "gaussian":
        pixels = 0.5 + 0.2 * torch.randn((count, 1, size, size), generator=generator, dtype=torch.float64)
    else:
        pixels = torch.rand((count, 1, size, size), generator=generator, dtype=torch.float64)
    return region_vfe(pixels, size).reshape(count)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
def test_moments_match_the_quadratic_form(size: int) -> None:
    laplacian = dense_grid_laplacian(size)
    mean, var = shuffled_window_vfe_moments(size, 0.04)
    assert mean == pytest.approx(0.04 * float(torch.trace(laplacian)))
    assert mean == pytest.approx(4 * 0.04 * size * (size - 1))
    assert var == pytest.approx(2 * 0.04**2 * float((laplacian**2).sum()))


@pytest.mark.parametrize(("sampler", "variance", "kurtosis"), [("gaussian", 0.04, 0.0), ("uniform", 1 / 12, -1.2)])
@pytest.mark.parametrize("size", [2, 4, 8])
def test_moments_match_monte_carlo(sampler: str, variance: float, kurtosis: float, size: int) -> None:
    vfe = simulated_vfe(size, 40_000, sampler)
    mean, var = shuffled_window_vfe_moments(size, variance, kurtosis)
    assert float(vfe.mean()) == pytest.approx(mean, rel=0.02)
    assert float(vfe.var()) == pytest.approx(var, rel=0.06)


def test_chi_square_model_underestimates_the_variance() -> None:
    """The paper's chi^2 model treats overlapping pairs as independent (DESIGN 5.2)."""
    size, variance = 8, 0.04
    chi_square_var = (2 * variance) ** 2 * 2 * (2 * size * (size - 1))
    empirical = float(simulated_vfe(size, 40_000, "gaussian").var())
    assert 2.0 < empirical / chi_square_var < 2.6


@pytest.mark.parametrize("target", [0.5, 2.0, 8.0])
def test_lower_bound_agrees_with_monte_carlo(target: float) -> None:
    variance, confidence = 0.04, 0.95
    size = window_size_lower_bound(target, variance, confidence=confidence)
    reached = float((simulated_vfe(size, 20_000, "gaussian") >= target).double().mean())
    assert reached >= confidence - 0.01
    if size > 1:
        below = float((simulated_vfe(size // 2, 20_000, "gaussian") >= target).double().mean())
        assert below < confidence


def test_lower_bound_rejects_unreachable_targets() -> None:
    with pytest.raises(ValueError, match="not reached"):
        window_size_lower_bound(1e9, 0.04, max_window_size=16)
    with pytest.raises(ValueError, match="confidence"):
        window_size_lower_bound(1.0, 0.04, confidence=1.5)


def test_upper_bound_is_monotone_in_its_tolerance(cifar_images: torch.Tensor) -> None:
    tolerances = [0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6]
    for images in (None, cifar_images):
        bounds = [window_size_upper_bound(d, images=images, num_samples=2048) for d in tolerances]
        assert bounds == sorted(bounds), bounds
        assert bounds[0] < bounds[-1]


def test_pass_probability_matches_a_direct_simulation() -> None:
    """p^m from the per-output rate agrees with P(all outputs pass) for 2x2 windows (m = 1)."""
    generator = torch.Generator().manual_seed(7)
    windows = torch.rand((20_000, 1, 2, 2), generator=generator)
    keys = torch.rand((20_000, 4), generator=generator)
    shuffled = windows.flatten(1).gather(1, keys.argsort(dim=1)).reshape(windows.shape)
    weights = torch.randn((20_000, 4), generator=generator)
    conv = lambda w: (w.flatten(1) * weights).sum(dim=1)  # noqa: E731  one 2x2 output
    direct = float(((conv(windows) - conv(shuffled)).abs() < 0.5).double().mean())
    assert output_bias_pass_probability(2, 0.5, num_samples=20_000) == pytest.approx(direct, abs=0.015)
