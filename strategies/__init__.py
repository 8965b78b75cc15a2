"""Flower Message-API strategies of flwr-privshare, installed as ``flwr_privshare.strategies``."""

from .dp_fedavg import DPFedAvg
from .recorded_fedavg import RecordedFedAvg

__all__ = ["DPFedAvg", "RecordedFedAvg"]
