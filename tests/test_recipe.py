"""The training recipe: per-image augmentation, the run-long learning-rate schedule, label smoothing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from flwr_privshare.config import ConfigError
from flwr_privshare.data import ImageDataset
from flwr_privshare.recipe import Augmentation, LearningRateSchedule, Recipe, random_crop
from flwr_privshare.recipe.section import RecipeSection
from flwr_privshare.train import batches, train


def images(count: int = 16, channels: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (count, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_random_crop_matches_torchvision_image_by_image() -> None:
    batch, padding = images(), 3
    cropped = random_crop(batch, padding, torch.Generator().manual_seed(5))
    offsets = torch.randint(0, 2 * padding + 1, (2, len(batch)), generator=torch.Generator().manual_seed(5))
    for index, image in enumerate(batch):
        padded = TF.pad(image, [padding])
        expected = TF.crop(padded, int(offsets[0, index]), int(offsets[1, index]), 8, 8)
        assert torch.equal(cropped[index], expected)


def test_every_image_gets_its_own_crop_and_flip() -> None:
    same = images(1).expand(64, -1, -1, -1).contiguous()
    out = Augmentation.named("crop-flip", 2)(same, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == same.shape
    assert len({tuple(image.flatten().tolist()) for image in out}) > 10
    flipped = Augmentation.named("flip")(same, torch.Generator().manual_seed(0))
    mirrored = (flipped == same.flip(-1)).flatten(1).all(1)
    kept = (flipped == same).flatten(1).all(1)
    assert bool((mirrored | kept).all()) and 10 < int(mirrored.sum()) < 54


def test_augmentation_is_bit_identical_for_a_seed_and_differs_between_seeds() -> None:
    augment = Augmentation.named("crop-flip", 4)
    batch = images(32, size=32)
    first, second = (augment(batch, torch.Generator().manual_seed(9)) for _ in range(2))
    assert torch.equal(first, second)
    assert not torch.equal(first, augment(batch, torch.Generator().manual_seed(10)))


def test_batches_keep_labels_and_none_draws_nothing() -> None:
    data = ImageDataset(images(40, size=32), torch.arange(40) % 10, 10)
    plain = list(batches(data, 16, torch.device("cpu"), torch.Generator().manual_seed(1)))
    augmented = list(
        batches(data, 16, torch.device("cpu"), torch.Generator().manual_seed(1), Augmentation.named("crop-flip"))
    )
    assert [labels.tolist() for _, labels in plain] == [labels.tolist() for _, labels in augmented]
    assert not all(torch.equal(a, b) for (a, _), (b, _) in zip(plain, augmented, strict=True))
    off = list(batches(data, 16, torch.device("cpu"), torch.Generator().manual_seed(1), Augmentation.named("none")))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(plain, off, strict=True))


def test_unknown_augmentation_is_refused() -> None:
    with pytest.raises(ValueError, match="augmentation must be one of"):
        Augmentation.named("rotate")


def test_auto_augments_colour_images_only() -> None:
    section = RecipeSection(augmentation="auto")
    assert section.augmentation_for((3, 32, 32)) == Augmentation(crop_padding=4, flip=True)
    assert not section.augmentation_for((1, 28, 28)).active


def lrs(
    scheduler_steps: int, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler
) -> list[float]:
    seen = []
    for _ in range(scheduler_steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def optimizer(lr: float = 0.1) -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


@pytest.mark.parametrize("total", [7, 40, 1000])
def test_schedules_match_pytorchs_schedulers(total: int) -> None:
    reference = optimizer()
    expected = lrs(
        total, reference, torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.1, total_steps=total, pct_start=0.3)
    )
    ours = optimizer()
    assert lrs(total, ours, LearningRateSchedule("one-cycle", 0.3).scheduler(ours, 0, total)) == pytest.approx(
        expected, rel=1e-12
    )
    reference = optimizer()
    expected = lrs(total, reference, torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=total))
    ours = optimizer()
    assert lrs(total, ours, LearningRateSchedule("cosine").scheduler(ours, 0, total)) == pytest.approx(
        expected, abs=1e-12
    )
    ours = optimizer()
    assert lrs(total, ours, LearningRateSchedule("constant").scheduler(ours, 0, total)) == [0.1] * total


def test_the_schedule_runs_over_all_rounds_not_each_round() -> None:
    rounds, epochs, steps = 4, 2, 5
    whole = optimizer()
    expected = lrs(
        rounds * epochs * steps, whole, LearningRateSchedule("one-cycle").scheduler(whole, 0, rounds * epochs * steps)
    )
    seen = []
    for server_round in range(1, rounds + 1):
        client = optimizer()  # every round a client builds a new optimizer
        recipe = Recipe(schedule=LearningRateSchedule("one-cycle"), server_round=server_round, num_server_rounds=rounds)
        seen += lrs(epochs * steps, client, recipe.scheduler(client, epochs, steps))
    assert seen == pytest.approx(expected, rel=1e-12)
    assert max(seen) == pytest.approx(0.1) and seen[-1] < 1e-5 and seen[0] == pytest.approx(0.1 / 25)


def test_a_run_step_past_the_end_keeps_the_final_rate() -> None:
    assert LearningRateSchedule("cosine").factor(12, 10) == pytest.approx(0.0)
    assert math.isclose(LearningRateSchedule("one-cycle").factor(9, 10), 1 / 25 / 1e4, rel_tol=1e-9)


def test_bad_schedule_values_are_refused() -> None:
    with pytest.raises(ValueError, match="lr schedule must be one of"):
        LearningRateSchedule("step")
    with pytest.raises(ValueError, match="warmup must lie in"):
        LearningRateSchedule("one-cycle", 1.0)
    with pytest.raises(ConfigError, match=r"'lr-warmup' is 0\.0"):
        RecipeSection(lr_warmup=0.0)


def test_label_smoothing_and_augmentation_change_training_and_the_plain_recipe_does_not() -> None:
    data = ImageDataset(images(64, size=32), torch.arange(64) % 10, 10)

    def trained(recipe: Recipe | None) -> torch.Tensor:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
        settings = {
            "epochs": 1,
            "batch_size": 16,
            "optimizer": "sgd",
            "learning_rate": 0.01,
            "device": torch.device("cpu"),
        }
        train(model, data, generator=torch.Generator().manual_seed(3), recipe=recipe, **settings)  # type: ignore[arg-type]
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    plain = trained(None)
    assert torch.equal(plain, trained(Recipe()))
    assert not torch.equal(plain, trained(Recipe(label_smoothing=0.1)))
    assert not torch.equal(plain, trained(Recipe(augmentation=Augmentation.named("flip"))))
    assert not torch.equal(plain, trained(Recipe(schedule=LearningRateSchedule("cosine"))))


def test_server_momentum_turns_fedavg_into_fedavgm_also_under_dp_fedavg() -> None:
    from flwr.serverapp.strategy import FedAvg, FedAvgM

    from flwr_privshare.apps.experiment import Plan
    from flwr_privshare.apps.fedavg import protections_of

    from .experiments import DP, VISUALMIXER

    def built(experiment, overrides):  # type: ignore[no-untyped-def]
        run = experiment.schema.parse(overrides)
        plan = Plan("x", "cifar-cnn", nn.Linear(1, 1), {}, None, protections_of(run))  # type: ignore[arg-type]
        grid = SimpleNamespace(get_node_ids=lambda: range(10))
        return experiment.strategy(run, plan, grid), experiment.method(run, plan)

    strategy, method = built(VISUALMIXER, {"protection": "none"})
    assert type(strategy) is FedAvg and method == "fedavg"
    strategy, method = built(VISUALMIXER, {"protection": "none", "server-momentum": 0.9, "server-learning-rate": 2.0})
    assert isinstance(strategy, FedAvgM) and (strategy.server_momentum, strategy.server_learning_rate) == (0.9, 2.0)
    assert method == "fedavgm"
    assert built(VISUALMIXER, {"server-momentum": 0.5})[1] == "fedavgm+visualmixer"
    wrapped, method = built(DP, {"protection": "dp-fedavg", "server-momentum": 0.9})
    assert isinstance(wrapped.strategy, FedAvgM) and method == "dp-fedavg"  # type: ignore[attr-defined]
