"""Train and score a decider phi2 on features (the server side of feature sharing, Guo et al. §4)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

#: The server's refinement defaults (``FeatureSharing``'s, which the DPM app keeps).
REFINE_BATCH_SIZE = 64
REFINE_LEARNING_RATE = 1e-3


def train_decider(
    decider: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = REFINE_BATCH_SIZE,
    learning_rate: float = REFINE_LEARNING_RATE,
    generator: torch.Generator,
    device: torch.device | None = None,
) -> float:
    """Fit ``decider`` to ``(features, labels)`` with cross-entropy and Adam; return the last epoch's mean loss.

    ``features`` may be float16 (as shared on the wire); batches are moved to ``device``
    and cast to float32 one at a time.
    """
    device = device or next(decider.parameters()).device
    decider.to(device).train()
    optimizer = torch.optim.Adam(decider.parameters(), lr=learning_rate)
    epoch_loss = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            logits = decider(features[index].to(device).float())
            loss = F.cross_entropy(logits, labels[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        epoch_loss = total / max(len(labels), 1)
    decider.eval()
    return epoch_loss


@torch.no_grad()
def decider_accuracy(decider: nn.Module, features: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``decider`` on ``(features, labels)``."""
    decider.eval()
    device = next(decider.parameters()).device
    correct = 0
    for start in range(0, len(labels), batch_size):
        logits = decider(features[start : start + batch_size].to(device).float())
        correct += int((logits.argmax(dim=1).cpu() == labels[start : start + batch_size]).sum())
    return correct / max(len(labels), 1)
