"""Flower App: FedAvg on CIFAR-10 with client DP-SGD or user-level DP-FedAvg, and the plain baseline."""
