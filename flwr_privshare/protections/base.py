"""The protection interface and its registry (the way Opacus registers accountants).

A protection is a class registered under a name with :func:`register_protection`. It may:

- change the client's data (:meth:`Protection.client_data`; VisualMixer shuffles it, MDP distorts its mapping),
- prepare the server and the clients before round 1 (:meth:`Protection.prepare`, :meth:`Protection.broadcast`
  and the client's answer, :meth:`Protection.answer_query`; MDP's feature network),
- replace the client's local training (:meth:`Protection.train`; DP-SGD),
- wrap the server strategy (:meth:`Protection.wrap_strategy`; DP-FedAvg),
- add evaluation sets (:meth:`Protection.test_sets`) and one section of ``summary.json``
  (:meth:`Protection.report`), and plots.

``protection = "visualmixer,dp-sgd"`` composes registered protections in order; ``"none"``
is the empty list and ``"a+b"`` is the older spelling of ``"a,b"``. Two protections that both
replace local training or both wrap the strategy, or that name each other in ``conflicts``,
are refused before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..config.checks import ConfigError, fail
from ..config.schema import RunConfig
from ..config.section import Section, setting
from ..recipe import Recipe

if TYPE_CHECKING:
    import torch
    from flwr.app import Context, Message, MetricRecord
    from flwr.clientapp.typing import Mod
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import Result, Strategy
    from torch import nn

    from ..data import ImageDataset
    from ..models import ImageClassifier

P = TypeVar("P", bound="type[Protection]")
_REGISTRY: dict[str, type[Protection]] = {}


@dataclass(frozen=True)
class LocalTraining:
    """How a client trains this round: the common settings, the recipe and the seed for this client and round."""

    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    device: torch.device
    seed: int
    num_server_rounds: int
    recipe: Recipe = field(default_factory=Recipe)
    server_round: int = 1

    def loop_settings(self) -> dict[str, Any]:
        """The keyword arguments every training loop takes: the common settings, the device and the recipe."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "device": self.device,
            "recipe": self.recipe,
        }


@dataclass(frozen=True)
class HeadlineColumn:
    """A number of a finished run's ``summary.json`` that the tables (``privshare-report``, sweeps) show.

    Attributes:
        key: the column's name in the CSV tables.
        label: its header in the Markdown tables.
        path: where it is in ``summary["privacy"]``.
        percent: whether it is shown as a percentage.
    """

    key: str
    label: str
    path: tuple[str, ...]
    percent: bool = False

    def value_in(self, privacy: dict[str, Any]) -> float | None:
        """The number at :attr:`path` in a summary's ``privacy`` section, or None where the run has none."""
        found: Any = privacy
        for step in self.path:
            found = found.get(step) if isinstance(found, dict) else None
        return None if found is None else float(found)


class Protection:
    """Base class: every hook does nothing, so a protection overrides only what it changes."""

    #: Registered name, used in ``protection = "..."``.
    name: ClassVar[str] = ""
    #: The config section the protection reads (the app must declare it), or None.
    section: ClassVar[type[Section] | None] = None
    #: Names of protections this one cannot be combined with.
    conflicts: ClassVar[tuple[str, ...]] = ()
    #: The aggregation algorithm the protection turns FedAvg into ("dp-fedavg"), for the method name.
    aggregation: ClassVar[str | None] = None
    #: Modules of the ClientApp (Flower mods); they must pass messages that do not concern them through.
    client_mods: ClassVar[tuple[Mod, ...]] = ()
    #: Whether the protection's test sets come before ``plain`` (the first one is the run's headline accuracy):
    #: VisualMixer's model is used on shuffled images; MDP's on benign ones.
    protected_view_first: ClassVar[bool] = True
    #: The numbers of its ``summary.json`` section that the run and sweep tables show.
    headline_columns: ClassVar[tuple[HeadlineColumn, ...]] = ()

    def __init__(self, run: RunConfig) -> None:
        self.run = run

    @classmethod
    def replaces_training(cls) -> bool:
        """Whether the protection brings its own local training loop."""
        return cls.train is not Protection.train

    @classmethod
    def wraps_strategy(cls) -> bool:
        """Whether the protection wraps the server strategy."""
        return cls.wrap_strategy is not Protection.wrap_strategy

    # -- server side ---------------------------------------------------------------------------
    def check_data(self, image_shape: tuple[int, int, int]) -> None:
        """Check the settings that depend on the images (before any work)."""

    def prepare(self, public: ImageDataset, model: ImageClassifier, model_name: str) -> None:
        """Server-side work before the test sets, given the public split and the initial global model."""

    def test_sets(self, test: ImageDataset) -> dict[str, ImageDataset]:
        """Further named test sets the server evaluates every round (the protected view of the test set)."""
        return {}

    def wrap_strategy(self, strategy: Strategy, grid: Grid) -> Strategy:
        """The strategy the server runs (the given one by default)."""
        return strategy

    def broadcast(self, grid: Grid, timeout: float) -> list[Message]:
        """Send the clients what they need before round 1 (answered by :meth:`answer_query`) and return
        their replies, which ``wire.json`` records as round 0; nothing by default."""
        return []

    def report(self, strategy: Strategy, result: Result) -> dict[str, Any] | None:
        """This protection's section of ``summary.json`` (None: no section)."""
        return None

    def plots(self) -> dict[str, tuple[str, list[str]]]:
        """Further plots of ``rounds.csv``: ``{file stem: (x column, [y columns])}``."""
        return {}

    def resume_obstacle(self, failed_replies: int) -> str | None:
        """Why a run under this protection cannot continue from a round checkpoint (None: it can).

        A resumed run's clients start with an empty ``context.state``; a protection whose client
        state cannot be rebuilt from the seed (and the round) says so here. ``failed_replies``:
        failed replies in the rounds already run (0 when asked before the run).
        """
        return None

    # -- client side ---------------------------------------------------------------------------
    def client_data(
        self, data: ImageDataset, context: Context, model: ImageClassifier
    ) -> tuple[ImageDataset, dict[str, float]]:
        """The client's training data under this protection, and metrics about it to report.

        ``model`` is the global model the client received this round (before training).
        """
        return data, {}

    def answer_query(self, msg: Message, context: Context, partition: Callable[[], ImageDataset]) -> Message | None:
        """The client's reply to a query message of this protection's :meth:`broadcast` (None: not ours).
        ``partition`` loads the client's training data."""
        return None

    def train(self, model: nn.Module, data: ImageDataset, context: Context, local: LocalTraining) -> MetricRecord:
        """Train ``model`` in place on ``data``; return the metrics of the reply (with ``loss``)."""
        raise NotImplementedError


def register_protection(cls: P) -> P:
    """Class decorator: register a :class:`Protection` subclass under its ``name``."""
    if not cls.name or cls.name in ("none", *_REGISTRY) or any(c in cls.name for c in ",+ "):
        raise ValueError(
            f"cannot register protection {cls.name!r}: the name is empty, reserved, taken or has , + or space"
        )
    _REGISTRY[cls.name] = cls
    return cls


def registered_protections() -> dict[str, type[Protection]]:
    """``{name: class}`` of every registered protection."""
    return dict(_REGISTRY)


def parse_protection_names(text: str) -> list[str]:
    """``"visualmixer,dp-sgd"`` (or ``"visualmixer+dp-sgd"``) -> names; ``"none"`` or ``""`` -> []."""
    names = [name.strip() for name in text.replace("+", ",").split(",") if name.strip()]
    return [] if names == ["none"] else names


def protection_classes(text: str) -> list[type[Protection]]:
    """The registered classes of ``protection = text``; refuse unknown, repeated or incompatible names."""
    names = parse_protection_names(text)
    allowed = f"'none' or a comma-separated list of {sorted(_REGISTRY)}"
    for name in names:
        if name not in _REGISTRY or names.count(name) > 1:
            raise fail("protection", text, allowed + " (each once)")
    classes = [_REGISTRY[name] for name in names]
    for index, first in enumerate(classes):
        for second in classes[index + 1 :]:
            reason = _conflict(first, second)
            if reason:
                raise fail("protection", text, f"a compatible list: {first.name!r} and {second.name!r} {reason}")
    return classes


def resolve_protections(text: str, run: RunConfig) -> list[Protection]:
    """The protections of ``protection = text``, built on ``run``, whose sections the app must declare."""
    classes = protection_classes(text)
    for cls in classes:
        if cls.section is not None and cls.section not in run:
            raise ConfigError(
                f"run-config key 'protection' is {text!r}; {cls.name!r} needs the {cls.section.title} keys, "
                "which this app does not declare (use an app that declares them)"
            )
    return [cls(run) for cls in classes]


def _conflict(first: type[Protection], second: type[Protection]) -> str:
    if second.name in first.conflicts or first.name in second.conflicts:
        return "are declared incompatible"
    if first.replaces_training() and second.replaces_training():
        return "both replace the local training loop"
    if first.wraps_strategy() and second.wraps_strategy():
        return "both wrap the server strategy"
    return ""


def method_name(protections: Sequence[Protection], aggregation: str = "fedavg") -> str:
    """``aggregation``, or the one a protection makes of it, then ``+name`` for every other protection."""
    base = next((p.aggregation for p in protections if p.aggregation), aggregation)
    return "+".join([base, *(p.name for p in protections if p.aggregation != base)])


@dataclass(frozen=True)
class ProtectionSection(Section):
    """Which protections the clients and the server apply (composable, in order)."""

    title = "Protection"

    protection: str = setting("none", "'none' or a comma-separated list of registered protections")

    def validate(self) -> None:
        from . import protection_classes  # importing the package registers the built-in protections

        protection_classes(self.protection)
