"""Train and evaluate loops over uint8 image tensors, and the optimizer factory.

Batches are cut from the decoded ``uint8`` tensors and scaled to [0, 1] on the fly, which
is faster on CPU than a DataLoader over PIL images. CUDA is used when the process sees a
GPU (a Ray actor with ``num-gpus`` > 0), CPU otherwise, through the same code path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from logging import INFO

import torch
from flwr.common import log
from torch import nn

from .data import ImageDataset
from .recipe import Augmentation, Recipe
from .visualmixer.st_adam import STAdam

OPTIMIZERS = ("sgd", "adam", "st-adam")


def get_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def release_device_memory(device: torch.device) -> None:
    """Hand the CUDA caching allocator's free blocks back after a client's round: clients that share one GPU
    (``client-resources-num-gpus`` below 1) each get the memory back between rounds. Nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def describe_device(device: torch.device) -> str:
    """The GPU's name, or ``"cpu (N threads)"``: what a result file records about where it ran.

    On the CPU the thread count belongs to the record because PyTorch's kernels sum in an
    order that depends on it, so the same seed trains different models with 1 and 2 threads.
    """
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"


def make_optimizer(
    name: str, params: Sequence[torch.Tensor] | Iterator[torch.Tensor], lr: float
) -> torch.optim.Optimizer:
    """``sgd`` (momentum 0.9), ``adam`` or ``st-adam`` (VisualMixer's, Section IV-E)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "st-adam":
        return STAdam(params, lr=lr, momentum=0.5)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def batches(
    data: ImageDataset,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    augmentation: Augmentation | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images in [0, 1], labels)`` batches; shuffled when a generator is given.

    ``augmentation`` (which needs the generator) changes the ``uint8`` images of every batch,
    each image with its own random parameters.
    """
    count = len(data)
    order = torch.randperm(count, generator=generator) if generator is not None else torch.arange(count)
    for start in range(0, count, batch_size):
        index = order[start : start + batch_size]
        images = data.images[index].to(device, non_blocking=True)
        if augmentation is not None and generator is not None:
            images = augmentation(images, generator)
        yield images.float().div_(255.0), data.labels[index].to(device, non_blocking=True)


def train(
    model: nn.Module,
    data: ImageDataset,
    *,
    epochs: int,
    batch_size: int,
    optimizer: str,
    learning_rate: float,
    device: torch.device,
    generator: torch.Generator,
    recipe: Recipe | None = None,
    progress: str = "",
) -> float:
    """Train ``model`` in place with cross-entropy; return the mean training loss.

    ``recipe`` adds augmentation, the run's learning-rate schedule (``learning_rate`` is its
    peak) and label smoothing; without it the loop is plain. With ``progress`` (a label),
    every epoch's end is logged, for long steps that would otherwise run for minutes
    without a word.
    """
    recipe = recipe or Recipe()
    model.to(device).train()
    opt = make_optimizer(optimizer, model.parameters(), learning_rate)
    scheduler = recipe.scheduler(opt, epochs, -(-len(data) // batch_size))
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    total_loss, total_count = 0.0, 0
    for epoch in range(epochs):
        for images, labels in batches(data, batch_size, device, generator, recipe.augmentation):
            opt.zero_grad(set_to_none=True)
            loss = criterion(model(images), labels)
            loss.backward()
            opt.step()
            scheduler.step()
            total_loss += loss.item() * len(labels)
            total_count += len(labels)
        if progress:
            log(INFO, "%s: epoch %d/%d done, mean loss %.4f", progress, epoch + 1, epochs, total_loss / total_count)
    return total_loss / max(total_count, 1)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ImageDataset, *, batch_size: int = 512, device: torch.device
) -> tuple[float, float]:
    """Return ``(mean cross-entropy loss, accuracy)`` of ``model`` on ``data``."""
    model.to(device).eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct = 0.0, 0
    for images, labels in batches(data, batch_size, device):
        logits = model(images)
        total_loss += float(criterion(logits, labels))
        correct += int((logits.argmax(dim=1) == labels).sum())
    return total_loss / max(len(data), 1), correct / max(len(data), 1)
