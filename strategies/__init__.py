"""Flower Message-API strategies of flwr-privshare, installed as ``flwr_privshare.strategies``."""

from .dp_fedavg import DPFedAvg
from .feature_sharing import FeatureSharing
from .recorded import Recorded, in_content_order

__all__ = ["DPFedAvg", "FeatureSharing", "Recorded", "in_content_order"]
