"""A tiny protection defined and registered outside the library: clients train on colour-inverted images."""

from typing import Any

from flwr.app import Context
from flwr.serverapp.strategy import Result, Strategy

from flwr_privshare.apps import FedAvgExperiment
from flwr_privshare.data import ImageDataset
from flwr_privshare.models import ImageClassifier
from flwr_privshare.protections import Protection, ProtectionSection, register_protection


def inverted(data: ImageDataset) -> ImageDataset:
    return ImageDataset(255 - data.images, data.labels, data.num_classes)


@register_protection
class InvertColours(Protection):
    """Every client inverts its images; the server evaluates on the inverted test set too."""

    name = "invert"

    def client_data(
        self, data: ImageDataset, context: Context, model: ImageClassifier
    ) -> tuple[ImageDataset, dict[str, float]]:
        return inverted(data), {"inverted-mean": float(255 - data.images.float().mean())}

    def test_sets(self, test: ImageDataset) -> dict[str, ImageDataset]:
        return {"inverted": inverted(test)}

    def report(self, strategy: Strategy, result: Result) -> dict[str, Any]:
        return {"rounds_seen": len(result.train_metrics_clientapp)}


EXPERIMENT = FedAvgExperiment(ProtectionSection, defaults={"protection": "invert", "num-server-rounds": 1})
