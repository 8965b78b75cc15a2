"""The learned inversion of VisualMixer on a real run folder: it restores small windows, it is scored
against the originals, and it writes its report and figure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from flwr_privshare.attacks.cli import main
from flwr_privshare.attacks.inversion import InversionUNet, similarity
from flwr_privshare.report import write_report

from ..experiments import VISUALMIXER
from ..golden import PLAIN_LOOP
from ..inprocess import run_in_process

# A VisualMixer run with the smallest windows (2-4) on CIFAR-10; the attacker trains on 1,000 public images.
SMALL_WINDOWS = {
    **PLAIN_LOOP,
    "protection": "visualmixer",
    "vim-window-min": 2,
    "vim-window-max": 4,
    "num-server-rounds": 1,
    "samples-per-client": 100,
    "public-size": 1000,
    "test-size": 200,
    "oracle-epochs": 0,
}


@pytest.fixture(scope="module")
def inverted(tmp_path_factory: pytest.TempPathFactory, data_root: Path) -> Path:
    root = tmp_path_factory.mktemp("inversion")
    config = {**SMALL_WINDOWS, "data-dir": str(data_root / "cifar10"), "output-dir": str(root), "run-name": "vm"}
    run_in_process(VISUALMIXER, 2, config)
    folder = root / "vm"
    main([str(folder), "--attack", "inversion", "--inversion-epochs", "4", "--inversion-images", "100"])
    return folder


def test_the_inversion_restores_images_shuffled_in_small_windows(inverted: Path) -> None:
    report = json.loads((inverted / "attacks" / "inversion.json").read_text())
    assert report["windows"] == [2, 4]
    for view in ("client_data", "test"):
        shuffled, restored = report[view]["shuffled"], report[view]["inverted"]
        assert restored["ssim"] > shuffled["ssim"] + 0.1, (view, report[view])
        assert restored["psnr"] > shuffled["psnr"], (view, report[view])
    test = report["test"]
    assert 0.0 <= test["shuffled"]["oracle_accuracy"] <= 1.0 and 0.0 <= test["inverted"]["oracle_accuracy"] <= 1.0
    assert test["original"]["oracle_accuracy"] > 0.2  # the oracle recognises plain images above chance (0.1)
    assert (inverted / "attacks" / "inversion_examples.png").is_file()


def test_the_same_folder_and_options_give_the_same_report(inverted: Path, tmp_path: Path) -> None:
    """A second attack on a copy of the run replaces its report with an equal one (short attacks: the
    determinism does not depend on how long the attacker trains)."""
    folder = tmp_path / inverted.name
    shutil.copytree(inverted, folder, ignore=shutil.ignore_patterns("attacks"))
    short = [
        "--attack",
        "inversion",
        "--inversion-epochs",
        "1",
        "--inversion-images",
        "32",
        "--inversion-oracle-epochs",
        "1",
    ]
    reports = []
    for _ in range(2):
        main([str(folder), *short])
        reports.append(json.loads((folder / "attacks" / "inversion.json").read_text()))
    first, second = ({k: report[k] for k in ("client_data", "test")} for report in reports)
    assert first == second and first["test"]["inverted"]["ssim"] != first["test"]["shuffled"]["ssim"]


def test_similarity_is_perfect_for_the_originals_and_psnr_has_its_closed_form() -> None:
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert similarity(images, images)["ssim"] == pytest.approx(1.0, abs=1e-5)
    shifted = (images.int() + 10).clamp(max=255).to(torch.uint8)
    mse = ((shifted.float() - images.float()) / 255).pow(2).flatten(1).mean(dim=1)
    assert similarity(shifted, images)["psnr"] == pytest.approx(float((10 * torch.log10(1 / mse)).mean()), rel=1e-5)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 112, 92)])
def test_the_network_keeps_the_image_shape(shape: tuple[int, int, int]) -> None:
    with torch.no_grad():
        output = InversionUNet(shape[0])(torch.rand(2, *shape))
    assert output.shape == (2, *shape) and float(output.min()) >= 0.0 and float(output.max()) <= 1.0


def test_the_report_shows_the_inversion(inverted: Path, tmp_path: Path) -> None:
    write_report([inverted], tmp_path / "report")
    test = json.loads((inverted / "attacks" / "inversion.json").read_text())["test"]
    table = (tmp_path / "report.md").read_text()
    assert "inversion SSIM: shuffled -> inverted" in table
    assert f"{test['shuffled']['ssim']:.2f} -> {test['inverted']['ssim']:.2f}" in table
