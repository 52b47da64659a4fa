"""Fixtures shared by the video tests."""

from __future__ import annotations

import pytest


@pytest.fixture()
def one_torch_thread():
    """torch on one CPU thread for the test: small tensors on a shared 2-core box only make OpenMP threads spin-wait."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
