"""What a membership attack reads from a model: per-example confidences under query augmentations.

For every example and every query view (the image itself, shifted by a few pixels, and
mirrored when the images are colour photographs) one forward pass gives

- the logit-scaled confidence ``log(p_y / (1 - p_y))`` (LiRA, Carlini et al. 2022, Section IV-C),
  computed stably as ``z_y - logsumexp_{j != y} z_j`` from the logits ``z``;
- the probability of the true label ``p_y`` (RMIA, Zarifzadeh et al. 2024);
- the cross-entropy loss on the unaugmented image (LOSS, Yeom et al. 2018);
- the shadow attack's features: the sorted top probabilities, ``log p_y`` and the entropy.

Every view is computed for the whole batch at once (padding and slicing, no loop over images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...data import ImageDataset

#: Shifts of the query views, in pixels (dy, dx); the first is the image itself.
SHIFTS = ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2))
#: Top probabilities that enter the shadow attack's features.
TOP_PROBABILITIES = 3


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``images`` (N, C, H, W) moved by ``(dy, dx)`` pixels, the uncovered border filled with zeros."""
    if dy == 0 and dx == 0:
        return images
    pad = max(abs(dy), abs(dx))
    height, width = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad))
    top, left = pad - dy, pad - dx
    return padded[..., top : top + height, left : left + width]


def query_views(images: torch.Tensor, flip: bool) -> list[torch.Tensor]:
    """The query views of a batch: every shift of :data:`SHIFTS`, and each mirrored when ``flip``."""
    views = [shifted(images, dy, dx) for dy, dx in SHIFTS]
    if flip:
        views += [view.flip(-1) for view in views]
    return views


def flips_for(image_shape: tuple[int, int, int]) -> bool:
    """Mirror queries for colour photographs (CIFAR-10), not for digits or faces in grey (MNIST)."""
    return image_shape[0] == 3


@dataclass(frozen=True)
class ModelSignals:
    """One model's view of N examples under A query views.

    Attributes:
        confidence: ``(N, A)`` logit-scaled confidence of the true label.
        probability: ``(N, A)`` softmax probability of the true label.
        loss: ``(N,)`` cross-entropy of the unaugmented image.
        features: ``(N, F)`` the shadow attack's features (unaugmented image).
    """

    confidence: np.ndarray
    probability: np.ndarray
    loss: np.ndarray
    features: np.ndarray

    def subset(self, index: np.ndarray) -> ModelSignals:
        """The signals of the examples ``index``."""
        return ModelSignals(self.confidence[index], self.probability[index], self.loss[index], self.features[index])


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log(p_y / (1 - p_y))`` from logits, without forming ``p_y`` (exact where ``p_y`` rounds to 1)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - torch.logsumexp(others, dim=1)


def shadow_features(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sorted top probabilities, ``log p_y`` and the entropy: label-aware features of one output vector."""
    log_probs = logits.log_softmax(dim=1)
    probs = log_probs.exp()
    top = probs.topk(min(TOP_PROBABILITIES, probs.shape[1]), dim=1).values
    entropy = -(probs * log_probs).sum(dim=1, keepdim=True)
    return torch.cat([top, log_probs.gather(1, labels[:, None]), entropy], dim=1)


@torch.no_grad()
def model_signals(
    model: nn.Module, data: ImageDataset, *, device: torch.device, flip: bool, batch_size: int = 256
) -> ModelSignals:
    """The signals of ``model`` on every example of ``data``."""
    model.to(device).eval()
    confidence, probability, loss, features = [], [], [], []
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size].to(device).float().div_(255.0)
        labels = data.labels[start : start + batch_size].to(device)
        views = query_views(images, flip)
        logits = model(torch.cat(views)).float().view(len(views), len(labels), -1)
        view_labels = labels.repeat(len(views))
        flat = logits.flatten(0, 1)
        confidence.append(logit_confidence(flat, view_labels).view(len(views), -1).T.cpu())
        probability.append(flat.softmax(dim=1).gather(1, view_labels[:, None]).view(len(views), -1).T.cpu())
        loss.append(F.cross_entropy(logits[0], labels, reduction="none").cpu())
        features.append(shadow_features(logits[0], labels).cpu())
    return ModelSignals(
        torch.cat(confidence).double().numpy(),
        torch.cat(probability).double().numpy(),
        torch.cat(loss).double().numpy(),
        torch.cat(features).double().numpy(),
    )
