"""Attacks and privacy measurements on protected data and models."""

from .oracle import oracle_recognition

__all__ = ["oracle_recognition"]
