"""The common section: data, partitioning, training, model, seed and output of every app."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..data.partitions import PARTITIONERS
from ..models import MODEL_NAMES, model_name_for
from ..train import OPTIMIZERS
from .checks import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, SEED, FolderName, Interval, one_of, require
from .section import Section, setting


@dataclass(frozen=True)
class CommonSection(Section):
    """Data, partitioning, local training, model, seed and output: the keys every app declares."""

    title = "Common"

    num_server_rounds: int = setting(5, "federated rounds", POSITIVE_INT)
    local_epochs: int = setting(1, "epochs per client per round", POSITIVE_INT)
    batch_size: int = setting(32, "client batch size", POSITIVE_INT)
    learning_rate: float = setting(0.05, "client learning rate", POSITIVE)
    optimizer: str = setting(
        "sgd", "client optimizer (sgd with momentum 0.9, adam, or VisualMixer's st-adam)", one_of(OPTIMIZERS)
    )
    model: str = setting("auto", '"auto" picks the CNN for the image shape', one_of(("auto", *MODEL_NAMES)))
    dataset: str = setting("uoft-cs/cifar10", "Hugging Face hub id, used when data-dir is empty")
    data_dir: str = setting("", "local folder with train.parquet and test.parquet (absolute path with flwr run)")
    partitioner: str = setting(
        "iid", "how the private rows are split over clients (flwr-datasets)", one_of(PARTITIONERS)
    )
    dirichlet_alpha: float = setting(0.5, "concentration of the Dirichlet partitioner", POSITIVE)
    seed: int = setting(42, "fixes partitions, client sampling, initialisation and every RNG", SEED)
    output_dir: str = setting(
        "~/flwr-privshare-results", "folder that receives the run folder (absolute path with flwr run)"
    )
    run_name: str = setting(
        "",
        'name of the run folder ("": <method>-<data set>-s<seed>-<UTC time>)',
        FolderName("a folder name without '/' (or '' for a generated one)"),
    )
    fraction_train: float = setting(
        1.0, "fraction of clients sampled per round", Interval("a number in (0, 1]", 0, 1, low_open=True)
    )
    public_size: int = setting(5000, "training rows kept for the server (never given to a client)", NON_NEGATIVE_INT)
    samples_per_client: int = setting(0, "cap on each client's partition (0: no cap)", NON_NEGATIVE_INT)
    test_size: int = setting(0, "cap on the test rows of central evaluation (0: all)", NON_NEGATIVE_INT)
    round_timeout: float = setting(
        3600.0, 'seconds a round waits for replies; a client that has not answered fails with "timeout"', POSITIVE
    )
    resume: bool = setting(False, "continue the unfinished run of this config from its last round checkpoint")

    def validate(self) -> None:
        require(bool(self.dataset or self.data_dir), "dataset", self.dataset, "a hub id when data-dir is empty")
        require(bool(self.output_dir), "output-dir", self.output_dir, "a folder path")

    def model_for(self, image_shape: tuple[int, int, int]) -> str:
        """The model name: ``model``, or the CNN for ``image_shape`` when ``model = "auto"``."""
        return self.model if self.model != "auto" else model_name_for(image_shape)

    @property
    def dataset_label(self) -> str:
        """The data set's short name: the data folder's name, or the hub id's last part."""
        return Path(self.data_dir).name if self.data_dir else self.dataset.split("/")[-1]

    def run_name_for(self, method: str) -> str:
        """``run-name``, or ``<method>-<data set>-s<seed>-<UTC time>``."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        return self.run_name or f"{self.generated_name_prefix(method)}{stamp}"

    def generated_name_prefix(self, method: str) -> str:
        """The part of a generated run name before its time stamp (a resume looks for unfinished runs by it)."""
        return f"{method}-{self.dataset_label}-s{self.seed}-"
