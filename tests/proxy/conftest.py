"""One torch thread for these tiny tensors: on a shared CPU, thread hand-offs cost more
than the arithmetic (milliseconds per op instead of microseconds)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
