"""The DPM section: bootstrap, straw men, DPM training, self-check and refinement of the DPM app."""

from __future__ import annotations

from dataclasses import dataclass

from ..config.checks import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, Interval, one_of, require
from ..config.section import Section, setting
from ..models import build_model
from .reconstructor import CHECK_RECONSTRUCTORS, ENSEMBLE_RECONSTRUCTORS, RECONSTRUCTORS

BOOTSTRAPS = ("server", "fedavg")


@dataclass(frozen=True)
class DPMSection(Section):
    """Deep Poisoning Modules with feature sharing (Guo et al., arXiv 1912.06895; Eq. 3)."""

    title = "Deep Poisoning Modules"

    dpm_hook: str = setting("pool1", "hook point that splits the model into featurizer and decider")
    dpm_reconstructor: str = setting("px2s2", "the straw man the DPMs are trained against", one_of(RECONSTRUCTORS))
    dpm_ensemble: str = setting(
        "", f"comma-separated further straw men from {ENSEMBLE_RECONSTRUCTORS} ('': the paper's single straw man)"
    )
    dpm_ensemble_instances: int = setting(1, "trained instances of each dpm-ensemble architecture", POSITIVE_INT)
    dpm_lambda: float = setting(1.0, "weight of the SSIM term in the DPM loss (Eq. 3)", NON_NEGATIVE)
    dpm_feature_noise: float = setting(
        0.0, "relative std of the noise on the straw man's input in the SSIM term (0: the paper's loss)", NON_NEGATIVE
    )
    dpm_epochs: int = setting(1, "local DPM training epochs per round", POSITIVE_INT)
    dpm_warmup_epochs: int = setting(0, "further epochs a fresh DPM trains before it shares", NON_NEGATIVE_INT)
    dpm_learning_rate: float = setting(1e-3, "Adam's learning rate for the DPM", POSITIVE)
    dpm_shared_samples: int = setting(1000, "poisoned features each client shares per round (0: all)", NON_NEGATIVE_INT)
    dpm_check_reconstructor: str = setting(
        "", "the reconstructor a client checks its DPM with before it shares ('': no self-check)",
        one_of(("", *CHECK_RECONSTRUCTORS)),
    )  # fmt: skip
    dpm_check_threshold: float = setting(
        0.2, "the largest |SSIM| of the check on the client's own images at which it shares",
        Interval("a number in (0, 1]", 0, 1, low_open=True),
    )  # fmt: skip
    dpm_check_draws: int = setting(3, "DPMs a client draws per round before it withholds its features", POSITIVE_INT)
    dpm_bootstrap: str = setting(
        "server", "train Phi first on the public split (server) or with FedAvg rounds (fedavg)", one_of(BOOTSTRAPS)
    )
    dpm_bootstrap_epochs: int = setting(5, "epochs on the public split, or FedAvg rounds", POSITIVE_INT)
    reconstructor_epochs: int = setting(5, "epochs of reconstructor training on the public split", POSITIVE_INT)
    refine_epochs: int = setting(1, "epochs of decider refinement on the pooled features per round", POSITIVE_INT)

    @property
    def ensemble_names(self) -> list[str]:
        """The names in ``dpm-ensemble``, in order."""
        return [name.strip() for name in self.dpm_ensemble.split(",")] if self.dpm_ensemble.strip() else []

    def validate(self) -> None:
        names = self.ensemble_names
        for name in names:
            require(
                name in ENSEMBLE_RECONSTRUCTORS and names.count(name) == 1,
                "dpm-ensemble",
                self.dpm_ensemble,
                f"'' or distinct comma-separated names from {ENSEMBLE_RECONSTRUCTORS}",
            )
        require(
            self.dpm_ensemble_instances == 1 or bool(names),
            "dpm-ensemble-instances",
            self.dpm_ensemble_instances,
            "a positive integer, and 1 when dpm-ensemble is ''",
        )
        require(
            self.dpm_check_reconstructor not in names,
            "dpm-check-reconstructor",
            self.dpm_check_reconstructor,
            f"a reconstructor the DPMs are not trained against (dpm-ensemble is {self.dpm_ensemble!r})",
        )

    def validate_hook(self, model_name: str) -> None:
        """Check ``dpm-hook`` against the hook points of the model the run uses."""
        points = tuple(build_model(model_name).hook_points)
        require(self.dpm_hook in points, "dpm-hook", self.dpm_hook, f"one of {points} for model {model_name!r}")
