"""Run-config validation: bad input names the key and what is allowed, before any work."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from flwr_privshare.config import ConfigError, ExperimentConfig, derive_seed, seeded

SIMULATIONS = Path(__file__).resolve().parents[1] / "simulations"


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (
            {"vim-window-min": 8, "vim-window-max": 4},
            "'vim-window-min' is 8; it must be at most vim-window-max",
        ),
        ({"vim-window-min": 3}, "'vim-window-min' is 3; it must be a power of two"),
        ({"vim-window-max": 12}, "'vim-window-max' is 12; it must be a power of two"),
        (
            {"optimizer": "rmsprop"},
            r"'optimizer' is 'rmsprop'; it must be one of \('sgd', 'adam', 'st-adam'\)",
        ),
        ({"protection": "magic"}, "'protection' is 'magic'; it must be one of"),
        ({"noise-multiplier": 0.0}, "'noise-multiplier' is 0.0; it must be a positive number"),
        ({"max-grad-norm": -1.0}, "'max-grad-norm' is -1.0; it must be a positive number"),
        ({"clipping-norm": 0}, "'clipping-norm' is 0.0; it must be a positive number"),
        ({"delta": 1.0}, r"'delta' is 1.0; it must be a number in \(0, 1\)"),
        ({"target-epsilon": -3.0}, "'target-epsilon' is -3.0; it must be non-negative"),
        ({"dp-accountant": "gdp"}, "'dp-accountant' is 'gdp'; it must be one of"),
        ({"dp-clipping": "both"}, "'dp-clipping' is 'both'; it must be one of"),
        ({"dpm-lambda": -1.0}, "'dpm-lambda' is -1.0; it must be a non-negative number"),
        ({"dpm-feature-noise": -0.3}, "'dpm-feature-noise' is -0.3; it must be a non-negative number"),
        (
            {"dpm-check-reconstructor": "rx4s2"},  # audited as unseen, so it cannot also be the clients' check
            r"'dpm-check-reconstructor' is 'rx4s2'; it must be one of \('rx3s2', 'rx5s2'\) or '' \(no self-check\)",
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
            r"'dpm-ensemble-instances' is 0; it must be a positive integer, and 1 when dpm-ensemble is ''",
        ),
        ({"dpm-ensemble-instances": 2}, "'dpm-ensemble-instances' is 2; it must be a positive integer, and 1 when"),
        ({"dpm-warmup-epochs": -1}, "'dpm-warmup-epochs' is -1; it must be a non-negative integer"),
        ({"dpm-check-threshold": 0.0}, r"'dpm-check-threshold' is 0.0; it must be a number in \(0, 1\]"),
        ({"dpm-check-threshold": 1.5}, r"'dpm-check-threshold' is 1.5; it must be a number in \(0, 1\]"),
        ({"dpm-check-draws": 0}, "'dpm-check-draws' is 0; it must be a positive integer"),
        ({"partitioner": "shards"}, "'partitioner' is 'shards'; it must be one of"),
        ({"num-server-rounds": 0}, "'num-server-rounds' is 0; it must be a positive integer"),
        ({"local-epochs": -1}, "'local-epochs' is -1; it must be a positive integer"),
        ({"batch-size": 0}, "'batch-size' is 0; it must be a positive integer"),
        ({"learning-rate": 0.0}, "'learning-rate' is 0.0; it must be a positive number"),
        ({"fraction-train": 1.5}, "'fraction-train' is 1.5; it must be a number in"),
        ({"samples-per-client": -5}, "'samples-per-client' is -5; it must be a non-negative integer"),
        ({"batch-size": "32"}, "'batch-size' is '32'; it must be of type int"),
        ({"num-rounds": 3}, r"unknown run-config key\(s\) \['num-rounds'\]"),
    ],
)
def test_bad_values_name_the_key(overrides: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        ExperimentConfig.from_run_config(overrides)


def test_window_larger_than_the_image_is_rejected() -> None:
    config = ExperimentConfig.from_run_config({"vim-window-max": 32})
    config.validate_image_shape((3, 32, 32))
    with pytest.raises(ConfigError, match="'vim-window-max' is 32; it must be at most the image size 28x28"):
        config.validate_image_shape((1, 28, 28))


@pytest.mark.parametrize(
    ("app", "differences"),
    [
        ("visualmixer_cifar", {}),
        ("dp_fedavg_cifar", {"protection": "dp-fedavg", "oracle-epochs": 0}),
        (
            "dpm_cifar",
            {
                "protection": "none",
                "oracle-epochs": 0,
                "num-server-rounds": 3,
                "dpm-lambda": 5.0,
                "dpm-feature-noise": 0.3,
                "dpm-check-reconstructor": "rx3s2",
                "dpm-warmup-epochs": 2,
                "dpm-check-threshold": 0.1,
            },
        ),
    ],
)
def test_app_defaults_match_the_library_defaults(app: str, differences: dict[str, object]) -> None:
    app_config = tomllib.loads((SIMULATIONS / app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert set(app_config) == set(ExperimentConfig.keys())  # Flower only accepts overrides of listed keys
    parsed = ExperimentConfig.from_run_config(app_config)
    assert parsed == ExperimentConfig.from_run_config(differences)


def test_the_ensemble_is_read_in_order_with_spaces_allowed() -> None:
    assert ExperimentConfig.from_run_config({"dpm-ensemble": "rx3s2-c, px3s2"}).ensemble_names == ["rx3s2-c", "px3s2"]
    assert ExperimentConfig.from_run_config({"dpm-ensemble": ""}).ensemble_names == []


def test_integral_floats_are_accepted_and_round_trip() -> None:
    config = ExperimentConfig.from_run_config({"batch-size": 64.0, "learning-rate": 1})
    assert config.batch_size == 64 and config.learning_rate == 1.0
    assert ExperimentConfig.from_run_config(config.to_run_config()) == config


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
