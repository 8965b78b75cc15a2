"""Leak detection: does a suspect data set hold a client's distorted pairs? (Li et al., Sec. 1: "the leakage can be
detected if the specific distorted mapping appears".)

A client's record (written by the MDP protection into ``mdp-record-dir`` on the client's own
machine) holds its modified images and the labels they carry. A suspect pair reproduces a
distorted pair when its image is within ``tolerance`` (root-mean-square pixel difference in
[0, 1] units) of a recorded modified image *and* its label is that image's target label; the
image alone is not evidence, since a modified image looks like an ordinary image of another
class. The pair-level false-positive rate is measured on data known to be unrelated.

    privshare-mdp-leak RECORD.pt SUSPECT_DIR [--split train] [--unrelated DIR] [--tolerance 0.02]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..data import DataError, ImageDataset, load_split

#: The default match tolerance: RMS pixel difference of 0.02 (about 5 grey levels), far above a uint8 or PNG
#: round trip (at most 0.002) and far below the distance between two different natural images.
DEFAULT_TOLERANCE = 0.02


@dataclass(frozen=True)
class LeakReport:
    """What :func:`detect_leak` found.

    Attributes:
        suspect_pairs: pairs in the suspect data set.
        record_pairs: distorted pairs in the client's record.
        matched_pairs: suspect pairs that reproduce a distorted pair (image within tolerance, target label).
        matched_records: distinct distorted pairs found.
        image_only_matches: suspect images within tolerance of a modified image but under another label.
        tolerance: the RMS pixel tolerance used.
        leaked: whether at least ``min_matches`` distorted pairs appear.
    """

    suspect_pairs: int
    record_pairs: int
    matched_pairs: int
    matched_records: int
    image_only_matches: int
    tolerance: float
    leaked: bool


def load_record(path: str | Path) -> ImageDataset:
    """A client's MDP record as a data set: its modified images with the labels they carry."""
    record = torch.load(Path(path).expanduser(), weights_only=True)
    return ImageDataset(record["images"], record["labels"], int(record["num_classes"]))


def nearest_distances(
    suspect: ImageDataset, record: ImageDataset, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per suspect image, the RMS pixel distance to the nearest record image with the same label, and to the
    nearest record image of any label (both ``(len(suspect),)``), computed in chunks of suspect images."""
    if suspect.image_shape != record.image_shape:
        raise DataError(f"the suspect images are {suspect.image_shape}, the record's {record.image_shape}")
    pixels = float(torch.tensor(record.image_shape).prod())
    reference = record.images.flatten(1).float().div_(255.0)
    same_label, any_label = [], []
    for begin in range(0, len(suspect), chunk_size):
        images = suspect.images[begin : begin + chunk_size].flatten(1).float().div_(255.0)
        distances = torch.cdist(images, reference).div_(pixels**0.5)
        any_label.append(distances.min(dim=1).values)
        other = suspect.labels[begin : begin + chunk_size, None] != record.labels[None, :]
        same_label.append(distances.masked_fill_(other, float("inf")).min(dim=1).values)
    return torch.cat(same_label), torch.cat(any_label)


def detect_leak(
    record: ImageDataset, suspect: ImageDataset, *, tolerance: float = DEFAULT_TOLERANCE, min_matches: int = 1
) -> LeakReport:
    """Whether ``suspect`` holds at least ``min_matches`` of the distorted pairs in ``record``."""
    if tolerance <= 0 or min_matches < 1:
        raise ValueError(f"tolerance must be positive and min_matches at least 1, got {tolerance} and {min_matches}")
    if len(record) == 0 or len(suspect) == 0:
        raise DataError(f"empty data: the record has {len(record)} pairs, the suspect set {len(suspect)}")
    same_label, any_label = nearest_distances(suspect, record)
    matched = same_label <= tolerance
    found = _matched_records(suspect.subset(torch.nonzero(matched).flatten()), record, tolerance)
    return LeakReport(
        suspect_pairs=len(suspect),
        record_pairs=len(record),
        matched_pairs=int(matched.sum()),
        matched_records=found,
        image_only_matches=int(((any_label <= tolerance) & ~matched).sum()),
        tolerance=tolerance,
        leaked=int(matched.sum()) >= min_matches,
    )


def _matched_records(matches: ImageDataset, record: ImageDataset, tolerance: float) -> int:
    """How many distinct record pairs the matching suspect pairs reproduce."""
    if len(matches) == 0:
        return 0
    same_label, _ = nearest_distances(record, matches)
    return int((same_label <= tolerance).sum())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privshare-mdp-leak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("record", help="a client's record (mdp-record-<partition>.pt from its mdp-record-dir)")
    parser.add_argument("suspect", help="a data folder (parquet, the Hugging Face schema) to search")
    parser.add_argument("--split", default="train", help="the suspect folder's split (default: train)")
    parser.add_argument("--unrelated", default="", help="a data folder known to be unrelated: measures the FPR")
    parser.add_argument("--unrelated-split", default="test", help="its split (default: test)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="RMS pixel tolerance in [0, 1]")
    parser.add_argument("--min-matches", type=int, default=1, help="distorted pairs needed to say 'leaked'")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.tolerance < 1:
        parser.error(f"--tolerance must be in (0, 1), got {args.tolerance}")
    if args.min_matches < 1:
        parser.error(f"--min-matches must be at least 1, got {args.min_matches}")
    if not Path(args.record).expanduser().is_file():
        parser.error(f"record {args.record} is not a file")
    try:
        record = load_record(args.record)
        suspect = load_split("", args.split, args.suspect)
        unrelated = load_split("", args.unrelated_split, args.unrelated) if args.unrelated else None
        report = detect_leak(record, suspect, tolerance=args.tolerance, min_matches=args.min_matches)
        output = {"suspect": asdict(report)}
        if unrelated is not None:
            control = detect_leak(record, unrelated, tolerance=args.tolerance, min_matches=args.min_matches)
            output["unrelated"] = asdict(control) | {
                "false_positive_rate": control.matched_pairs / control.suspect_pairs
            }
    except (DataError, KeyError, RuntimeError) as error:
        parser.error(str(error))
    print(json.dumps(output, indent=1))
