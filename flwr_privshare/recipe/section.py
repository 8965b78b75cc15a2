"""The training-recipe section: augmentation, learning-rate schedule, label smoothing and the server's step."""

from __future__ import annotations

from dataclasses import dataclass

from ..config.checks import POSITIVE, Interval, one_of
from ..config.common import CommonSection
from ..config.schema import RunConfig
from ..config.section import Section, setting
from . import Recipe
from .augmentation import AUGMENTATIONS, Augmentation
from .schedule import SCHEDULES, LearningRateSchedule


@dataclass(frozen=True)
class RecipeSection(Section):
    """How the federation trains: augmentation, learning-rate schedule, label smoothing, server momentum."""

    title = "Training recipe"

    augmentation: str = setting(
        "none",
        'per-image augmentation of every batch ("auto": crop-flip for colour images, none for grayscale ones)',
        one_of(("auto", *AUGMENTATIONS)),
    )
    crop_padding: int = setting(
        4, "zero padding of crop-flip's random crop, in pixels", Interval("an integer in [1, 16]", 1, 16)
    )
    lr_schedule: str = setting(
        "one-cycle", "learning-rate schedule over all rounds (learning-rate is its peak)", one_of(SCHEDULES)
    )
    lr_warmup: float = setting(
        0.25, "one-cycle: fraction of the run spent warming up", Interval("a number in (0, 1)", 0, 1, True, True)
    )
    label_smoothing: float = setting(
        0.0, "label smoothing of the training loss", Interval("a number in [0, 1)", 0, 1, high_open=True)
    )

    server_learning_rate: float = setting(
        1.0, "server step on the mean client update (FedAvgM; 1 with momentum 0 is FedAvg)", POSITIVE
    )
    server_momentum: float = setting(
        0.0,
        "server momentum on the mean client update (FedAvgM, Hsu et al. 2019; 0: none)",
        Interval("a number in [0, 1)", 0, 1, high_open=True),
    )

    @property
    def server_optimizer(self) -> bool:
        """Whether the server steps with FedAvgM rather than taking the plain mean (FedAvg)."""
        return self.server_learning_rate != 1.0 or self.server_momentum != 0.0

    def augmentation_for(self, image_shape: tuple[int, int, int]) -> Augmentation:
        """The augmentation for images of ``image_shape`` (resolves ``"auto"``)."""
        name = self.augmentation
        if name == "auto":
            name = "crop-flip" if image_shape[0] == 3 else "none"
        return Augmentation.named(name, self.crop_padding)

    @property
    def schedule(self) -> LearningRateSchedule:
        return LearningRateSchedule(self.lr_schedule, self.lr_warmup)


def recipe_of(run: RunConfig, image_shape: tuple[int, int, int], server_round: int) -> Recipe:
    """The run's training recipe for this round (the plain loop when the app declares no recipe keys)."""
    if RecipeSection not in run:
        return Recipe()
    return Recipe.from_section(run[RecipeSection], image_shape, server_round, run[CommonSection].num_server_rounds)


def server_optimizer_of(run: RunConfig) -> RecipeSection | None:
    """The recipe section when it asks the server to step with FedAvgM, else None (plain FedAvg)."""
    if RecipeSection not in run or not run[RecipeSection].server_optimizer:
        return None
    return run[RecipeSection]
