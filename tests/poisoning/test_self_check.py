"""A client's self-check of its DPM: the SSIM it measures, when it redraws, when it gives up, bad input."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from flwr_privshare.data import ImageDataset
from flwr_privshare.models import build_model
from flwr_privshare.poisoning import (
    DeepPoisoningModule,
    DPMTrainingResult,
    Reconstructor,
    SelfCheck,
    SplitModel,
    check_ssim,
    evaluate_poisoning,
    feature_shape,
    split_model,
    ssim_per_image,
    train_checked_dpm,
    train_reconstructor,
)
from flwr_privshare.poisoning.self_check import CHECK_IMAGES

CPU = torch.device("cpu")
IMAGE_SHAPE = (1, 28, 28)
Setting = tuple[SplitModel, Reconstructor, ImageDataset]


@pytest.fixture(scope="module")
def setting(mnist_test: ImageDataset) -> Setting:
    torch.manual_seed(0)
    split = split_model(build_model("mnist-cnn"), "pool1")
    checker = Reconstructor("rx3s2", feature_shape(split.featurizer, IMAGE_SHAPE), IMAGE_SHAPE)
    data = mnist_test.head(CHECK_IMAGES + 100)
    train_reconstructor(
        checker, split.featurizer, data, epochs=1, batch_size=64, device=CPU, generator=torch.Generator()
    )
    return split, checker, data


def test_check_ssim_is_the_checkers_mean_ssim_on_the_first_images(setting: Setting) -> None:
    split, checker, data = setting
    dpm = DeepPoisoningModule(16)
    with torch.no_grad():
        for parameter in dpm.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        dpm.eval()
        images = data.images[:CHECK_IMAGES].float() / 255
        expected = torch.cat(
            [
                ssim_per_image(checker(dpm(split.featurizer(images[i : i + 1])).half().float()), images[i : i + 1])
                for i in range(0, CHECK_IMAGES, 50)
            ]
        )
    # Only every 50th image is recomputed one by one; the whole mean comes from evaluate_poisoning.
    full = evaluate_poisoning(split, dpm, {"check": checker}, data.head(CHECK_IMAGES), device=CPU)
    measured = check_ssim(split, dpm, checker, data, device=CPU)
    assert measured == pytest.approx(full["check/ssim_poisoned"], abs=1e-5)
    single = check_ssim(split, dpm, checker, data.subset(torch.arange(0, CHECK_IMAGES, 50)), device=CPU)
    assert single == pytest.approx(expected.mean().item(), abs=1e-5)
    # An identity P: the check is the checker's reconstruction from the original features.
    assert check_ssim(split, DeepPoisoningModule(16), checker, data, device=CPU) == pytest.approx(
        full["check/ssim_original"], abs=1e-5
    )


def draws_recorded(calls: list[int]) -> Callable[[int], tuple[DeepPoisoningModule, DPMTrainingResult]]:
    """A ``train_draw`` that records which draws were asked for; draw ``d`` is a P perturbed from seed ``d``."""

    def train_draw(draw: int) -> tuple[DeepPoisoningModule, DPMTrainingResult]:
        calls.append(draw)
        torch.manual_seed(draw)
        dpm = DeepPoisoningModule(16)
        with torch.no_grad():
            for parameter in dpm.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))
        return dpm, DPMTrainingResult(cross_entropy=1.0, ssim=0.0)

    return train_draw


def test_the_first_passing_draw_is_kept(setting: Setting) -> None:
    split, checker, data = setting
    calls: list[int] = []
    checked = train_checked_dpm(draws_recorded(calls), split, SelfCheck(checker, 1.0, 3), data, device=CPU)
    assert calls == [0] and checked.passed and checked.draws == 1
    assert checked.check_ssim == pytest.approx(check_ssim(split, checked.dpm, checker, data, device=CPU))


def test_a_failing_draw_is_redrawn_and_no_passing_draw_means_nothing_may_be_shared(setting: Setting) -> None:
    split, checker, data = setting
    calls: list[int] = []
    measured = [abs(check_ssim(split, draws_recorded([])(d)[0], checker, data, device=CPU)) for d in range(3)]
    # A threshold between the draws' values: the first draw below it is kept.
    threshold = (sorted(measured)[0] + sorted(measured)[1]) / 2
    first_passing = next(d for d, value in enumerate(measured) if value <= threshold)
    checked = train_checked_dpm(draws_recorded(calls), split, SelfCheck(checker, threshold, 3), data, device=CPU)
    assert checked.passed and calls == list(range(first_passing + 1)) and checked.draws == first_passing + 1

    calls.clear()
    below_all = min(measured) / 2
    checked = train_checked_dpm(draws_recorded(calls), split, SelfCheck(checker, below_all, 3), data, device=CPU)
    assert not checked.passed and calls == [0, 1, 2] and checked.draws == 3
    assert abs(checked.check_ssim) == pytest.approx(measured[2], abs=1e-6)


def test_without_a_check_draw_zero_is_used_unchecked(setting: Setting) -> None:
    split, _checker, data = setting
    calls: list[int] = []
    checked = train_checked_dpm(draws_recorded(calls), split, None, data, device=CPU)
    assert calls == [0] and checked.passed and checked.draws == 1 and math.isnan(checked.check_ssim)


@pytest.mark.parametrize(
    ("name", "threshold", "draws", "pattern"),
    [
        ("rx4s2", 0.2, 3, r"the checker must be one of \('rx3s2', 'rx5s2'\), got 'rx4s2'"),
        ("rx3s2", 0.0, 3, r"threshold must be in \(0, 1\], got 0.0"),
        ("rx3s2", 1.5, 3, r"threshold must be in \(0, 1\], got 1.5"),
        ("rx3s2", 0.2, 0, "draws must be >= 1, got 0"),
    ],
)
def test_bad_self_check_settings_are_rejected(name: str, threshold: float, draws: int, pattern: str) -> None:
    checker = Reconstructor(name, (16, 14, 14), IMAGE_SHAPE)
    with pytest.raises(ValueError, match=pattern):
        SelfCheck(checker, threshold, draws)
