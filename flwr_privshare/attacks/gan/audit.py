"""The auditor's measurement of the GAN attack, every round: did the generator learn the victim class?

No public implementation of Hitaj et al.'s attack reports a number; they show pictures. The
auditor here measures ``G(z)`` objectively after every round:

- ``oracle_share``: the share of ``G(z)`` that an independent oracle, trained on the plain
  public split and never on client data, classifies as the victim class;
- ``shuffled_oracle_share`` (VisualMixer runs): the same with an oracle trained on public
  images shuffled with the run's window settings (the attacker knows the algorithm, so a
  generator that learned shuffled victims is judged by an oracle that reads shuffled images);
- ``best_ssim``: the mean over ``G(z)`` of the best SSIM to any of the victims' training
  images of that class (the plain images the other clients hold; ground truth, read only here);
- ``pairwise_ssim``: the mean SSIM between two different samples of ``G(z)``: the diversity
  check (a generator collapsed onto one image can fool the oracle once; its samples are then
  nearly identical and this is near 1).

Samples come from the attacker's node through a ``query`` message (see :mod:`.insider`); a
round in which the attacker has no generator yet is recorded without numbers. Every round
also leaves a PNG of ``G(z)`` beside real images of the victim class in ``attacks/gan/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from ...models import ImageClassifier
from ...results import RunFolder
from .insider import AUDIT_CONFIG_KEY, SAMPLES_KEY
from .section import GanSection

REAL_IMAGES_SHOWN = 8
SSIM_WINDOW = 11  # the Gaussian window's size, as everywhere in the project (pytorch-msssim's default)
SSIM_SIGMA, SSIM_K1, SSIM_K2 = 1.5, 0.01, 0.03  # SSIM's constants (Wang et al. 2004; pytorch-msssim's defaults)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """The normalised 2-D Gaussian window of SSIM (Wang et al. 2004), flattened: ``(size * size,)``."""
    coords = torch.arange(size, dtype=torch.float32) - size // 2
    line = torch.exp(-(coords**2) / (2 * sigma**2))
    line /= line.sum()
    return torch.outer(line, line).flatten()


def ssim_matrix(first: torch.Tensor, second: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """SSIM of every image of ``first`` (N, C, H, W in [0, 1]) with every image of ``second`` (M, ...): (N, M).

    The SSIM of pytorch-msssim (Gaussian window, valid positions, averaged over positions and
    channels), computed for all pairs at once: the local means and variances belong to one
    image each and are computed once per image; only the local covariance needs the pair, and
    it is one batched matrix product of the two images' weighted window patches. Scoring the
    pairs one by one with pytorch-msssim filters every image again for every pair (N*M
    convolutions of five maps), several times slower for 64 x 1,000 MNIST images.
    """
    window = gaussian_window()
    c1, c2 = (SSIM_K1 * 1.0) ** 2, (SSIM_K2 * 1.0) ** 2

    def moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Weighted patches ``(C*L, k, N)``, local means and variances ``(N, C, L)``."""
        count, channels = images.shape[:2]
        patches = F.unfold(images.float(), SSIM_WINDOW).view(count, channels, len(window), -1)
        mean = torch.einsum("nckl,k->ncl", patches, window)
        variance = torch.einsum("nckl,k->ncl", patches**2, window) - mean**2
        weighted = (patches * window[:, None]).permute(1, 3, 2, 0).reshape(-1, len(window), count)
        return weighted, mean, variance

    left, left_mean, left_variance = moments(first)
    left = left.transpose(1, 2)  # (C*L, N, k)
    rows = []
    for start in range(0, len(second), chunk):
        images = second[start : start + chunk]
        right_raw = F.unfold(images.float(), SSIM_WINDOW).view(len(images), images.shape[1], len(window), -1)
        right = right_raw.permute(1, 3, 2, 0).reshape(-1, len(window), len(images))  # (C*L, k, M)
        right_mean = torch.einsum("nckl,k->ncl", right_raw, window)
        right_variance = torch.einsum("nckl,k->ncl", right_raw**2, window) - right_mean**2
        second_moment = torch.bmm(left, right)  # (C*L, N, M): local E[xy]
        channels = first.shape[1]
        second_moment = second_moment.view(channels, -1, len(first), len(images)).permute(2, 3, 0, 1)
        mean_x, mean_y = left_mean[:, None], right_mean[None]
        covariance = second_moment - mean_x * mean_y
        luminance = (2 * mean_x * mean_y + c1) / (mean_x**2 + mean_y**2 + c1)
        structure = (2 * covariance + c2) / (left_variance[:, None] + right_variance[None] + c2)
        rows.append((luminance * structure).mean(dim=(2, 3)))
    return torch.cat(rows, dim=1)


def generation_metrics(
    samples: torch.Tensor,
    victim_images: torch.Tensor,
    victim_class: int,
    oracles: dict[str, ImageClassifier],
) -> dict[str, float]:
    """The audit's numbers for one batch of ``G(z)`` (uint8 ``samples``); see the module docstring."""
    images = samples.float() / 255.0
    metrics: dict[str, float] = {}
    with torch.no_grad():
        for name, oracle in oracles.items():
            predictions = oracle.cpu().eval()(images).argmax(dim=1)
            metrics[f"{name}_share"] = float((predictions == victim_class).float().mean())
    metrics["best_ssim"] = float(ssim_matrix(images, victim_images.float() / 255.0).max(dim=1).values.mean())
    pairwise = ssim_matrix(images, images)
    off_diagonal = ~torch.eye(len(images), dtype=torch.bool)
    metrics["pairwise_ssim"] = float(pairwise[off_diagonal].mean())
    return metrics


@dataclass
class GanAudit:
    """The per-round measurement (a round audit of the experiment skeleton).

    Args:
        gan: the run's GAN section.
        victim_images: the plain victim-class images the other clients hold (uint8), the
            ground truth of ``best_ssim``.
        oracles: ``{"oracle": plain oracle}`` and, for VisualMixer runs, ``"shuffled_oracle"``.
        seed: seeds the noise of the samples the auditor asks for.
    """

    gan: GanSection
    victim_images: torch.Tensor
    oracles: dict[str, ImageClassifier]
    seed: int
    history: list[dict[str, Any]] = field(default_factory=list)
    attacker_node: int | None = None

    def __call__(self, server_round: int, grid: Grid, folder: RunFolder) -> dict[str, float]:
        """Ask the attacker's node for ``G(z)``, measure it and draw it; return the round's metrics."""
        if server_round < self.gan.gan_start_round:
            return {}
        samples = self._samples(server_round, grid)
        if samples is None:
            self.history.append({"round": server_round})
            return {}
        metrics = generation_metrics(samples, self.victim_images, self.gan.gan_victim_class, self.oracles)
        self.history.append({"round": server_round, **metrics})
        self._draw(server_round, samples, metrics, folder)
        return {f"gan_{name}": value for name, value in metrics.items()}

    def _samples(self, server_round: int, grid: Grid) -> torch.Tensor | None:
        """``gan-audit-samples`` images of ``G(z)`` from the attacker's node (found once by asking every node)."""
        nodes = [self.attacker_node] if self.attacker_node is not None else list(grid.get_node_ids())
        config = ConfigRecord({"samples": self.gan.gan_audit_samples, "seed": self.seed + server_round})
        queries = [
            Message(
                content=RecordDict({AUDIT_CONFIG_KEY: config}),
                dst_node_id=node,
                message_type=MessageType.QUERY,
                group_id=f"gan-audit-{server_round}",
            )
            for node in nodes
        ]
        for reply in grid.send_and_receive(queries):
            if not reply.has_error() and SAMPLES_KEY in reply.content.array_records:
                self.attacker_node = reply.metadata.src_node_id
                images = reply.content.array_records[SAMPLES_KEY]["images"].numpy()
                return torch.from_numpy(images.copy())
        return None

    def _draw(self, server_round: int, samples: torch.Tensor, metrics: dict[str, float], folder: RunFolder) -> None:
        """``attacks/gan/round-NNN.png``: ``G(z)`` beside real images of the victim class."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from torchvision.utils import make_grid

        shown = samples[:32]
        panels = {
            f"G(z), round {server_round} (oracle: {metrics['oracle_share']:.0%} victim class)": make_grid(
                shown, nrow=8, padding=1, pad_value=255
            ),
            "real images of the victim class": make_grid(
                self.victim_images[:REAL_IMAGES_SHOWN], nrow=4, padding=1, pad_value=255
            ),
        }
        figure, axes = plt.subplots(1, 2, figsize=(9, 3.5), gridspec_kw={"width_ratios": [2, 1]})
        for ax, (title, grid_image) in zip(axes, panels.items(), strict=True):
            ax.imshow(grid_image.permute(1, 2, 0).numpy(), cmap="gray" if grid_image.shape[0] == 1 else None)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        figure.tight_layout()
        (folder.path / "attacks" / "gan").mkdir(parents=True, exist_ok=True)
        folder.save_figure(f"attacks/gan/round-{server_round:03d}", figure)

    def summary(self) -> dict[str, Any]:
        """The attack's section of ``summary.json``: each metric averaged over the last five measured rounds."""
        measured = [entry for entry in self.history if len(entry) > 1]
        last = measured[-5:]
        averaged = {
            f"last5_{name}": sum(cast(float, entry[name]) for entry in last) / len(last)
            for name in (last[0] if last else {})
            if name != "round"
        }
        return {
            "attacker": self.gan.gan_attacker,
            "victim_class": self.gan.gan_victim_class,
            "control": self.gan.gan_control,
            "rounds_measured": len(measured),
            **averaged,
        }
