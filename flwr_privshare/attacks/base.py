"""The attack interface and its registry: attacks that run after a run, on what it produced.

An attack is a class registered under a name with :func:`register_attack`. An app names the
attacks it runs after its rounds; each that :meth:`Attack.applies` to the finished run adds
one section to ``summary.json`` (under ``privacy``), and may write figures into the run folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from ..config.schema import RunConfig
    from ..config.section import Section
    from ..data import ImageDataset
    from ..models import ImageClassifier
    from ..results import RunFolder

A = TypeVar("A", bound="type[Attack]")
_REGISTRY: dict[str, type[Attack]] = {}


@dataclass
class FinishedRun:
    """What an attack may use: the run's config, its final global model and data the server holds.

    Attributes:
        run: the parsed run config.
        model_name: the architecture of ``model``.
        model: the final global model.
        test_sets: named test sets, the primary (protected) view first and ``"plain"`` always present.
        public: the server's public split (disjoint from every client).
        num_clients: SuperNodes in the federation.
        folder: the run folder (for figures).
        artifacts: what the app built on the way that an attack of that app needs (e.g. the DPM
            app's split model and reconstructors), by name.
    """

    run: RunConfig
    model_name: str
    model: ImageClassifier
    test_sets: dict[str, ImageDataset]
    public: ImageDataset
    num_clients: int
    folder: RunFolder
    artifacts: dict[str, Any] = field(default_factory=dict)


class Attack:
    """Base class of a post-run attack."""

    #: Registered name.
    name: ClassVar[str] = ""
    #: The config section the attack reads (the app must declare it), or None.
    section: ClassVar[type[Section] | None] = None

    def applies(self, finished: FinishedRun) -> bool:
        """Whether the attack has something to measure in this run (it runs only then)."""
        return True

    def run(self, finished: FinishedRun) -> dict[str, Any]:
        """Attack the run; return this attack's section of ``summary.json``."""
        raise NotImplementedError


def register_attack(cls: A) -> A:
    """Class decorator: register an :class:`Attack` subclass under its ``name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"cannot register attack {cls.name!r}: the name is empty or taken")
    _REGISTRY[cls.name] = cls
    return cls


def registered_attacks() -> dict[str, type[Attack]]:
    """``{name: class}`` of every registered attack."""
    return dict(_REGISTRY)


def build_attack(name: str) -> Attack:
    """An instance of the attack registered as ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown attack {name!r}; registered: {sorted(_REGISTRY)}")
    return _REGISTRY[name]()
