"""The training recipe: per-image augmentation, a learning-rate schedule over the run, label smoothing.

:class:`Recipe` is what one client's local training needs of it this round; the run config's
:class:`~flwr_privshare.recipe.section.RecipeSection` builds it (``docs/training.md`` says what
each part means under each protection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from .augmentation import AUGMENTATIONS, Augmentation, random_crop
from .schedule import SCHEDULES, LearningRateSchedule

if TYPE_CHECKING:  # the section imports the config package, which imports the training loop
    from .section import RecipeSection


@dataclass(frozen=True)
class Recipe:
    """The recipe of one client's training in round ``server_round`` of ``num_server_rounds``.

    The default is the plain loop: no augmentation, a constant learning rate, hard labels.
    """

    augmentation: Augmentation = field(default_factory=Augmentation)
    schedule: LearningRateSchedule = field(default_factory=LearningRateSchedule)
    label_smoothing: float = 0.0
    server_round: int = 1
    num_server_rounds: int = 1

    @classmethod
    def from_section(
        cls, section: RecipeSection, image_shape: tuple[int, int, int], server_round: int, num_server_rounds: int
    ) -> Recipe:
        """The recipe the run config asks for, for images of ``image_shape`` in ``server_round``."""
        return cls(
            section.augmentation_for(image_shape),
            section.schedule,
            section.label_smoothing,
            server_round,
            num_server_rounds,
        )

    def scheduler(self, optimizer: Optimizer, epochs: int, steps_per_epoch: int) -> LambdaLR:
        """The schedule for this round's ``epochs * steps_per_epoch`` steps, placed in the whole run."""
        per_round = epochs * steps_per_epoch
        return self.schedule.scheduler(
            optimizer, (self.server_round - 1) * per_round, self.num_server_rounds * per_round
        )


__all__ = [
    "AUGMENTATIONS",
    "SCHEDULES",
    "Augmentation",
    "LearningRateSchedule",
    "Recipe",
    "random_crop",
]
