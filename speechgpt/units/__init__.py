"""Discrete speech units: k-means quantizers over encoder features and run-length helpers."""
