"""Benchmarks check their command-line options before they run (DPM transfer overrides, GPU checks, MDP SSIM)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks.app_runs import command_line
from benchmarks.dpm_transfer import app_config, parse_override
from flwr_privshare.config import ConfigError
from flwr_privshare.poisoning.section import DPMSection


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dpm-lambda=20", ("dpm-lambda", 20)),
        ("dpm-check-threshold=0.2", ("dpm-check-threshold", 0.2)),
        ('dpm-ensemble=""', ("dpm-ensemble", "")),
        ('dpm-check-reconstructor="rx3s2"', ("dpm-check-reconstructor", "rx3s2")),
    ],
)
def test_overrides_read_toml_values(text: str, expected: tuple[str, object]) -> None:
    assert parse_override(text) == expected


@pytest.mark.parametrize("text", ["dpm-lambda", "dpm-ensemble=rx3s2", "dpm-lambda=1 2"])
def test_a_malformed_override_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"--set reads key=value with a TOML value, e\.g\. "):
        parse_override(text)


def test_overrides_replace_the_app_defaults_and_are_validated() -> None:
    default = app_config(Path("data"), 100)[DPMSection]
    assert default.ensemble_names == [] and default.dpm_check_reconstructor == "rx3s2"
    overrides = {"dpm-ensemble": "px3s2,rx3s2-c", "dpm-check-reconstructor": "rx5s2"}
    ensemble = app_config(Path("data"), 100, overrides)[DPMSection]
    assert ensemble.ensemble_names == ["px3s2", "rx3s2-c"] and ensemble.dpm_check_reconstructor == "rx5s2"
    assert ensemble.dpm_lambda == default.dpm_lambda == 5.0  # everything else stays the app's
    with pytest.raises(ConfigError, match="'dpm-ensemble' is 'rx4s2'"):
        app_config(Path("data"), 100, {"dpm-ensemble": "rx4s2"})


def test_the_command_line_writes_flags_bare_and_skips_unset_options() -> None:
    assert command_line("benchmarks.x", {"clients": 8, "no_self_check": True, "stem": ""}) == (
        "python -m benchmarks.x --clients 8 --no-self-check"
    )


def test_the_gpu_checks_refuse_to_run_without_cuda(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    import torch

    from benchmarks import gpu_checks

    def written() -> int | None:
        return gpu_checks.RESULTS.stat().st_mtime_ns if gpu_checks.RESULTS.exists() else None

    before = written()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["gpu_checks", "--data-root", str(tmp_path)])
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_checks.main()
    assert written() == before  # refused before anything ran or was written


def test_the_mdp_ssim_settings_are_checked_before_anything_trains() -> None:
    from benchmarks.mdp_ssim import parse_settings

    assert parse_settings("mse:0.1,linf:0.002") == [("mse", 0.1), ("linf", 0.002)]
    for bad in ("l2:0.1", "mse:0", "mse", "linf:x"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"'{bad}': each setting is distance:step-size"):
            parse_settings(f"mse:0.1,{bad}")
