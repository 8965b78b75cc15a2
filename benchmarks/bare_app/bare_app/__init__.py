"""The baseline of benchmarks/scale.py: no data, no training, the same model arrays on the wire."""
