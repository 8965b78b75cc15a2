"""Flower App: FedAvg on CIFAR-10 with VisualMixer-shuffled clients (or the plain baseline)."""
