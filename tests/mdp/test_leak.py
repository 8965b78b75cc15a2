"""Leak detection: a suspect set holding a client's distorted pairs is caught; the client's original images, which
look like the modified ones, are not (their labels differ); unrelated data gives no false positive."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from flwr_privshare.data import ImageDataset
from flwr_privshare.mdp import map_distort
from flwr_privshare.mdp.leak import detect_leak, main
from flwr_privshare.models import build_model
from flwr_privshare.protections.mdp import save_record


def concat(*parts: ImageDataset) -> ImageDataset:
    return ImageDataset(
        torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]), parts[0].num_classes
    )


def write_parquet(data: ImageDataset, path: Path) -> None:
    """``data`` as a parquet file in the hub's schema (PNG bytes), as someone publishing it would store it."""
    blobs = []
    for image in data.images.permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        blobs.append({"bytes": buffer.getvalue(), "path": None})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"img": blobs, "label": data.labels.numpy()}), path)


@pytest.fixture(scope="module")
def distorted(cifar_test: ImageDataset):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return map_distort(
        cifar_test.head(48),
        build_model("cifar-cnn"),
        copies=1,
        steps=5,
        step_size=0.02,  # at most 0.1 in l2 norm: the modified images stay within the tolerance of the originals
        distance="mse",
        generator=torch.Generator().manual_seed(0),
        device=torch.device("cpu"),
    )


def test_the_distorted_pairs_are_found_among_unrelated_images(distorted, cifar_test: ImageDataset) -> None:  # type: ignore[no-untyped-def]
    leaked = distorted.data.subset(torch.arange(0, 48, 3))
    suspect = concat(cifar_test.subset(torch.arange(1000, 1300)), leaked)
    report = detect_leak(distorted.data, suspect)
    # brute force: a recorded pair is found when some leaked pair has its label and an image within the tolerance
    # (a record may hold near-twins: two targets of one class that drew the same selected image)
    record = distorted.data
    found = sum(
        any(
            int(record.labels[i]) == int(leaked.labels[j])
            and float(((record.images[i].float() - leaked.images[j].float()) / 255).square().mean().sqrt()) <= 0.02
            for j in range(len(leaked))
        )
        for i in range(len(record))
    )
    assert report.leaked and report.matched_pairs == 16 and report.matched_records == found >= 16


def test_the_clients_original_images_are_not_the_distorted_mapping(distorted, cifar_test: ImageDataset) -> None:  # type: ignore[no-untyped-def]
    originals = cifar_test.head(48)  # the selected images under their true labels
    report = detect_leak(distorted.data, originals)
    assert not report.leaked and report.matched_pairs == 0
    assert report.image_only_matches > 0  # they look like the modified images: the label is the evidence


def test_no_false_positive_on_unrelated_data(distorted, cifar_test: ImageDataset) -> None:  # type: ignore[no-untyped-def]
    report = detect_leak(distorted.data, cifar_test.subset(torch.arange(48, 2048)))
    assert not report.leaked and report.matched_pairs == 0 and report.suspect_pairs == 2000


def test_the_command_reads_a_record_and_a_published_folder(
    distorted,
    cifar_test: ImageDataset,
    tmp_path: Path,
    data_root: Path,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    record = tmp_path / "mdp-record-0.pt"
    save_record(distorted, record)
    write_parquet(
        concat(cifar_test.subset(torch.arange(100, 200)), distorted.data.head(5)), tmp_path / "s" / "train.parquet"
    )
    main([str(record), str(tmp_path / "s"), "--unrelated", str(data_root / "cifar10")])
    output = json.loads(capsys.readouterr().out)
    assert output["suspect"]["leaked"] and output["suspect"]["matched_pairs"] == 5
    assert output["unrelated"]["false_positive_rate"] == 0.0 and output["unrelated"]["suspect_pairs"] == 10000
    with pytest.raises(SystemExit):
        main([str(record), str(tmp_path / "s"), "--tolerance", "0"])
    assert "--tolerance must be in (0, 1), got 0.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(record), str(tmp_path / "missing")])
    assert "is not a folder" in capsys.readouterr().err
