"""Learned inversion of VisualMixer: can an attacker who knows the algorithm undo the shuffling?

VisualMixer's paper argued that shuffled images cannot be restored with a shredder-challenge
solver or JigsawNet. This attack is stronger (Kerckhoffs: the attacker knows the algorithm
and the run's window settings, not the clients' keys): it shuffles public images itself,
with a fresh key every epoch, and trains an inversion network (:mod:`.network`) with L1 on
the pairs (shuffled, original). It then inverts

- shuffled images a client holds, as if they leaked (partition 0's partition, shuffled with
  that client's own key, as in the run), and
- the shuffled test set (the server's key, as evaluated in the run),

and reports SSIM and PSNR to the originals of the shuffled and of the inverted images, and
the accuracy of an oracle trained on the plain public split on the originals, the shuffled
and the inverted test images. Only public images train the network; partition 0's images are
read to be inverted and to score the result (ground truth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from logging import INFO
from typing import Any

import torch
from flwr.common import log
from torch.nn import functional as F
from tqdm import tqdm

from ...config import CommonSection, ConfigError
from ...data import ImageDataset, client_partition
from ...models import ImageClassifier
from ...poisoning.dpm import ssim_per_image
from ...protections import ProtectionSection, VisualMixerProtection, resolve_protections
from ...protections.visualmixer import simulated_client_key
from ...results import atomic_write_json, package_versions
from ...seeding import derive_seed, seeded
from ...train import batches, evaluate, get_device
from ..base import FinishedRun
from ..oracle import train_oracle
from .network import InversionUNet

EXAMPLES_SHOWN = 8


@dataclass(frozen=True)
class InversionOptions:
    """How the attacker trains and what it inverts.

    Attributes:
        epochs: epochs of the inversion network over the public split (a fresh shuffle each).
        batch_size: its batch size.
        learning_rate: its Adam learning rate.
        images: at most this many leaked client images and test images are inverted and scored.
        oracle_epochs: epochs of the oracle on the plain public split.
        seed: the attack's seed (None: derived from the run seed).
    """

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    images: int = 1000
    oracle_epochs: int = 3
    seed: int | None = None

    def validate(self) -> None:
        """Refuse options that cannot work, naming the option and what is allowed."""
        for name in ("epochs", "batch_size", "images", "oracle_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"--inversion-{name.replace('_', '-')} is {value!r}; it must be a positive integer")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"--inversion-learning-rate is {self.learning_rate!r}; it must be a positive number")


def run_mixer(finished: FinishedRun) -> VisualMixerProtection:
    """The run's VisualMixer; a run without it has nothing to invert (refused, naming the key)."""
    run = finished.run
    text = run[ProtectionSection].protection if ProtectionSection in run else "none"
    protections = resolve_protections(text, run) if ProtectionSection in run else []
    mixer = next((p for p in protections if isinstance(p, VisualMixerProtection)), None)
    if mixer is None:
        raise ConfigError(
            f"run-config key 'protection' is {text!r}; the inversion attack needs a run whose protection "
            "includes 'visualmixer'"
        )
    return mixer


def train_inversion(
    public: ImageDataset,
    mixer: VisualMixerProtection,
    options: InversionOptions,
    *,
    seed: int,
    device: torch.device,
) -> InversionUNet:
    """The inversion network, trained with L1 on (shuffled with a fresh key each epoch, original) public pairs."""
    with seeded(derive_seed(seed, "inversion-init")):
        network = InversionUNet(public.image_shape[0]).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=options.learning_rate)
    order = torch.Generator().manual_seed(derive_seed(seed, "inversion-batches"))
    for epoch in tqdm(range(options.epochs), desc="inversion network", unit="epoch"):
        shuffled = mixer.mix(public.images, derive_seed(seed, "inversion-key", epoch)).images
        pairs = ImageDataset(torch.cat([shuffled, public.images], dim=1), public.labels, public.num_classes)
        network.train()
        for stacked, _ in batches(pairs, options.batch_size, device, order):
            inputs, targets = stacked.split(public.image_shape[0], dim=1)
            optimizer.zero_grad(set_to_none=True)
            F.l1_loss(network(inputs), targets).backward()
            optimizer.step()
    return network.eval()


@torch.no_grad()
def invert(network: InversionUNet, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """The network's restoration of uint8 ``images``, as uint8."""
    restored = [
        network(images[start : start + batch_size].to(device).float() / 255.0).mul(255).round().to(torch.uint8).cpu()
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(restored)


def similarity(candidates: torch.Tensor, originals: torch.Tensor) -> dict[str, float]:
    """Mean SSIM and PSNR (dB) of uint8 ``candidates`` to their ``originals``, pair by pair."""
    first, second = candidates.float() / 255.0, originals.float() / 255.0
    ssim = ssim_per_image(first, second)
    mse = (first - second).pow(2).flatten(1).mean(dim=1).clamp_min(1e-10)
    return {"ssim": float(ssim.mean()), "psnr": float((10 * torch.log10(1.0 / mse)).mean())}


class InversionAttack:
    """``privshare-attack RUN --attack inversion`` (see the module docstring)."""

    def __init__(self, options: InversionOptions) -> None:
        options.validate()
        self.options = options

    def check(self, finished: FinishedRun) -> VisualMixerProtection:
        """Everything that can be refused before any work: a run without VisualMixer."""
        return run_mixer(finished)

    def run(self, finished: FinishedRun) -> dict[str, Any]:
        """Train, invert, score; write ``attacks/inversion.json`` and ``attacks/inversion_examples.png``."""
        mixer = self.check(finished)
        common = finished.run[CommonSection]
        seed = self.options.seed if self.options.seed is not None else derive_seed(common.seed, "inversion")
        device = get_device()
        count = self.options.images
        log(INFO, "inversion attack: training the inversion network on shuffled public images")
        network = train_inversion(finished.public, mixer, self.options, seed=seed, device=device)
        # Ground truth: partition 0's images, shuffled with its own key, as if they leaked.
        leaked = client_partition(common, 0, finished.num_clients).head(count)
        leaked_shuffled = mixer.mix(leaked.images, simulated_client_key(common.seed, 0)).images
        test = finished.test_sets["plain"].head(count)
        test_shuffled = next(iter(mixer.test_sets(test).values()))
        views = {
            "client_data": {"original": leaked.images, "shuffled": leaked_shuffled},
            "test": {"original": test.images, "shuffled": test_shuffled.images},
        }
        for view in views.values():
            view["inverted"] = invert(network, view["shuffled"], device)
        oracle = train_oracle(
            finished.public,
            model_name=finished.model_name,
            epochs=self.options.oracle_epochs,
            seed=derive_seed(seed, "inversion-oracle"),
            device=device,
        )
        report = {
            "attack": "inversion",
            "windows": [mixer.settings.vim_window_min, mixer.settings.vim_window_max],
            "options": vars(self.options) | {"seed": seed},
            "client_data": self._scores(views["client_data"]),
            "test": self._scores(views["test"], oracle, test),
            "versions": package_versions(),
        }
        self._write(finished, report, views["test"])
        return report

    @staticmethod
    def _scores(
        view: dict[str, torch.Tensor], oracle: ImageClassifier | None = None, labelled: ImageDataset | None = None
    ) -> dict[str, dict[str, float]]:
        """Similarity of the shuffled and the inverted images to the originals, and the oracle's accuracy."""
        scores: dict[str, dict[str, float]] = {
            name: similarity(view[name], view["original"]) for name in ("shuffled", "inverted")
        }
        if oracle is not None and labelled is not None:
            for name in ("original", "shuffled", "inverted"):
                images = ImageDataset(view[name], labelled.labels, labelled.num_classes)
                scores.setdefault(name, {})["oracle_accuracy"] = evaluate(oracle, images, device=get_device())[1]
        return scores

    @staticmethod
    def _write(finished: FinishedRun, report: dict[str, Any], view: dict[str, torch.Tensor]) -> None:
        """The example figure (originals, shuffled, inverted test images), then ``inversion.json``, atomically."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from torchvision.utils import make_grid

        rows = [view[name][:EXAMPLES_SHOWN] for name in ("original", "shuffled", "inverted")]
        grid = make_grid(torch.cat(rows), nrow=EXAMPLES_SHOWN, padding=1, pad_value=255)
        figure, ax = plt.subplots(figsize=(EXAMPLES_SHOWN * 0.9, 3.2))
        ax.imshow(grid.permute(1, 2, 0).numpy())
        low, high = report["windows"]
        inverted = report["test"]["inverted"]
        ax.set_title(
            f"original / shuffled (windows {low}-{high}) / inverted: SSIM {inverted['ssim']:.2f}, "
            f"oracle {inverted['oracle_accuracy']:.0%}",
            fontsize=8,
        )
        ax.axis("off")
        figure.tight_layout()
        (finished.folder.path / "attacks").mkdir(exist_ok=True)
        finished.folder.save_figure("attacks/inversion_examples", figure)
        atomic_write_json(finished.folder.path / "attacks" / "inversion.json", report)
