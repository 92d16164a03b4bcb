from __future__ import annotations

import pytest
import torch

from mgas_bench.registry import Registry, build_registry

# Tiny tensors gain nothing from a second thread, and OpenMP threads that spin
# while another process holds the other core make steps many times slower.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def registry() -> Registry:
    return build_registry()
