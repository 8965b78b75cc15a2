"""Flower App: feature sharing with Deep Poisoning Modules, the classifier head refined on poisoned features."""
