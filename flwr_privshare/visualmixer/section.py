"""The VisualMixer section: window bounds and channel shuffling of Algorithm 1."""

from __future__ import annotations

from dataclasses import dataclass

from ..config.checks import Satisfies, require
from ..config.section import Section, setting
from .mixer import is_power_of_two


@dataclass(frozen=True)
class VisualMixerSection(Section):
    """VisualMixer (Xu et al., NDSS 2024): every client shuffles its images in windows between two sizes."""

    title = "VisualMixer"

    vim_window_min: int = setting(
        2, "smallest shuffling window", Satisfies("a power of two (1, 2, 4, 8, ...)", is_power_of_two)
    )
    vim_window_max: int = setting(
        8,
        "largest shuffling window",
        Satisfies(
            "a power of two of at least 2 (a 1-pixel window shuffles nothing)",
            lambda size: is_power_of_two(size) and size >= 2,
        ),
    )
    vim_channel_shuffle: bool = setting(True, "also permute the channels of every window independently")

    def validate(self) -> None:
        require(
            self.vim_window_min <= self.vim_window_max,
            "vim-window-min",
            self.vim_window_min,
            f"at most vim-window-max ({self.vim_window_max})",
        )

    def validate_image_shape(self, image_shape: tuple[int, int, int]) -> None:
        """Check the windows against the images: the largest must fit."""
        require(
            self.vim_window_max <= min(image_shape[1:]),
            "vim-window-max",
            self.vim_window_max,
            f"at most the image size {image_shape[1]}x{image_shape[2]}",
        )
