"""VisualMixer as a protection: every client shuffles its own partition once and trains on it.

A client mixes its partition with Algorithm 1 (:func:`~flwr_privshare.visualmixer.visual_mix`)
under a key that never leaves it, keeps the shuffled images in ``context.state`` for later
rounds and trains on them. The key is ``node_config["vim-seed"]`` when the SuperNode sets one
(a real deployment: a secret only that client knows); in simulation it is derived from the
run seed and the partition id, so runs are reproducible.

The server evaluates on a test set it shuffles with its own key (the deployed setting) and
on the plain one, and reports the window bounds and the VFE gain.
"""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import Context
from flwr.serverapp.strategy import Result, Strategy

from ..config.common import CommonSection
from ..data import ImageDataset
from ..models import ImageClassifier
from ..seeding import derive_seed
from ..visualmixer import MixResult, visual_mix
from ..visualmixer.section import VisualMixerSection
from .base import HeadlineColumn, Protection, register_protection
from .client_state import data_key, keep_data, kept_data

STATE_KEY = data_key("visualmixer")


def simulated_client_key(seed: int, partition_id: int) -> int:
    """The VisualMixer key of a simulated client (no ``vim-seed`` in its node config)."""
    return derive_seed(seed, "visualmixer", partition_id)


def mixing_seed(seed: int, context: Context) -> int:
    """The client's private VisualMixer key (see the module docstring)."""
    if "vim-seed" in context.node_config:
        return int(context.node_config["vim-seed"])
    return simulated_client_key(seed, int(context.node_config["partition-id"]))


@register_protection
class VisualMixerProtection(Protection):
    """VisualMixer (Xu et al., NDSS 2024): VFE-guided window shuffling of the clients' images."""

    name = "visualmixer"
    headline_columns = (HeadlineColumn("vfe_gain", "VFE gain", ("visualmixer", "vfe_gain")),)
    section = VisualMixerSection

    @property
    def settings(self) -> VisualMixerSection:
        return self.run[VisualMixerSection]

    def check_data(self, image_shape: tuple[int, int, int]) -> None:
        self.settings.validate_image_shape(image_shape)

    def mix(self, images: torch.Tensor, seed: int) -> MixResult:
        """Algorithm 1 on ``images`` under the key ``seed``."""
        return visual_mix(
            images,
            self.settings.vim_window_min,
            self.settings.vim_window_max,
            channel_shuffle=self.settings.vim_channel_shuffle,
            generator=torch.Generator().manual_seed(seed),
        )

    def test_sets(self, test: ImageDataset) -> dict[str, ImageDataset]:
        """The test set shuffled with the server's own key (the deployed setting), evaluated first."""
        self._mixed_test = self.mix(test.images, derive_seed(self.run[CommonSection].seed, "visualmixer", "test"))
        return {"mixed": ImageDataset(self._mixed_test.images, test.labels, test.num_classes)}

    def report(self, strategy: Strategy, result: Result) -> dict[str, Any]:
        mixed = self._mixed_test
        return {
            "window_min": self.settings.vim_window_min,
            "window_max": self.settings.vim_window_max,
            "channel_shuffle": self.settings.vim_channel_shuffle,
            "vfe_plain": float(mixed.vfe_before.mean()),
            "vfe_mixed": float(mixed.vfe_after.mean()),
            "vfe_gain": float((mixed.vfe_after / mixed.vfe_before.clamp_min(1e-12)).mean()),
        }

    def client_data(
        self, data: ImageDataset, context: Context, model: ImageClassifier
    ) -> tuple[ImageDataset, dict[str, float]]:
        """The shuffled partition, mixed on first use and kept in ``context.state`` (it never leaves the client)."""
        kept = kept_data(context, self.name)
        if kept is not None:
            return kept
        self.check_data(data.image_shape)
        mixed = self.mix(data.images, mixing_seed(self.run[CommonSection].seed, context))
        shuffled = ImageDataset(mixed.images, data.labels, data.num_classes)
        metrics = {"vfe-plain": float(mixed.vfe_before.mean()), "vfe-mixed": float(mixed.vfe_after.mean())}
        keep_data(context, self.name, shuffled, metrics)
        return shuffled, metrics
