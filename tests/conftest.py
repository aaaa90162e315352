"""Fixtures shared by the unit tests."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one intra-op thread is much faster than two contended ones on the shared CI cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
