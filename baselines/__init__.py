"""Baseline NAS methods and the architectures they produce."""
