"""The GAN attack in the attack registry: the auditor's preparation before the rounds and the report after.

The attack itself happens during the rounds, on the attacker's node (:mod:`.insider`); the
auditor measures it after every round (:mod:`.audit`). This module builds the audit before
any round (ground truth and oracles) and, after the run, writes ``attacks/gan.json`` (every
round's numbers), ``attacks/gan_success.png`` (oracle share against round) and the
``privacy.gan`` section of ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from logging import INFO
from typing import Any

import torch
from flwr.common import log

from ...config import CommonSection, RunConfig
from ...data import ImageDataset, client_partition
from ...models import ImageClassifier
from ...protections import Protection
from ...protections.visualmixer import VisualMixerProtection
from ...seeding import derive_seed
from ...train import get_device
from ..base import Attack, FinishedRun, register_attack
from ..oracle import train_oracle
from .audit import GanAudit
from .section import GanSection

AUDIT_ARTIFACT = "gan-audit"
GROUND_TRUTH_IMAGES = 1000  # victim images the best-SSIM search compares with (a seeded subset)


def victim_images(run: RunConfig, test: ImageDataset, num_partitions: int) -> torch.Tensor:
    """The plain victim-class images the honest clients hold (at most ``GROUND_TRUTH_IMAGES``, seeded).

    The auditor reads the clients' partitions here, and only here, for the ground truth. In
    the control run no client holds the class, so the test set's images of it stand in.
    """
    gan, common = run[GanSection], run[CommonSection]
    victim = gan.gan_victim_class
    holders = [] if gan.gan_control else [p for p in range(num_partitions) if p != gan.gan_attacker]
    parts = [client_partition(common, p, num_partitions) for p in holders]
    images = torch.cat([part.images[part.labels == victim] for part in parts]) if parts else test.images[:0]
    if len(images) == 0:
        images = test.images[test.labels == victim]
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(derive_seed(common.seed, "gan-truth")))
    return images[order[:GROUND_TRUTH_IMAGES]]


def prepare_gan_audit(
    run: RunConfig,
    protections: Sequence[Protection],
    public: ImageDataset,
    test: ImageDataset,
    model_name: str,
    num_partitions: int,
) -> GanAudit:
    """The auditor's instrument: ground truth and the oracles (one on plain public images, and for
    VisualMixer runs one on public images shuffled with the run's windows under the auditor's key)."""
    gan, seed = run[GanSection], run[CommonSection].seed
    device = get_device()
    log(INFO, "GAN attack audit: training the oracles on the public split")

    def oracle(images: ImageDataset, purpose: str) -> ImageClassifier:
        return train_oracle(
            images, model_name=model_name, epochs=gan.gan_oracle_epochs, seed=derive_seed(seed, purpose), device=device
        )

    oracles = {"oracle": oracle(public, "gan-oracle")}
    mixer = next((p for p in protections if isinstance(p, VisualMixerProtection)), None)
    if mixer is not None:
        shuffled = mixer.mix(public.images, derive_seed(seed, "gan-oracle-shuffle")).images
        shuffled_public = ImageDataset(shuffled, public.labels, public.num_classes)
        oracles["shuffled_oracle"] = oracle(shuffled_public, "gan-shuffled-oracle")
    return GanAudit(gan, victim_images(run, test, num_partitions), oracles, derive_seed(seed, "gan-audit") % 2**31)


@register_attack
class GanAttack(Attack):
    """Reports the insider's GAN attack (Hitaj et al., CCS 2017) of a run whose ``gan-attacker`` is set."""

    name = "gan"
    section = GanSection

    def applies(self, finished: FinishedRun) -> bool:
        return GanSection in finished.run and finished.run[GanSection].active and AUDIT_ARTIFACT in finished.artifacts

    def run(self, finished: FinishedRun) -> dict[str, Any]:
        audit: GanAudit = finished.artifacts[AUDIT_ARTIFACT]
        summary = audit.summary()
        (finished.folder.path / "attacks").mkdir(exist_ok=True)
        finished.folder.write_json("attacks/gan.json", {"summary": summary, "rounds": audit.history})
        finished.folder.save_figure("attacks/gan_success", success_plot(audit.history))
        return summary


def success_plot(history: list[dict[str, Any]]) -> Any:
    """Oracle share (and shuffled-oracle share, pairwise SSIM) of ``G(z)`` against round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5, 3.5))
    for name in ("oracle_share", "shuffled_oracle_share", "pairwise_ssim"):
        points = [(entry["round"], entry[name]) for entry in history if name in entry]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("share of G(z) / SSIM")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    return figure
