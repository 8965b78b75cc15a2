"""Config sections: small frozen dataclasses that own their run-config keys, defaults, help and checks.

A section is one part of an experiment's configuration (the common settings, VisualMixer's,
DP's, ...). Each field is declared with :func:`setting`, which records the field's help text
and its :class:`~flwr_privshare.config.checks.Check`; the field ``vim_window_min`` is the
run-config key ``vim-window-min``. Building a
section (from a run config or from Python) coerces and checks every value, then runs the
section's cross-field rules (:meth:`Section.validate`), so a section that exists is valid.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from .checks import MAX_INT, Check, ConfigError, fail

RunConfigValue = bool | int | float | str


def setting(default: RunConfigValue, help: str, check: Check | None = None) -> Any:
    """A section field: its default, one line of help for the key reference, and its check."""
    return dataclasses.field(default=default, metadata={"help": help, "check": check})


@dataclass(frozen=True)
class Section:
    """Base of every config section (see the module docstring)."""

    #: Name of the section in the key reference and in error messages.
    title: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            key = self.key_of(field.name)
            value = _coerce(key, getattr(self, field.name), type(field.default))
            object.__setattr__(self, field.name, value)
            check = field.metadata.get("check")
            if check is not None and not check(value):
                raise fail(key, value, check.allowed)
        self.validate()

    def validate(self) -> None:
        """Rules across this section's fields (none by default)."""

    @classmethod
    def key_of(cls, field_name: str) -> str:
        """The run-config key of a field: its name in kebab-case."""
        return field_name.replace("_", "-")

    @classmethod
    def declared(cls) -> dict[str, dataclasses.Field[Any]]:
        """``{run-config key: field}`` in declaration order."""
        return {cls.key_of(field.name): field for field in dataclasses.fields(cls)}

    @classmethod
    def defaults(cls) -> dict[str, RunConfigValue]:
        """``{run-config key: default}``."""
        return {key: field.default for key, field in cls.declared().items()}  # type: ignore[misc]

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> Self:
        """The section from the keys of ``run_config`` it owns (others are ignored; unset keys take defaults)."""
        values = {field.name: run_config[key] for key, field in cls.declared().items() if key in run_config}
        return cls(**values)

    def to_run_config(self) -> dict[str, RunConfigValue]:
        """The section as ``{run-config key: value}``."""
        return {self.key_of(field.name): getattr(self, field.name) for field in dataclasses.fields(self)}


def _coerce(key: str, value: object, kind: type) -> RunConfigValue:
    """Convert a run-config value to the field's type, refusing lossy conversions and non-finite numbers."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and is_number:
        if not math.isfinite(value) or not float(value).is_integer() or abs(value) > MAX_INT:  # type: ignore[arg-type]
            raise fail(key, value, f"an integer of at most {MAX_INT} in magnitude")
        return int(value)  # type: ignore[call-overload]
    if kind is float and is_number:
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            raise fail(key, value, "a finite number")
        return number
    if kind is str and isinstance(value, str):
        return value
    raise ConfigError(f"run-config key {key!r} is {value!r}; it must be of type {kind.__name__}")
