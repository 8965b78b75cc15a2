"""One experiment skeleton for every app: validate → check the machine → data → strategy → record rounds → post-run
attacks → summary.

An app is an :class:`Experiment` subclass instance built with the config sections it
declares; ``server_app()`` and ``client_app()`` give the Flower apps, so a simulation's
``server_app.py`` and ``client_app.py`` are two lines each. Subclasses fill in
:meth:`Experiment.prepare` (data and model, all checks before any work) and
:meth:`Experiment.strategy` (the rounds' strategy), and may add summary details.

The skeleton survives faults: the machine is checked before any work
(:mod:`~flwr_privshare.environment`), every round is bounded by ``round-timeout`` and recorded
with its failures, and a checkpoint after every round lets ``resume = true`` continue a run that
was killed, with the numbers of an uninterrupted run (:mod:`~flwr_privshare.checkpoint`).
"""

from __future__ import annotations

import json
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from logging import INFO
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, MetricRecordValues
from flwr.clientapp import ClientApp
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result, Strategy

from ..attacks import FinishedRun, build_attack
from ..attacks.gan import GanSection, answer_audit
from ..checkpoint import RoundCheckpoint
from ..config import AppSchema, CommonSection, ConfigError, RunConfig, RunConfigValue, Section
from ..data import ImageDataset
from ..environment import check_data_dir, check_free_disk, check_output_dir, expected_run_bytes
from ..models import ImageClassifier, build_model
from ..protections import Protection, method_name, registered_protections
from ..results import RunFolder, atomic_torch_save, package_versions
from ..seeding import derive_seed
from ..summary import RunSummary
from ..train import evaluate, get_device
from .node_order import PartitionOrderedGrid, answer_partition_query, is_partition_query

Plots = dict[str, tuple[str, list[str]]]
#: Written into a run folder that was resumed: after which round, when, and with which package versions.
RESUMES_FILE = "resumes.json"
#: A measurement after every round besides central evaluation (the GAN attack's audit): it gets the
#: round, the grid (to query nodes) and the run folder (for figures) and returns metrics for ``rounds.csv``.
RoundAudit = Callable[[int, Grid, RunFolder], Mapping[str, float]]


@dataclass
class Plan:
    """What :meth:`Experiment.prepare` makes ready before any work: data, model and protections.

    Attributes:
        label: the method label of the default run name and of ``summary.json``'s ``protection``.
        model_name: the architecture.
        model: the initial global model (built from the run seed).
        test_sets: named test sets, the primary first; ``"plain"`` is always present.
        public: the server's public split.
        protections: the run's protections, in order.
        artifacts: what the app builds on the way that its post-run attacks need, by name.
        round_audits: measurements after every round, whose metrics join central evaluation's.
        broadcast_replies: the clients' replies to each protection's broadcast before round 1.
    """

    label: str
    model_name: str
    model: ImageClassifier
    test_sets: dict[str, ImageDataset]
    public: ImageDataset
    protections: list[Protection] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)
    round_audits: list[RoundAudit] = field(default_factory=list)
    broadcast_replies: dict[str, list[Message]] = field(default_factory=dict)


def central_evaluation(
    model_name: str, num_outputs: int, test_sets: dict[str, ImageDataset]
) -> Callable[[int, ArrayRecord], MetricRecord]:
    """An ``evaluate_fn`` for :meth:`Strategy.start`: ``accuracy`` and ``loss`` on the first (primary) test set
    and ``<name>_accuracy`` on every set (``num_outputs``: the model's outputs, which may exceed the classes)."""
    device = get_device()
    model = build_model(model_name, num_outputs)
    primary = next(iter(test_sets))

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        metrics: dict[str, MetricRecordValues] = {}
        for name, data in test_sets.items():
            loss, accuracy = evaluate(model, data, device=device)
            metrics[f"{name}_accuracy"] = accuracy
            if name == primary:
                metrics["accuracy"], metrics["loss"] = accuracy, loss
        return MetricRecord(metrics)

    return evaluate_fn


class Experiment(ABC):
    """The skeleton (see the module docstring).

    Args:
        sections: the config sections the app declares besides :class:`CommonSection`.
        defaults: the app's defaults where they differ from the sections'.
        attacks: names of registered attacks to run after the rounds (each runs where it applies).
    """

    def __init__(
        self,
        *sections: type[Section],
        defaults: Mapping[str, RunConfigValue] | None = None,
        attacks: Sequence[str] = (),
    ) -> None:
        self.schema = AppSchema((CommonSection, *sections), dict(defaults or {}))
        # References to every protection registered when the app was built: wherever this
        # experiment is unpickled (a Ray actor), their modules are imported and register again.
        self.known_protections = registered_protections()
        self.attacks = [build_attack(name) for name in attacks]
        for attack in self.attacks:
            if attack.section is not None and attack.section not in self.schema.sections:
                raise ValueError(f"attack {attack.name!r} needs the {attack.section.title} section")

    # -- what an app fills in ------------------------------------------------------------------
    @abstractmethod
    def prepare(self, run: RunConfig, grid: Grid) -> Plan:
        """Load the data, check what depends on it and build the initial model; no rounds, no folder yet."""

    @abstractmethod
    def strategy(self, run: RunConfig, plan: Plan, grid: Grid) -> Strategy:
        """The strategy of the recorded rounds (may run preliminary rounds, e.g. a bootstrap)."""

    @abstractmethod
    def train(self, msg: Message, context: Context) -> Message:
        """The ClientApp's train handler."""

    def query(self, msg: Message, context: Context) -> Message:
        """The ClientApp's query handler: the server asks every node for its partition once when it samples
        clients (:mod:`~flwr_privshare.apps.node_order`); the GAN attack's audit asks the attacker's node for
        ``G(z)`` (every other node, and every node of a run without the attack, replies with nothing)."""
        if is_partition_query(msg):
            return answer_partition_query(msg, context)
        return answer_audit(msg, context)

    def details(self, run: RunConfig, plan: Plan, strategy: Strategy, result: Result) -> dict[str, Any]:
        """Further headline values of ``summary.json`` (none by default)."""
        return {}

    def resume_obstacle(self, run: RunConfig, plan: Plan, failed_replies: int) -> str | None:
        """Why this run cannot continue from a round checkpoint (None: it can); see
        :meth:`Protection.resume_obstacle <flwr_privshare.protections.Protection.resume_obstacle>`."""
        if GanSection in run and run[GanSection].active:
            return (
                "the GAN attack: the insider's generator is trained across rounds in its client's context.state, "
                "which a resumed run cannot rebuild"
            )
        return next(
            (reason for protection in plan.protections if (reason := protection.resume_obstacle(failed_replies))),
            None,
        )

    def privacy(self, run: RunConfig, plan: Plan, strategy: Strategy, result: Result) -> dict[str, dict[str, Any]]:
        """The privacy sections of ``summary.json`` before the attacks: one per protection that reports."""
        sections: dict[str, dict[str, Any]] = {}
        for protection in plan.protections:
            report = protection.report(strategy, result)
            if report is not None:
                sections[protection.name] = report
        return sections

    def plots(self, plan: Plan) -> Plots:
        """Plots of ``rounds.csv``: accuracy per round on every test set, plus the protections' plots."""
        plots: Plots = {"accuracy": ("round", [f"{name}_accuracy" for name in plan.test_sets])}
        for protection in plan.protections:
            plots.update(protection.plots())
        return plots

    # -- the skeleton ----------------------------------------------------------------------------
    def run(self, grid: Grid, context: Context) -> Path:
        """Run the experiment of ``context.run_config``; return the published run folder."""
        from ..strategies import Recorded

        started = time.monotonic()
        run = self.schema.parse(context.run_config)
        common = run[CommonSection]
        check_output_dir(common.output_dir)
        check_data_dir(common.data_dir)
        if common.fraction_train < 1:  # sampled clients: the same partitions in every run with this seed
            grid = cast(Grid, PartitionOrderedGrid(grid, timeout=common.round_timeout))
        plan = self.prepare(run, grid)
        obstacle = self.resume_obstacle(run, plan, 0)
        if common.resume and obstacle is not None:
            raise ConfigError(f"run-config key 'resume' is true, but this run cannot resume: {obstacle}")
        check_free_disk(common.output_dir, expected_run_bytes(plan.model, checkpoints=obstacle is None))
        folder, checkpoint = self.open_run_folder(run, plan)
        if checkpoint is not None:
            started -= checkpoint.elapsed_s
        # Flower samples clients with `random` and its DP wrappers draw their noise from NumPy's global RNG
        # (a resumed run restores both from its checkpoint).
        random.seed(derive_seed(common.seed, "client-sampling"))
        np.random.seed(derive_seed(common.seed, "server-noise") % 2**32)
        with folder:
            recorded = Recorded(self.strategy(run, plan, grid), folder, checkpoints=obstacle is None)
            for name, replies in plan.broadcast_replies.items():
                if replies:
                    recorded.record_replies(0, f"{name}-broadcast", replies)
            if checkpoint is not None:  # its wire.json already holds the broadcast
                recorded.restore(checkpoint)
            central = central_evaluation(plan.model_name, plan.model.classifier.out_features, plan.test_sets)

            def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
                metrics = central(server_round, arrays)
                for audit in plan.round_audits:
                    metrics.update(audit(server_round, grid, folder))
                return metrics

            result = recorded.start(
                grid,
                ArrayRecord(plan.model.state_dict()),
                num_rounds=common.num_server_rounds,
                timeout=common.round_timeout,
                evaluate_fn=evaluate_fn,
            )
            strategy = recorded.strategy
            plan.model.load_state_dict(result.arrays.to_torch_state_dict())
            atomic_torch_save(plan.model.state_dict(), folder.path / "model.pt")
            privacy = self.privacy(run, plan, strategy, result)
            finished = FinishedRun(
                run,
                plan.model_name,
                plan.model,
                plan.test_sets,
                plan.public,
                len(list(grid.get_node_ids())),
                folder,
                plan.artifacts,
            )
            for attack in self.attacks:
                if attack.applies(finished):
                    log(INFO, "post-run attack: %s", attack.name)
                    privacy[attack.name] = attack.run(finished)
            final = result.evaluate_metrics_serverapp[max(result.evaluate_metrics_serverapp)]
            summary = RunSummary(
                method=self.method(run, plan),
                protection=plan.label,
                dataset=common.data_dir or common.dataset,
                final_accuracy=float(final["accuracy"]),  # type: ignore[arg-type]
                num_rounds=common.num_server_rounds,
                num_clients=finished.num_clients,
                client_failures=sum(recorded.failures.values()),
                failed_clients=recorded.failed_clients(),
                seed=common.seed,
                wall_time_s=round(time.monotonic() - started, 2),
                privacy=privacy,
                details=self.details(run, plan, strategy, result),
            )
            return folder.finish(summary.to_json(), self.plots(plan))

    def open_run_folder(self, run: RunConfig, plan: Plan) -> tuple[RunFolder, RoundCheckpoint | None]:
        """A new run folder, or with ``resume = true`` the unfinished one of this config and its checkpoint.

        Without ``run-name`` the newest unfinished run whose generated name fits the config
        (method, data set, seed) is resumed. A run killed before its first checkpoint starts again
        in its folder.

        Raises:
            ConfigError: when there is no unfinished run to resume, its checkpoint was written
                under another config (naming the keys that differ), or the rounds it ran leave
                client state that cannot be rebuilt.
        """
        common = run[CommonSection]
        config = run.to_run_config()
        if not common.resume:
            return RunFolder(common.output_dir, common.run_name_for(plan.label), config, common.seed), None
        prefix = common.generated_name_prefix(plan.label)
        name = common.run_name or next(reversed(RunFolder.unfinished(common.output_dir, prefix)), "")
        if not name:
            raise ConfigError(
                f"run-config key 'resume' is true, but output-dir {common.output_dir} holds no unfinished run "
                f"named {prefix}<time>; set run-name to the run to resume"
            )
        try:
            folder = RunFolder.resume(common.output_dir, name, config)
        except (FileExistsError, FileNotFoundError) as error:
            raise ConfigError(f"run-config key 'resume' is true, but {error}") from error
        if not folder.has_checkpoint:
            log(INFO, "%s has no round checkpoint yet: the run starts again", folder.path)
            folder.abort()
            return RunFolder(common.output_dir, name, config, common.seed), None
        checkpoint = RoundCheckpoint.load(folder.path)
        checkpoint.check_config(config, folder.path)
        failed = sum(checkpoint.recorder["failures"].values())
        if (obstacle := self.resume_obstacle(run, plan, failed)) is not None:
            raise ConfigError(f"cannot resume {folder.path}: {obstacle}")
        log(INFO, "resuming %s after round %d", folder.path, checkpoint.server_round)
        record = folder.path / RESUMES_FILE
        resumes = json.loads(record.read_text()) if record.exists() else []
        now = datetime.now(UTC).isoformat()
        resumes.append({"after_round": checkpoint.server_round, "at": now, "versions": package_versions()})
        folder.write_json(RESUMES_FILE, resumes)
        return folder, checkpoint

    def method(self, run: RunConfig, plan: Plan) -> str:
        """The method name of ``summary.json``."""
        return method_name(plan.protections)

    def server_app(self) -> ServerApp:
        """A Flower ServerApp that runs :meth:`run`."""
        app = ServerApp()

        @app.main()
        def main(grid: Grid, context: Context) -> None:
            self.run(grid, context)

        return app

    def client_app(self) -> ClientApp:
        """A Flower ClientApp with :meth:`train` (under every registered protection's client mods) and :meth:`query`."""
        app = ClientApp()
        mods = list(dict.fromkeys(mod for cls in registered_protections().values() for mod in cls.client_mods))

        @app.train(mods=mods)
        def train(msg: Message, context: Context) -> Message:
            return self.train(msg, context)

        @app.query()
        def query(msg: Message, context: Context) -> Message:
            return self.query(msg, context)

        return app
