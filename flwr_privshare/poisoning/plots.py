"""Figures of a DPM run: sample reconstructions and reconstruction similarity per reconstructor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .evaluation import STRETCH_TAIL


def pyplot() -> Any:
    """Matplotlib's pyplot on the Agg backend, imported on first use: clients that never plot skip its import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reconstruction_grid(rows: Mapping[str, torch.Tensor]) -> Any:
    """One row of images per entry (``{"original": x, "from original features": ...}``), images in [0, 1]."""
    plt = pyplot()
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


def audit_bars(report: Mapping[str, float], reconstructors: list[str]) -> Any:
    """Three panels, original vs poisoned features: the decider's accuracy, and SSIM and L1 per reconstructor.

    The SSIM panel adds the stronger attacker's SSIM from poisoned features, with the
    reconstructor's output stretched between quantiles (:data:`STRETCH_TAIL`), and marks
    the reference levels of :func:`~flwr_privshare.poisoning.evaluation.reference_ssim`.
    """
    plt = pyplot()
    figure, (accuracy_axis, ssim_axis, l1_axis) = plt.subplots(
        1, 3, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1, 3, 3]}
    )
    views = (("original", -0.2), ("poisoned", 0.2))
    for view, offset in views:
        accuracy_axis.bar([offset], [report[f"accuracy_{view}"]], 0.4, label=f"{view} features")
    accuracy_axis.set_xticks([])
    accuracy_axis.set_ylim(0.0, 1.0)
    accuracy_axis.set_ylabel("decider accuracy")
    positions = range(len(reconstructors))
    plain = {"original": "from original features", "poisoned": "from poisoned features"}
    stretched = f"from poisoned features, output stretched {100 * STRETCH_TAIL:g}-{100 * (1 - STRETCH_TAIL):g}%"
    panels = (
        (ssim_axis, "ssim", "SSIM to the image", plain | {"poisoned_stretched": stretched}),
        (l1_axis, "l1", "L1 to the image", plain),
    )
    for axis, metric, label, bars in panels:
        width = 0.8 / len(bars)
        for index, (view, legend) in enumerate(bars.items()):
            values = [report[f"{name}/{metric}_{view}"] for name in reconstructors]
            offset = (index - (len(bars) - 1) / 2) * width
            axis.bar([p + offset for p in positions], values, width, label=legend)
        axis.set_xticks(list(positions), reconstructors)
        axis.set_ylabel(label)
        axis.axhline(0.0, color="black", linewidth=0.5)
        axis.grid(alpha=0.3, axis="y")
    references = (
        ("other_image", "unrelated image (chance)", ":"),
        ("mean_colour", "flat image of its mean colour", "--"),
    )
    for key, legend, style in references:
        ssim_axis.axhline(report[f"reference/ssim_{key}"], color="grey", linestyle=style, label=legend)
    figure.legend(*ssim_axis.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize="small")
    figure.tight_layout(rect=(0.0, 0.12, 1.0, 1.0))
    return figure
