"""A sweep spec: named methods (sets of run-config values) x client counts x seeds over one Flower App.

    app = "../simulations/dp_fedavg_cifar"        # relative paths are relative to the spec file
    output-dir = "../results/dp-sweep"
    clients = [10, 100]
    seeds = [42]
    federation = { client-resources-num-cpus = 1 }
    attacks = { names = ["loss", "rmia"], reference-models = 2 }

    [base]                                      # run-config values of every cell
    data-dir = "../../shared/datasets/cifar10"
    num-server-rounds = 8

    [methods.fedavg]
    protection = "none"

    [methods.dp-fedavg-eps8]
    protection = "dp-fedavg"
    target-epsilon = 8.0

Every value is checked against the app before anything runs (:func:`load_spec`); an error names
the field (``methods.dp-fedavg-eps8.target-epsilon``) and what is allowed.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.checks import MAX_SEED, FolderName
from ..launch import RunConfigValue, check_run_config

#: The keys of a spec file.
SPEC_KEYS = ("app", "output-dir", "clients", "seeds", "base", "methods", "federation", "attacks")
#: Run-config keys the sweep sets for every cell; a spec may not set them.
SWEEP_OWNED = ("output-dir", "run-name", "seed", "resume")
#: Run-config keys whose value is a path: a relative one is taken relative to the spec file.
PATH_KEYS = ("data-dir",)
_NAME = FolderName("a name of letters, digits, '.', '_', '+' or '-' (starting with a letter or digit)", False)


class SpecError(ValueError):
    """A sweep spec that cannot run; the message names the field and what is allowed."""


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: a method at a client count and seed, with its resolved run config."""

    method: str
    num_clients: int
    seed: int
    run_config: dict[str, RunConfigValue]

    @property
    def name(self) -> str:
        """The run folder's name: ``<method>-c<clients>-s<seed>``."""
        return f"{self.method}-c{self.num_clients}-s{self.seed}"


@dataclass(frozen=True)
class SweepSpec:
    """A checked spec (see the module docstring); build it with :func:`load_spec`."""

    path: Path
    app: Path
    output_dir: Path
    methods: dict[str, dict[str, RunConfigValue]]
    clients: list[int]
    seeds: list[int]
    base: dict[str, RunConfigValue] = field(default_factory=dict)
    federation: dict[str, RunConfigValue] = field(default_factory=dict)
    attacks: list[str] = field(default_factory=list)
    attack_options: dict[str, RunConfigValue] = field(default_factory=dict)
    #: The methods to run now (``--methods``; default: all); the report covers every method.
    selected: tuple[str, ...] = ()
    #: The client counts to run now (``--clients``; default: all); the report covers every count.
    selected_clients: tuple[int, ...] = ()

    def cells(self, methods: Sequence[str] | None = None) -> list[Cell]:
        """Every cell of ``methods`` (default: all the spec's), method by method, then by client count and seed."""
        return [
            Cell(method, clients, seed, self.run_config(method, clients, seed))
            for method in (self.methods if methods is None else methods)
            for clients in self.clients
            for seed in self.seeds
        ]

    def selected_cells(self) -> list[Cell]:
        """The cells to run now: those of the :attr:`selected` methods and :attr:`selected_clients` (default: all)."""
        cells = self.cells(self.selected or None)
        return [cell for cell in cells if not self.selected_clients or cell.num_clients in self.selected_clients]

    def run_config(self, method: str, num_clients: int, seed: int) -> dict[str, RunConfigValue]:
        """The run config of a cell: the base values, the method's, the seed, and where its folder goes."""
        name = Cell(method, num_clients, seed, {}).name
        return {
            **self.base,
            **self.methods[method],
            "seed": seed,
            "output-dir": str(self.runs_dir),
            "run-name": name,
        }

    def settings(self, cell: Cell) -> str:
        """What a cell's result depends on, wherever the spec and its runs lie: the app and the run config less the
        sweep's folder keys, paths relative to the spec file, as JSON with sorted keys (as report rows store it).
        A row kept from an earlier report counts for a cell only while its settings are the cell's
        (:func:`~flwr_privshare.sweep.report.write_report`)."""
        here = self.path.parent
        values: dict[str, RunConfigValue] = {"app": os.path.relpath(self.app, here)}
        for key, value in sorted(cell.run_config.items()):
            if key in ("output-dir", "run-name", "resume"):
                continue
            is_path = key in PATH_KEYS and isinstance(value, str) and value
            values[key] = os.path.relpath(str(value), here) if is_path else value
        return json.dumps(values, sort_keys=True)

    def federation_config(self, num_clients: int) -> str:
        """``--federation-config`` of a cell: ``num-supernodes`` plus the spec's ``federation`` values."""
        values = {"num-supernodes": num_clients, **self.federation}
        return " ".join(f"{key}={value}" for key, value in values.items())

    @property
    def runs_dir(self) -> Path:
        """Where the cells' run folders go."""
        return self.output_dir / "runs"


def load_spec(path: str | Path, methods: list[str] | None = None, clients: list[int] | None = None) -> SweepSpec:
    """Read and check a spec file; ``methods`` selects those methods (in that order) to run, ``clients`` those
    client counts.

    Raises:
        SpecError: for an unknown key, an unknown method or client count, a non-positive client count, a bad seed,
            an unknown attack, or a run-config value the app refuses (naming the field).
    """
    spec_path = Path(path).expanduser().resolve()
    try:
        raw = tomllib.loads(spec_path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise SpecError(f"cannot read the sweep spec {spec_path}: {error}") from error
    for key in raw:
        if key not in SPEC_KEYS:
            raise SpecError(f"{spec_path}: unknown key {key!r}{_closest(key, SPEC_KEYS)}; the keys are {SPEC_KEYS}")
    here = spec_path.parent
    app = _path(raw, "app", here)
    if not (app / "pyproject.toml").is_file():
        raise SpecError(f"app: {app} is not a Flower App folder (no pyproject.toml)")
    output_dir = _path(raw, "output-dir", here)
    all_clients = _positive_ints(raw, "clients")
    seeds = _seeds(raw)
    base = _run_config(raw.get("base", {}), "base", here)
    all_methods = raw.get("methods")
    if not isinstance(all_methods, dict) or not all_methods:
        raise SpecError('methods: a table of named methods is needed, e.g. [methods.fedavg] protection = "none"')
    for name in methods or []:
        if name not in all_methods:
            raise SpecError(
                f"method {name!r} is not in the spec{_closest(name, all_methods)}; it has {list(all_methods)}"
            )
    for count in clients or []:
        if count not in all_clients:
            raise SpecError(f"client count {count!r} is not in the spec; it has {all_clients}")
    for name in all_methods:
        if not _NAME(name):
            raise SpecError(f"methods.{name}: the name must be {_NAME.allowed}")
    spec = SweepSpec(
        path=spec_path,
        app=app,
        output_dir=output_dir,
        methods={name: _run_config(all_methods[name], f"methods.{name}", here) for name in all_methods},
        clients=all_clients,
        seeds=seeds,
        base=base,
        federation=_federation(raw.get("federation", {})),
        **_attacks(raw.get("attacks", {})),
        selected=tuple(methods or ()),
        selected_clients=tuple(clients or ()),
    )
    for name in spec.methods:
        try:
            check_run_config(app, spec.run_config(name, all_clients[0], seeds[0]))
        except ValueError as error:
            raise SpecError(f"methods.{name} (with base): {error}") from error
    return spec


def _closest(name: str, choices: Any) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _path(raw: Mapping[str, Any], key: str, here: Path) -> Path:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise SpecError(f"{key}: a folder path is needed, got {value!r}")
    return (here / Path(value).expanduser()).resolve()


def _positive_ints(raw: Mapping[str, Any], key: str) -> list[int]:
    values = raw.get(key)
    if not isinstance(values, list) or not values:
        raise SpecError(f"{key}: a non-empty list of positive integers is needed, got {values!r}")
    for value in values:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(f"{key}: {value!r} is not a positive integer")
    return list(values)


def _seeds(raw: Mapping[str, Any]) -> list[int]:
    values = raw.get("seeds", [42])
    if not isinstance(values, list) or not values:
        raise SpecError(f"seeds: a non-empty list of integers in [0, {MAX_SEED}] is needed, got {values!r}")
    for value in values:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
            raise SpecError(f"seeds: {value!r} is not an integer in [0, {MAX_SEED}]")
    return list(values)


def _run_config(values: Any, where: str, here: Path) -> dict[str, RunConfigValue]:
    if not isinstance(values, dict):
        raise SpecError(f"{where}: a table of run-config values is needed, got {values!r}")
    config: dict[str, RunConfigValue] = {}
    for key, value in values.items():
        if key in SWEEP_OWNED:
            raise SpecError(f"{where}.{key}: the sweep sets {', '.join(SWEEP_OWNED)} itself")
        if not isinstance(value, bool | int | float | str):
            raise SpecError(f"{where}.{key}: {value!r} is not a run-config value (bool, number or string)")
        if key in PATH_KEYS and isinstance(value, str) and value:
            value = str((here / Path(value).expanduser()).resolve())
        config[key] = value
    return config


def _federation(values: Any) -> dict[str, RunConfigValue]:
    if not isinstance(values, dict):
        raise SpecError(f"federation: a table of federation-config values is needed, got {values!r}")
    if "num-supernodes" in values:
        raise SpecError("federation.num-supernodes: the sweep sets it from clients")
    return dict(values)


def _attacks(values: Any) -> dict[str, Any]:
    from ..attacks.cli import ATTACK_NAMES

    if not isinstance(values, dict):
        raise SpecError(f"attacks: a table with names = [...] is needed, got {values!r}")
    names = values.get("names", [])
    if not isinstance(names, list) or any(name not in ATTACK_NAMES for name in names):
        raise SpecError(f"attacks.names: {names!r}; each must be one of {ATTACK_NAMES}")
    options = {key: value for key, value in values.items() if key != "names"}
    return {"attacks": list(names), "attack_options": options}
