"""Run-config sections and app schemas: bad input names the key and what is allowed, before any work."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from flwr_privshare.apps.loading import app_config
from flwr_privshare.config import AppSchema, CommonSection, ConfigError
from flwr_privshare.config.__main__ import reference
from flwr_privshare.poisoning.section import DPMSection
from flwr_privshare.seeding import derive_seed, seeded
from flwr_privshare.visualmixer.section import VisualMixerSection

from .experiments import DP, DPM, SIMULATIONS, VISUALMIXER

DOCS = Path(__file__).resolve().parents[1] / "docs"
APPS = {"visualmixer_cifar": VISUALMIXER, "dp_fedavg_cifar": DP, "dpm_cifar": DPM}


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"vim-window-min": 8, "vim-window-max": 4}, "'vim-window-min' is 8; it must be at most vim-window-max"),
        ({"vim-window-min": 3}, "'vim-window-min' is 3; it must be a power of two"),
        ({"vim-window-max": 12}, "'vim-window-max' is 12; it must be a power of two"),
        ({"vim-window-min": 1, "vim-window-max": 1}, "'vim-window-max' is 1; it must be a power of two of at least 2"),
        ({"optimizer": "rmsprop"}, r"'optimizer' is 'rmsprop'; it must be one of \('sgd', 'adam', 'st-adam'\)"),
        ({"protection": "magic"}, "'protection' is 'magic'; it must be 'none' or a comma-separated list of"),
        ({"protection": "dp-sgd,dp-fedavg"}, "'dp-sgd' and 'dp-fedavg' are declared incompatible"),
        ({"protection": "visualmixer,visualmixer"}, r"\(each once\)"),
        ({"noise-multiplier": 0.0}, "'noise-multiplier' is 0.0; it must be a positive finite number"),
        ({"noise-multiplier": float("inf")}, "'noise-multiplier' is inf; it must be a finite number"),
        ({"learning-rate": float("inf")}, "'learning-rate' is inf; it must be a finite number"),
        ({"clipping-norm": float("inf")}, "'clipping-norm' is inf; it must be a finite number"),
        ({"dirichlet-alpha": float("nan")}, "'dirichlet-alpha' is nan; it must be a finite number"),
        ({"target-epsilon": float("inf")}, "'target-epsilon' is inf; it must be a finite number"),
        ({"num-server-rounds": 1e20}, "'num-server-rounds' is 1e\\+20; it must be an integer of at most"),
        ({"batch-size": 2**63}, "'batch-size' is 9223372036854775808; it must be an integer of at most"),
        ({"seed": -1}, r"'seed' is -1; it must be an integer in \[0, 4294967295\]"),
        ({"run-name": "a/b"}, "'run-name' is 'a/b'; it must be a folder name without '/'"),
        ({"run-name": "../x"}, "'run-name' is '../x'; it must be a folder name without '/'"),
        ({"run-name": ".."}, "'run-name' is '..'; it must be a folder name"),
        ({"max-grad-norm": -1.0}, "'max-grad-norm' is -1.0; it must be a positive finite number"),
        ({"clipping-norm": 0}, "'clipping-norm' is 0.0; it must be a positive finite number"),
        ({"delta": 1.0}, r"'delta' is 1.0; it must be a number in \(0, 1\)"),
        ({"target-epsilon": -3.0}, "'target-epsilon' is -3.0; it must be a non-negative finite number"),
        (
            {"target-epsilon": 8.0, "dp-clipping": "server-adaptive"},
            "'target-epsilon' is 8.0; it must be 0 with dp-clipping 'server-adaptive'",
        ),
        (
            {"dp-clipping": "server-adaptive"},
            "'dp-sampling' is 'poisson'; it must be 'fixed' with dp-clipping 'server-adaptive'",
        ),
        ({"dp-sampling": "uniform"}, "'dp-sampling' is 'uniform'; it must be one of"),
        ({"dp-accountant": "gdp"}, "'dp-accountant' is 'gdp'; it must be one of"),
        ({"dp-clipping": "both"}, "'dp-clipping' is 'both'; it must be one of"),
        ({"partitioner": "shards"}, "'partitioner' is 'shards'; it must be one of"),
        ({"num-server-rounds": 0}, "'num-server-rounds' is 0; it must be a positive integer"),
        ({"local-epochs": -1}, "'local-epochs' is -1; it must be a positive integer"),
        ({"batch-size": 0}, "'batch-size' is 0; it must be a positive integer"),
        ({"learning-rate": 0.0}, "'learning-rate' is 0.0; it must be a positive finite number"),
        ({"fraction-train": 1.5}, "'fraction-train' is 1.5; it must be a number in"),
        ({"samples-per-client": -5}, "'samples-per-client' is -5; it must be a non-negative integer"),
        ({"batch-size": "32"}, "'batch-size' is '32'; it must be of type int"),
        (
            {"augmentation": "rotate"},
            r"'augmentation' is 'rotate'; it must be one of \('auto', 'none', 'flip', 'crop-flip'\)",
        ),
        ({"crop-padding": 0}, r"'crop-padding' is 0; it must be an integer in \[1, 16\]"),
        ({"lr-schedule": "step"}, r"'lr-schedule' is 'step'; it must be one of \('constant', 'cosine', 'one-cycle'\)"),
        ({"lr-warmup": 1.0}, r"'lr-warmup' is 1.0; it must be a number in \(0, 1\)"),
        ({"label-smoothing": 1.0}, r"'label-smoothing' is 1.0; it must be a number in \[0, 1\)"),
        ({"label-smoothing": -0.1}, r"'label-smoothing' is -0.1; it must be a number in \[0, 1\)"),
        ({"server-momentum": 1.0}, r"'server-momentum' is 1.0; it must be a number in \[0, 1\)"),
        ({"server-learning-rate": 0.0}, "'server-learning-rate' is 0.0; it must be a positive finite number"),
        ({"augmentation-multiplicity": 0}, r"'augmentation-multiplicity' is 0; it must be an integer in \[1, 64\]"),
        ({"num-rounds": 3}, "unknown run-config key 'num-rounds' \\(did you mean 'num-server-rounds'\\?\\)"),
        ({"dpm-lambda": 1.0}, "unknown run-config key 'dpm-lambda'"),  # the DP app has no DPM section
    ],
)
def test_bad_values_name_the_key(overrides: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        DP.schema.parse(overrides)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"dpm-lambda": -1.0}, "'dpm-lambda' is -1.0; it must be a non-negative finite number"),
        ({"dpm-feature-noise": -0.3}, "'dpm-feature-noise' is -0.3; it must be a non-negative finite number"),
        (
            {"dpm-check-reconstructor": "rx4s2"},  # audited as unseen, so it cannot also be the clients' check
            r"'dpm-check-reconstructor' is 'rx4s2'; it must be one of \('', 'rx3s2', 'rx5s2'\)",
        ),
        (
            {"dpm-ensemble": "rx3s2,rx4s2"},  # rx4s2 is audited as unseen, so no DPM may train against it
            r"'dpm-ensemble' is 'rx3s2,rx4s2'; it must be '' or distinct comma-separated names from "
            r"\('px3s2', 'rx3s2', 'rx3s2-c'\)",
        ),
        ({"dpm-ensemble": "rx3s2,rx3s2"}, "'dpm-ensemble' is 'rx3s2,rx3s2'; it must be '' or distinct"),
        (
            {"dpm-ensemble": "px3s2,rx3s2", "dpm-check-reconstructor": "rx3s2"},  # a checker the DPM has seen
            r"'dpm-check-reconstructor' is 'rx3s2'; it must be a reconstructor the DPMs are not trained against "
            r"\(dpm-ensemble is 'px3s2,rx3s2'\)",
        ),
        (
            {"dpm-ensemble": "px3s2", "dpm-ensemble-instances": 0},
            "'dpm-ensemble-instances' is 0; it must be a positive integer",
        ),
        ({"dpm-ensemble-instances": 2}, "'dpm-ensemble-instances' is 2; it must be a positive integer, and 1 when"),
        ({"dpm-warmup-epochs": -1}, "'dpm-warmup-epochs' is -1; it must be a non-negative integer"),
        ({"dpm-check-threshold": 0.0}, r"'dpm-check-threshold' is 0.0; it must be a number in \(0, 1\]"),
        ({"dpm-check-threshold": 1.5}, r"'dpm-check-threshold' is 1.5; it must be a number in \(0, 1\]"),
        ({"dpm-check-draws": 0}, "'dpm-check-draws' is 0; it must be a positive integer"),
        ({"protection": "none"}, "unknown run-config key 'protection'"),  # the DPM app composes no protections
    ],
)
def test_bad_dpm_values_name_the_key(overrides: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        DPM.schema.parse(overrides)


def test_a_window_larger_than_the_image_is_rejected() -> None:
    section = VisualMixerSection(vim_window_max=32)
    section.validate_image_shape((3, 32, 32))
    with pytest.raises(ConfigError, match="'vim-window-max' is 32; it must be at most the image size 28x28"):
        section.validate_image_shape((1, 28, 28))


@pytest.mark.parametrize("app", sorted(APPS))
def test_each_app_declares_exactly_its_schema_keys_with_its_defaults(app: str) -> None:
    declared = app_config(SIMULATIONS / app)
    schema = APPS[app].schema
    assert list(declared) == schema.declared_keys()  # Flower only accepts overrides of declared keys
    assert declared == schema.defaults()
    assert schema.parse(declared) == schema.parse({})
    # `python -m flwr_privshare.config --toml APP_DIR` prints the table the pyproject holds
    assert schema.toml() in (SIMULATIONS / app / "pyproject.toml").read_text()
    assert tomllib.loads(schema.toml())["tool"]["flwr"]["app"]["config"] == declared


def test_apps_declare_only_the_sections_they_use() -> None:
    assert not any(key.startswith("dpm-") for key in VISUALMIXER.schema.declared_keys())
    assert not any(key in VISUALMIXER.schema.declared_keys() for key in ("noise-multiplier", "clipping-norm"))
    assert "protection" not in DPM.schema.declared_keys() and "oracle-epochs" not in DPM.schema.declared_keys()


def test_the_key_reference_in_docs_is_generated_from_the_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    apps = [f"simulations/{app}" for app in ("visualmixer_cifar", "dp_fedavg_cifar", "dpm_cifar")]
    monkeypatch.chdir(DOCS.parent)  # the command is documented as run from the repository root
    stale = "docs/configuration.md is stale: python -m flwr_privshare.config " + " ".join(apps)
    assert (DOCS / "configuration.md").read_text() == reference(apps), stale


def test_a_schema_refuses_a_key_declared_twice_and_a_bad_default() -> None:
    with pytest.raises(ValueError, match="'num-server-rounds' is declared by CommonSection and CommonSection"):
        AppSchema((CommonSection, CommonSection))
    with pytest.raises(ConfigError, match="unknown run-config key 'dpm-lamda' \\(did you mean 'dpm-lambda'\\?\\)"):
        AppSchema((CommonSection, DPMSection), {"dpm-lamda": 2.0})
    with pytest.raises(ConfigError, match="'batch-size' is 0"):
        AppSchema((CommonSection,), {"batch-size": 0})


def test_the_ensemble_is_read_in_order_with_spaces_allowed() -> None:
    assert DPMSection(dpm_ensemble="rx3s2-c, px3s2").ensemble_names == ["rx3s2-c", "px3s2"]
    assert DPMSection(dpm_ensemble="").ensemble_names == []


def test_integral_floats_are_accepted_and_round_trip() -> None:
    run = VISUALMIXER.schema.parse({"batch-size": 64.0, "learning-rate": 1})
    assert run[CommonSection].batch_size == 64 and run[CommonSection].learning_rate == 1.0
    assert VISUALMIXER.schema.parse(run.to_run_config()) == run
    toml = tomllib.loads(
        "\n".join(
            f"{k} = {v!r}".replace("True", "true").replace("False", "false") for k, v in run.to_run_config().items()
        )
    )
    assert VISUALMIXER.schema.parse(toml) == run


def test_derived_seeds_are_stable_and_distinct() -> None:
    assert derive_seed(42, "visualmixer", 0) == derive_seed(42, "visualmixer", 0)
    assert derive_seed(42, "visualmixer", 0) != derive_seed(42, "visualmixer", 1)
    assert 0 <= derive_seed(1, "x") < 2**63


def test_seeded_fixes_module_initialisation_and_restores_the_global_rng() -> None:
    before = torch.random.get_rng_state()
    with seeded(derive_seed(7, "init")):
        first = torch.nn.Linear(4, 3).weight.detach().clone()
    with seeded(derive_seed(7, "init")):
        second = torch.nn.Linear(4, 3).weight.detach().clone()
    with seeded(derive_seed(8, "init")):
        other = torch.nn.Linear(4, 3).weight.detach().clone()
    assert torch.equal(first, second) and not torch.equal(first, other)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_a_parsed_run_config_is_kept_and_a_refused_one_is_refused_every_time() -> None:
    schema = AppSchema((CommonSection,))
    first = schema.parse({"batch-size": 8})
    assert schema.parse({"batch-size": 8}) is first and first[CommonSection].batch_size == 8
    assert schema.parse({"batch-size": 16})[CommonSection].batch_size == 16
    for _ in range(2):
        with pytest.raises(ConfigError, match="'batch-size' is 0"):
            schema.parse({"batch-size": 0})
