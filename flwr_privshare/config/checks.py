"""Value checks for run-config keys: each says what it allows, so every error can name it.

A check is attached to a field once (:func:`~flwr_privshare.config.section.setting`) and runs
whenever a section is built, from a run config or from Python.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

# Flower sends run-config integers as 64-bit values; no count in an experiment comes near 2**31.
MAX_INT = 2**31 - 1
MAX_SEED = 2**32 - 1  # a 32-bit seed, which every RNG the run seeds accepts


class ConfigError(ValueError):
    """A run-config key or value that is not allowed; the message names the key and what is allowed."""


def fail(key: str, value: object, allowed: str) -> ConfigError:
    """The error for ``key = value``: ``run-config key 'k' is v; it must be <allowed>``."""
    return ConfigError(f"run-config key {key!r} is {value!r}; it must be {allowed}")


def require(condition: bool, key: str, value: object, allowed: str) -> None:
    """Raise :func:`fail` unless ``condition``."""
    if not condition:
        raise fail(key, value, allowed)


@dataclass(frozen=True)
class Check:
    """A rule on one value; ``allowed`` completes "it must be ..."."""

    allowed: str

    def __call__(self, value: object) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Interval(Check):
    """A finite number in an interval (``low``/``high`` None: unbounded; open ends excluded)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __call__(self, value: object) -> bool:
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            return False
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            return False
        return not (self.high is not None and (number >= self.high if self.high_open else number > self.high))


@dataclass(frozen=True)
class OneOf(Check):
    """A value from a fixed list."""

    choices: tuple[object, ...] = ()

    def __call__(self, value: object) -> bool:
        return value in self.choices


@dataclass(frozen=True)
class FolderName(Check):
    """A single folder name (no separators, not ``.``/``..``, not hidden), or ``""`` where empty is allowed."""

    allow_empty: bool = True
    pattern: re.Pattern[str] = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")

    def __call__(self, value: object) -> bool:
        text = str(value)
        return (self.allow_empty and text == "") or (bool(self.pattern.match(text)) and len(text) <= 200)


@dataclass(frozen=True)
class Satisfies(Check):
    """Any predicate (for rules that need the value's parts, e.g. comma-separated names)."""

    predicate: object = None

    def __call__(self, value: object) -> bool:
        return bool(self.predicate(value))  # type: ignore[operator]


def one_of(choices: Iterable[object]) -> OneOf:
    """A :class:`OneOf` whose message lists the choices."""
    values = tuple(choices)
    return OneOf(f"one of {values}", values)


POSITIVE_INT = Interval(f"a positive integer (at most {MAX_INT})", 1, MAX_INT)
NON_NEGATIVE_INT = Interval(f"a non-negative integer (at most {MAX_INT})", 0, MAX_INT)
POSITIVE = Interval("a positive finite number", 0, None, low_open=True)
NON_NEGATIVE = Interval("a non-negative finite number", 0)
SEED = Interval(f"an integer in [0, {MAX_SEED}]", 0, MAX_SEED)
