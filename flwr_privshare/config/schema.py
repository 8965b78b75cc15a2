"""An app's schema: the config sections it declares, parsed together from one Flower run config.

An app declares the sections it uses; its ``[tool.flwr.app.config]`` lists exactly their keys
(``tests/test_app_schemas.py`` compares them). :meth:`AppSchema.parse` refuses a key no
section owns, naming the closest known key, then builds every section (which checks its
values). :meth:`AppSchema.reference` renders the key reference in ``docs/``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .checks import ConfigError
from .section import RunConfigValue, Section

S = TypeVar("S", bound=Section)


def unknown_key_error(key: str, known: Sequence[str], where: str) -> ConfigError:
    """``unknown run-config key 'k' (did you mean 'x'?)`` for a key ``where`` does not declare."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown run-config key {key!r}{hint}; {where} declares: {', '.join(sorted(known))}")


@dataclass(frozen=True)
class RunConfig:
    """The parsed sections of one run; ``run[VisualMixerSection]`` is that section."""

    sections: tuple[Section, ...]

    def __getitem__(self, kind: type[S]) -> S:
        for section in self.sections:
            if isinstance(section, kind):
                return section
        raise KeyError(f"this app does not declare the {kind.title or kind.__name__} section")

    def __contains__(self, kind: type[Section]) -> bool:
        return any(isinstance(section, kind) for section in self.sections)

    def to_run_config(self) -> dict[str, RunConfigValue]:
        """All keys and values, as ``config.json`` records them."""
        values: dict[str, RunConfigValue] = {}
        for section in self.sections:
            values.update(section.to_run_config())
        return values


#: Parsed run configs an :class:`AppSchema` keeps (a process serves the clients of one run at a time).
PARSED_KEPT = 8


@dataclass(frozen=True)
class AppSchema:
    """The sections an app declares, in order, and the app's own defaults where they differ from the sections'."""

    sections: tuple[type[Section], ...]
    overrides: Mapping[str, RunConfigValue] = field(default_factory=dict)
    _parsed: dict[tuple[tuple[str, Any], ...], RunConfig] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        owners: dict[str, str] = {}
        for section in self.sections:
            for key in section.declared():
                if key in owners:
                    raise ValueError(f"run-config key {key!r} is declared by {owners[key]} and {section.__name__}")
                owners[key] = section.__name__
        self.check_keys(self.overrides, "the app's schema")
        self.parse({})  # the app's defaults must themselves be valid

    def declared_keys(self) -> list[str]:
        """Every key of the app, section by section."""
        return [key for section in self.sections for key in section.declared()]

    def defaults(self) -> dict[str, RunConfigValue]:
        """``{key: default}`` of every key (what the app's ``pyproject.toml`` must list)."""
        defaults = {key: value for section in self.sections for key, value in section.defaults().items()}
        return {**defaults, **self.overrides}

    def check_keys(self, run_config: Mapping[str, Any], where: str = "this app") -> None:
        """Refuse the first key no section declares, naming the closest known key."""
        known = self.declared_keys()
        for key in run_config:
            if key not in known:
                raise unknown_key_error(key, known, where)

    def parse(self, run_config: Mapping[str, Any]) -> RunConfig:
        """Check the keys, then build every section (unset keys take their defaults).

        A client handler parses its run's config on every call; the sections are frozen and
        valid once built, so the last configs parsed are kept (by value) and handed out again.
        """
        try:
            key: tuple[tuple[str, Any], ...] | None = tuple(sorted(run_config.items()))
            hash(key)
        except TypeError:  # an unhashable value: parsing refuses it below
            key = None
        if key is not None and key in self._parsed:
            return self._parsed[key]
        self.check_keys(run_config)
        values = {**self.overrides, **run_config}
        parsed = RunConfig(tuple(section.from_run_config(values) for section in self.sections))
        if key is not None:
            if len(self._parsed) >= PARSED_KEPT:
                self._parsed.pop(next(iter(self._parsed)))
            self._parsed[key] = parsed
        return parsed

    def toml(self) -> str:
        """The ``[tool.flwr.app.config]`` table an app's ``pyproject.toml`` declares: every key at its default."""
        lines = ["[tool.flwr.app.config]"]
        for section in self.sections:
            lines.append(f"# {section.title}")
            lines += [f"{key} = {_toml(self.defaults()[key])}" for key in section.declared()]
        return "\n".join(lines) + "\n"

    def reference(self) -> str:
        """The key reference of these sections as Markdown tables."""
        lines: list[str] = []
        for section in self.sections:
            lines += [f"### {section.title} (`{section.__module__}.{section.__name__}`)", ""]
            doc = (section.__doc__ or "").strip().split("\n\n")[0]
            lines += [" ".join(doc.split()), "", "| key | default | allowed | meaning |", "|---|---|---|---|"]
            for key, declared in section.declared().items():
                check = declared.metadata.get("check")
                allowed = check.allowed if check is not None else type(declared.default).__name__
                default = _toml(self.defaults()[key])
                lines.append(f"| `{key}` | `{default}` | {allowed} | {declared.metadata['help']} |")
            lines.append("")
        return "\n".join(lines)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)
