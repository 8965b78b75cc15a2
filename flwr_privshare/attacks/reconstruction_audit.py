"""The reconstruction audit of a DPM run: how much do reconstructors recover from the shared features?

The clients' DPMs never leave them, so the auditor trains a stand-in DPM with the clients' own
procedure (:func:`~flwr_privshare.poisoning.procedures.train_stand_in_dpm`: same settings, as
many epochs as a client that took part in every round, the same self-check) on partition 0's
data, and measures with it on the test set: the decider's accuracy on original vs poisoned
features (and on the features of the same P trained with lambda = 0, the control that isolates
what poisoning costs), L1 / SSIM of every reconstructor from original vs poisoned features,
sample reconstructions, and the secondary attack of someone who holds the DPM and trains a
reconstructor on ``(P(phi1 z), z)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from logging import INFO
from typing import Any

import torch
from flwr.common import log
from torch import nn

from ..config import CommonSection, RunConfig
from ..data import ImageDataset, client_partition
from ..poisoning import Reconstructor, SelfCheck, SplitModel, evaluate_poisoning, feature_shape, reference_ssim
from ..poisoning.plots import audit_bars, reconstruction_grid
from ..poisoning.procedures import train_stand_in_dpm
from ..poisoning.reconstructor import RECONSTRUCTORS, train_reconstructor
from ..poisoning.section import DPMSection
from ..poisoning.self_check import CheckedDPM
from ..seeding import derive_seed, seeded
from ..train import get_device
from .base import Attack, FinishedRun, register_attack

SAMPLE_IMAGES = 8
DESCRIPTION = "stand-in DPM trained with the clients' procedure on partition 0, measured on the test set"


def audit(
    run: RunConfig,
    split: SplitModel,
    reconstructors: dict[str, Reconstructor],
    stand_in_data: ImageDataset,
    public: ImageDataset,
    test: ImageDataset,
    self_check: SelfCheck | None = None,
    ensemble: Sequence[Reconstructor] = (),
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The stand-in DPM's report on the test set, and the images of the sample figure.

    The stand-in trains against the clients' straw men (``ensemble`` included) and passes
    their ``self_check`` as a client's DPM must before it shares. With more than one round, a
    second stand-in trained for one round only (``first_round/*``) measures the DPM a client
    shares its round-1 features with.
    """
    device = get_device()
    shape = feature_shape(split.featurizer, test.image_shape)
    straw_man = reconstructors[run[DPMSection].dpm_reconstructor]

    def clients_procedure(rounds: int | None = None) -> CheckedDPM:
        """A stand-in trained with the clients' loss, straw men and self-check."""
        return train_stand_in_dpm(
            run,
            split,
            straw_man,
            stand_in_data,
            ssim_weight=run[DPMSection].dpm_lambda,
            ensemble=ensemble,
            self_check=self_check,
            rounds=rounds,
        )

    stand_in = clients_procedure()
    dpm = stand_in.dpm
    # Control for the equivalence check: the same P trained on the same data with lambda = 0
    # separates what poisoning costs from what fine-tuning P on the client's data gains.
    control = train_stand_in_dpm(run, split, straw_man, stand_in_data, ssim_weight=0.0).dpm
    # Secondary attack: whoever holds P trains a reconstructor on (P(phi1 z), z) for public z.
    with seeded(derive_seed(run[CommonSection].seed, "secondary-attack-init")):
        with_dpm = Reconstructor(run[DPMSection].dpm_reconstructor, shape, test.image_shape)
    train_reconstructor(
        with_dpm,
        nn.Sequential(split.featurizer, dpm),
        public,
        epochs=run[DPMSection].reconstructor_epochs,
        device=device,
        generator=torch.Generator().manual_seed(derive_seed(run[CommonSection].seed, "secondary-attack")),
    )
    report = evaluate_poisoning(split, dpm, reconstructors, test, device=device)
    secondary = evaluate_poisoning(split, dpm, {"with-dpm": with_dpm}, test, device=device)
    report["secondary/l1_with_dpm"] = secondary["with-dpm/l1_poisoned"]
    report["secondary/ssim_with_dpm"] = secondary["with-dpm/ssim_poisoned"]
    report["secondary/ssim_without_dpm"] = report[f"{run[DPMSection].dpm_reconstructor}/ssim_poisoned"]
    report["stand_in_training_ssim"] = stand_in.training.ssim
    report["stand_in_draws"] = stand_in.draws
    if self_check is not None:
        report["stand_in_check_ssim"] = stand_in.check_ssim
        report["stand_in_check_passed"] = float(stand_in.passed)
    report["accuracy_lambda_zero"] = evaluate_poisoning(split, control, {}, test, device=device)["accuracy_poisoned"]
    if run[CommonSection].num_server_rounds > 1:
        # What a client shares in round 1 comes from a DPM trained for one round only.
        first = clients_procedure(rounds=1)
        early = evaluate_poisoning(split, first.dpm, reconstructors, test, device=device)
        report["first_round/accuracy_poisoned"] = early["accuracy_poisoned"]
        report |= {f"first_round/{name}/ssim_poisoned": early[f"{name}/ssim_poisoned"] for name in reconstructors}
        report["first_round/draws"] = first.draws
        if self_check is not None:
            report["first_round/check_ssim"] = first.check_ssim
            report["first_round/check_passed"] = float(first.passed)
    report |= {f"reference/ssim_{key}": value for key, value in reference_ssim(test, device=device).items()}

    unseen = [name for name in reconstructors if name != run[DPMSection].dpm_reconstructor]
    worst_unseen = max(unseen, key=lambda name: abs(report[f"{name}/ssim_poisoned"]))
    with torch.no_grad():
        for module in (*split, dpm, *reconstructors.values(), with_dpm):
            module.to(device).eval()
        images = test.images[:SAMPLE_IMAGES].to(device).float() / 255
        features = split.featurizer(images)
        poisoned = dpm(features)
        samples = {
            "original": images,
            f"{straw_man.name}, original features": straw_man(features),
            f"{straw_man.name}, poisoned features": straw_man(poisoned),
            f"{worst_unseen} (worst unseen), poisoned": reconstructors[worst_unseen](poisoned),
            "secondary attack (with P)": with_dpm(poisoned),
        }
    return report, samples


@register_attack
class ReconstructionAudit(Attack):
    """The DPM app's audit; it needs the app's artifacts (split model, reconstructors, self-check, ensemble)."""

    name = "dpm-audit"
    section = DPMSection

    def applies(self, finished: FinishedRun) -> bool:
        return "reconstructors" in finished.artifacts

    def run(self, finished: FinishedRun) -> dict[str, Any]:
        artifacts = finished.artifacts
        stand_in = client_partition(finished.run[CommonSection], 0, finished.num_clients)
        log(INFO, "audit: training the stand-in DPM and the secondary attack")
        report, samples = audit(
            finished.run,
            artifacts["split"],
            artifacts["reconstructors"],
            stand_in,
            finished.public,
            finished.test_sets["plain"],
            artifacts["self_check"],
            artifacts["ensemble"],
        )
        log(INFO, "audit: %s", {key: round(value, 4) for key, value in report.items()})
        finished.folder.save_figure("reconstructions", reconstruction_grid(samples))
        finished.folder.save_figure("audit", audit_bars(report, list(RECONSTRUCTORS)))
        return {"audit": DESCRIPTION, **report}
