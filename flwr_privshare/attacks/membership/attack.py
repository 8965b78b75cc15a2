"""Membership inference on a finished run's global model: LOSS, shadow models, LiRA and RMIA.

The attacker holds the final global model, the candidates' records and population data from
the same distribution, never a client's partition (:mod:`.candidates` reads partitions only
to label the ground truth). It trains reference models (:mod:`.reference`), reads the
signals of every model on the pool (:mod:`.signals`), scores the candidates
(:mod:`.scores`) and reports ROC metrics (:mod:`.metrics`) per attack into
``attacks/membership.json``, the scores into ``attacks/membership_scores.npz`` and one log-log
ROC plot per query into ``attacks/membership_roc*.png``.

VisualMixer runs are attacked twice: querying with the plain records, and with fresh
VisualMixer shuffles of them made with the attacker's own key (the reference models, which
train on shuffles as the clients did, are queried the same way). DPM runs are queried
through the shared featurizer and the refined head, against reference models of their own
(:mod:`.dpm_reference`). DP runs also get the empirical lower bound on epsilon of every
attack, beside the accountant's epsilon.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from tqdm import tqdm

from ...config import CommonSection
from ...data import ImageDataset
from ...poisoning.section import DPMSection
from ...protections import ProtectionSection, VisualMixerProtection, resolve_protections
from ...results import atomic_target, atomic_write_json, package_versions
from ...seeding import derive_seed
from ...summary import RunSummary
from ...train import describe_device, get_device
from ..base import Attack, FinishedRun, register_attack
from .candidates import MembershipData, MembershipError, membership_data
from .dpm_reference import DPMReferenceTrainer
from .metrics import empirical_epsilon, plot_roc, roc_metrics
from .reference import REFERENCE_TRAININGS, ReferenceTrainer, reference_epochs, reference_memberships
from .scores import lira_scores, loss_scores, rmia_scores, shadow_scores, tune_rmia_a
from .signals import ModelSignals, flips_for, model_signals

#: The attacks ``--attack`` accepts.
ATTACKS = ("loss", "shadow", "lira", "rmia")
#: Attacks that need reference models.
NEEDS_REFERENCES = ("shadow", "lira", "rmia")
MAX_REFERENCE_MODELS = 256
RESULT_FORMAT = 1
#: Where a run folder keeps its trained reference models.
CACHE_FOLDER = "attacks/reference-models"


@dataclass(frozen=True)
class MembershipOptions:
    """What to attack with.

    Attributes:
        attacks: names from :data:`ATTACKS`.
        reference_models: reference (shadow) models to train.
        members: member candidates.
        non_members: non-member candidates.
        population: RMIA's population samples.
        extra_pool: further pool rows for the reference models (None: the rest of the test split).
        seed: the attack's seed (None: derived from the run seed).
        reference_training: how reference models train, one of :data:`REFERENCE_TRAININGS`.
    """

    attacks: tuple[str, ...] = ATTACKS
    reference_models: int = 8
    members: int = 1000
    non_members: int = 1000
    population: int = 1000
    extra_pool: int | None = None
    seed: int | None = None
    reference_training: str = "centralised"

    def validate(self) -> None:
        """Refuse options that cannot work, naming the option and what is allowed."""
        unknown = [name for name in self.attacks if name not in ATTACKS]
        if unknown or not self.attacks:
            raise MembershipError(f"--attack must name some of {', '.join(ATTACKS)}, got {','.join(self.attacks)!r}")
        if any(name in NEEDS_REFERENCES for name in self.attacks) and not (
            1 <= self.reference_models <= MAX_REFERENCE_MODELS
        ):
            raise MembershipError(
                f"--reference-models must be in [1, {MAX_REFERENCE_MODELS}] for shadow, lira and rmia, "
                f"got {self.reference_models}"
            )
        if self.reference_training not in REFERENCE_TRAININGS:
            raise MembershipError(
                f"--reference-training must be one of {', '.join(REFERENCE_TRAININGS)}, got {self.reference_training!r}"
            )
        if "lira" in self.attacks and self.reference_models < 2:
            raise MembershipError(
                f"--reference-models must be at least 2 for lira (online LiRA needs IN and OUT models "
                f"of every candidate), got {self.reference_models}"
            )

    @property
    def uses_references(self) -> bool:
        return any(name in NEEDS_REFERENCES for name in self.attacks)


@dataclass
class QuerySignals:
    """Every model's signals on the pool and the population, for one query."""

    target: ModelSignals
    target_population: ModelSignals
    references: list[ModelSignals]
    references_population: list[ModelSignals]


def score_attacks(
    names: tuple[str, ...], signals: QuerySignals, memberships: np.ndarray, num_candidates: int, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """``{attack variant: scores of the candidates}`` for the attacks ``names``, and each variant's parameters."""
    candidates = np.arange(num_candidates)
    target = signals.target.subset(candidates)
    scores: dict[str, np.ndarray] = {}
    parameters: dict[str, dict[str, float]] = {}
    if "loss" in names:
        scores["loss"] = loss_scores(target.loss)
    if not signals.references:
        return scores, parameters
    reference_in = memberships[:, :num_candidates]
    if "shadow" in names:
        features = np.stack([reference.features for reference in signals.references])
        scores["shadow"] = shadow_scores(features, memberships, target.features, seed=seed)
    if "lira" in names:
        confidence = np.stack([reference.confidence[candidates] for reference in signals.references])
        for online in (True, False):
            for fixed in (False, True):
                name = f"lira-{'online' if online else 'offline'}{'-fixed-variance' if fixed else ''}"
                scores[name] = lira_scores(
                    target.confidence, confidence, reference_in, online=online, fixed_variance=fixed
                )
    if "rmia" in names:
        probability = np.stack([reference.probability[candidates].mean(axis=1) for reference in signals.references])
        population = np.stack([reference.probability.mean(axis=1) for reference in signals.references_population])
        a = tune_rmia_a(probability, reference_in, population)
        scores["rmia"] = rmia_scores(
            target.probability.mean(axis=1),
            probability,
            reference_in,
            signals.target_population.probability.mean(axis=1),
            population,
            a=a,
        )
        parameters["rmia"] = {"a": a}
    return scores, parameters


def read_participation(folder: Path) -> dict[int, list[int]] | None:
    """``{round: partitions whose clients trained}`` of the run's ``participation.json`` (None: not recorded)."""
    path = folder / "participation.json"
    if not path.is_file():
        return None
    return {int(server_round): partitions for server_round, partitions in json.loads(path.read_text()).items()}


def check_dpm_run(dpm: DPMSection, options: MembershipOptions, summary: RunSummary | None, *, recorded: bool) -> None:
    """Refuse DPM runs whose ground truth or reference models cannot be recomputed.

    ``recorded``: the run recorded which clients' replies it received (withheld ones are then
    known; a rejected reply was received but not pooled, so it still hides which rows were used).
    """
    if dpm.dpm_bootstrap != "server":
        raise MembershipError(
            f"dpm-bootstrap is {dpm.dpm_bootstrap!r}; membership inference on DPM runs needs dpm-bootstrap = "
            "'server' (with 'fedavg' every partition row also trained phi1, which reference models do not reproduce)"
        )
    if options.reference_training != "centralised":
        raise MembershipError(
            f"--reference-training must be centralised for DPM runs, got {options.reference_training!r}"
        )
    if summary is not None:
        unknown = summary.details.get("rejected_replies", 0)
        if not recorded:
            unknown += summary.details.get("withheld_replies", 0)
        if unknown:
            raise MembershipError(
                f"{unknown} feature-sharing replies were withheld or rejected in this run, so which rows were "
                "shared (the members) cannot be recomputed"
            )


@register_attack
class MembershipInference(Attack):
    """Membership inference with the options of :class:`MembershipOptions` (``privshare-attack``)."""

    name = "membership"

    def __init__(self, options: MembershipOptions | None = None) -> None:
        self.options = options or MembershipOptions()

    def check(self, finished: FinishedRun, summary: RunSummary | None = None) -> MembershipData:
        """Every check that needs the run (protection, candidate counts); no training yet.

        ``summary`` (the run's ``summary.json``) lets a DPM run be refused when some client
        withheld or had rejected its features: which rows were shared is then unknown.
        """
        self.options.validate()
        run = finished.run
        participation = read_participation(finished.folder.path)
        dpm = None
        if DPMSection in run:
            dpm = run[DPMSection]
            check_dpm_run(dpm, self.options, summary, recorded=participation is not None)
        return membership_data(
            run[CommonSection],
            finished.num_clients,
            members=self.options.members,
            non_members=self.options.non_members,
            population=self.options.population,
            extra=self.options.extra_pool,
            seed=self.seed(finished),
            dpm=dpm,
            participation=participation,
        )

    def seed(self, finished: FinishedRun) -> int:
        if self.options.seed is not None:
            return self.options.seed
        return derive_seed(finished.run[CommonSection].seed, "membership")

    def run(
        self, finished: FinishedRun, summary: RunSummary | None = None, data: MembershipData | None = None
    ) -> dict[str, Any]:
        """Attack ``finished``; write the results into its ``attacks/`` folder and return the report.

        ``summary`` (the run's ``summary.json``) adds the DP audit when the run states a DP
        guarantee; ``data`` is what :meth:`check` returned for this run (checked again when None).
        """
        data = data if data is not None else self.check(finished, summary)
        seed = self.seed(finished)
        device = get_device()
        flip = flips_for(data.pool.image_shape)
        timings: dict[str, float] = {}
        clock = time.monotonic()
        views = {name: (view(data.pool), view(data.population)) for name, view in self.queries(finished, seed).items()}
        collected = {
            name: QuerySignals(
                model_signals(finished.model, pool, device=device, flip=flip),
                model_signals(finished.model, population, device=device, flip=flip),
                [],
                [],
            )
            for name, (pool, population) in views.items()
        }
        timings["target_signals_s"], clock = time.monotonic() - clock, time.monotonic()
        count = self.options.reference_models if self.options.uses_references else 0
        memberships = (
            reference_memberships(len(data.pool), count, derive_seed(seed, "memberships"))
            if count
            else np.zeros((0, len(data.pool)), dtype=bool)
        )
        cache = finished.folder.path / CACHE_FOLDER
        trainer_class = DPMReferenceTrainer if DPMSection in finished.run else ReferenceTrainer
        trainer = trainer_class(
            finished.run,
            finished.model_name,
            seed,
            device,
            cache,
            training=self.options.reference_training,
            num_clients=finished.num_clients,
            public=finished.public,
        )
        for index in tqdm(range(len(memberships)), desc="reference models", unit="model", disable=not len(memberships)):
            reference = trainer.model(data.pool, memberships[index], index, data.pool_digest)
            for name, (pool, population) in views.items():
                collected[name].references.append(model_signals(reference, pool, device=device, flip=flip))
                collected[name].references_population.append(
                    model_signals(reference, population, device=device, flip=flip)
                )
        timings["reference_models_s"], clock = time.monotonic() - clock, time.monotonic()
        is_member = data.is_member
        delta = summary.delta if summary is not None else None
        results: dict[str, Any] = {}
        all_scores: dict[str, np.ndarray] = {"is_member": is_member}
        figures: dict[str, Any] = {}
        for name, signals in collected.items():
            scores, parameters = score_attacks(self.options.attacks, signals, memberships, data.num_candidates, seed)
            results[name] = {}
            for attack, values in scores.items():
                metrics: dict[str, Any] = {**roc_metrics(is_member, values), **parameters.get(attack, {})}
                if delta is not None:
                    metrics["empirical_epsilon_lower_bound"] = empirical_epsilon(is_member, values, delta)
                results[name][attack] = metrics
                all_scores[f"{name}__{attack}"] = values
            stem = "membership_roc" if name == "plain" else f"membership_roc_{name}"
            curves = {attack: (is_member, values) for attack, values in scores.items()}
            figures[stem] = plot_roc(curves, f"{finished.folder.path.name}: {name} queries")
        timings["scoring_s"] = time.monotonic() - clock
        report: dict[str, Any] = {
            "format": RESULT_FORMAT,
            "run": finished.folder.path.name,
            "seed": seed,
            "options": {**asdict(self.options), "attacks": list(self.options.attacks)},
            "candidates": {
                "members": data.num_members,
                "non_members": data.num_non_members,
                "pool": len(data.pool),
                "population": len(data.population),
            },
            "reference_models": {
                "count": len(memberships),
                "kind": f"{self.options.reference_training} stand-in",
                "epochs": reference_epochs(finished.run),
                **({"clients": finished.num_clients} if self.options.reference_training == "federated" else {}),
            },
            "queries": results,
            "device": describe_device(device),
            "timings_s": {key: round(value, 2) for key, value in timings.items()},
            "versions": package_versions(),
        }
        if summary is not None and summary.dp is not None:
            report["dp"] = {"accountant_epsilon": summary.epsilon, "delta": summary.delta}
        self.write(finished, report, all_scores, figures)
        return report

    def queries(self, finished: FinishedRun, seed: int) -> dict[str, Callable[[ImageDataset], ImageDataset]]:
        """``{query name: how a record is shown to the models}``: plain, and shuffled for VisualMixer runs."""
        queries: dict[str, Callable[[ImageDataset], ImageDataset]] = {"plain": lambda data: data}
        run = finished.run
        if ProtectionSection not in run:
            return queries
        mixer = next(
            (
                p
                for p in resolve_protections(run[ProtectionSection].protection, run)
                if isinstance(p, VisualMixerProtection)
            ),
            None,
        )
        if mixer is not None:
            key = derive_seed(seed, "attacker-visualmixer")

            def shuffled(data: ImageDataset) -> ImageDataset:
                return ImageDataset(mixer.mix(data.images, key).images, data.labels, data.num_classes)

            queries["shuffled"] = shuffled
        return queries

    def write(
        self, finished: FinishedRun, report: dict[str, Any], scores: dict[str, np.ndarray], figures: dict[str, Any]
    ) -> None:
        """The ROC plots, ``membership_scores.npz`` and, last, ``membership.json`` in ``attacks/``, each atomically."""
        folder = finished.folder.path / "attacks"
        for stem, figure in figures.items():
            finished.folder.save_figure(f"attacks/{stem}", figure)
        buffer = io.BytesIO()
        np.savez(buffer, **cast(dict[str, Any], scores))
        with atomic_target(folder / "membership_scores.npz") as temporary:
            temporary.write_bytes(buffer.getvalue())
        atomic_write_json(folder / "membership.json", report)
