"""Figures of a DPM run: sample reconstructions and reconstruction similarity per reconstructor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def reconstruction_grid(rows: Mapping[str, torch.Tensor]) -> Any:
    """One row of images per entry (``{"original": x, "from original features": ...}``), images in [0, 1]."""
    names = list(rows)
    count = len(next(iter(rows.values())))
    figure, axes = plt.subplots(len(names), count, figsize=(1.2 * count, 1.3 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for column in range(count):
            image = rows[name][column].detach().cpu().clamp(0, 1).permute(1, 2, 0)
            axis = axes[row][column]
            axis.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[row][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    figure.tight_layout()
    return figure


def ssim_bars(report: Mapping[str, float], reconstructors: list[str]) -> Any:
    """SSIM from original vs poisoned features for every reconstructor."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    width = 0.4
    positions = range(len(reconstructors))
    for offset, view in ((-width / 2, "original"), (width / 2, "poisoned")):
        values = [report[f"{name}/ssim_{view}"] for name in reconstructors]
        axis.bar([p + offset for p in positions], values, width, label=f"from {view} features")
    axis.set_xticks(list(positions), reconstructors)
    axis.set_ylabel("SSIM to the image")
    axis.axhline(0.0, color="black", linewidth=0.5)
    axis.legend()
    axis.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return figure
