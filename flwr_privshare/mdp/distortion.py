"""Mapping distortion (Li et al., "Visual Privacy Protection via Mapping Distortion", ICASSP 2021, Eq. 1).

For a target pair ``(x_t, y_t)`` and a selected image ``x_s`` of another class, MDP solves

    x_m = argmin_{x in [0, 1]} d(f(x), f(x_t)),   starting from x = x_s,

by projected gradient descent, ``f`` being a pre-trained network's penultimate layer, and
keeps ``(x_m, y_t)``: an image that looks like ``x_s`` (another class) but carries the
"useful but unstable" features of ``x_t``. AugMDP keeps ``T`` such copies per target.

Two distances:

- ``"mse"``: mean squared feature difference, each step the gradient scaled to ``step_size``
  in l2 norm per image (the official code, after MadryLab's constructed data sets);
- ``"linf"``: the largest absolute feature difference, each step ``step_size`` times the sign
  of the gradient (the l-infinity steepest descent of the paper's PGD).

Each image keeps its best iterate, so the distance never ends above its start. Everything
is batched; the network's parameters are frozen.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from pytorch_msssim import ssim

from ..data import ImageDataset
from ..models import ImageClassifier
from .pairing import pair_with_other_classes

DISTANCES = ("mse", "linf")


def penultimate_features(model: ImageClassifier, images: torch.Tensor) -> torch.Tensor:
    """f(x): the input of the model's linear classifier, ``(N, D)``, for images in [0, 1]."""
    return model.pool(model.features(images)).flatten(1)


def feature_distance(features: torch.Tensor, targets: torch.Tensor, distance: str) -> torch.Tensor:
    """Per-image ``d(f(x), f(x_t))``: mean squared difference (``"mse"``) or the largest absolute one (``"linf"``)."""
    difference = features - targets
    if distance == "mse":
        return difference.pow(2).mean(dim=1)
    if distance == "linf":
        return difference.abs().amax(dim=1)
    raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")


def frozen_copy(model: ImageClassifier, device: torch.device) -> ImageClassifier:
    """An evaluation-mode copy of ``model`` on ``device`` without parameter gradients (only x gets gradients)."""
    frozen = copy.deepcopy(model).to(device).eval()
    for parameter in frozen.parameters():
        parameter.requires_grad_(False)
    return frozen


def distort_batch(
    network: ImageClassifier,
    start: torch.Tensor,
    target_features: torch.Tensor,
    *,
    steps: int,
    step_size: float,
    distance: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PGD from ``start`` towards ``target_features`` (Eq. 1); return the best images and the distances
    at the start and at the best iterate, all per image."""
    x = start.clone()
    best = start.clone()
    best_distance = torch.full((len(start),), float("inf"), device=start.device)
    start_distance = best_distance
    for step in range(steps + 1):
        x.requires_grad_(True)
        current = feature_distance(penultimate_features(network, x), target_features, distance)
        (gradient,) = torch.autograd.grad(current.sum(), x) if step < steps else (None,)
        with torch.no_grad():
            current = current.detach()
            if step == 0:
                start_distance = current.clone()
            improved = current < best_distance
            best_distance = torch.where(improved, current, best_distance)
            best[improved] = x.detach()[improved]
            if gradient is None:
                break
            if distance == "linf":
                direction = gradient.sign()
            else:
                norms = gradient.flatten(1).norm(dim=1).clamp_min(1e-12)
                direction = gradient / norms.view(-1, *([1] * (gradient.dim() - 1)))
            x = (x.detach() - step_size * direction).clamp_(0.0, 1.0)
    return best, start_distance, best_distance


@dataclass(frozen=True)
class Distortion:
    """A client's distorted data and what it keeps about it (nothing here leaves the client).

    Attributes:
        data: the modified images (uint8, ``copies * n`` of them) with their targets' labels.
        selected_labels: the true class of the image each modified image started from.
        selected_index: the index (into the input data) of that image.
        target_index: the index of the target whose label the modified image carries.
        ssim: SSIM(modified, selected) per modified image.
        start_distance, end_distance: the feature distance at the selected image and at the stored
            (uint8) modified image, per image.
        seconds: wall time of the PGD.
    """

    data: ImageDataset
    selected_labels: torch.Tensor
    selected_index: torch.Tensor
    target_index: torch.Tensor
    ssim: torch.Tensor
    start_distance: torch.Tensor
    end_distance: torch.Tensor
    seconds: float

    def metrics(self) -> dict[str, float]:
        """The client's scalar report: mean SSIM, share of changed labels, distances, PGD time per image."""
        return {
            "mdp-ssim": float(self.ssim.mean()),
            "mdp-label-differs": float((self.selected_labels != self.data.labels).double().mean()),
            "mdp-distance-start": float(self.start_distance.mean()),
            "mdp-distance-end": float(self.end_distance.mean()),
            "mdp-seconds-per-image": self.seconds / max(len(self.data), 1),
        }


def map_distort(
    data: ImageDataset,
    network: ImageClassifier,
    *,
    copies: int,
    steps: int,
    step_size: float,
    distance: str,
    generator: torch.Generator,
    device: torch.device,
    batch_size: int = 64,
) -> Distortion:
    """MDP (``copies = 1``) or AugMDP (``copies = T``) of ``data`` with the feature network ``network``.

    The pairing is drawn first from ``generator`` (:func:`pair_with_other_classes`), so it is
    reproducible and does not depend on the batch size. Modified images are rounded to uint8,
    as a stored data set would be.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    selected_index = pair_with_other_classes(data.labels, copies, generator).flatten()
    target_index = torch.arange(len(data)).repeat(copies)
    frozen = frozen_copy(network, device)
    modified, start_parts, end_parts, ssim_parts = [], [], [], []
    started = time.perf_counter()
    for begin in range(0, len(target_index), batch_size):
        targets = target_index[begin : begin + batch_size]
        selected = data.images[selected_index[begin : begin + batch_size]].to(device).float().div_(255.0)
        with torch.no_grad():
            target_features = penultimate_features(frozen, data.images[targets].to(device).float().div_(255.0))
        best, start_distance, _ = distort_batch(
            frozen, selected, target_features, steps=steps, step_size=step_size, distance=distance
        )
        stored = best.mul(255.0).round_().to(torch.uint8)
        with torch.no_grad():
            stored_float = stored.float().div_(255.0)
            end_distance = feature_distance(penultimate_features(frozen, stored_float), target_features, distance)
        ssim_parts.append(ssim(stored_float, selected, data_range=1.0, size_average=False).cpu())
        modified.append(stored.cpu())
        start_parts.append(start_distance.cpu())
        end_parts.append(end_distance.cpu())
    seconds = time.perf_counter() - started
    images = torch.cat(modified)
    return Distortion(
        data=ImageDataset(images, data.labels[target_index], data.num_classes),
        selected_labels=data.labels[selected_index],
        selected_index=selected_index,
        target_index=target_index,
        ssim=torch.cat(ssim_parts),
        start_distance=torch.cat(start_parts),
        end_distance=torch.cat(end_parts),
        seconds=seconds,
    )
