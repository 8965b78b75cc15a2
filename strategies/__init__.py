"""Flower Message-API strategies of flwr-privshare, installed as ``flwr_privshare.strategies``."""

from .recorded_fedavg import RecordedFedAvg

__all__ = ["RecordedFedAvg"]
