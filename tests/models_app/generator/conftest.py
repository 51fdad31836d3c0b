"""Fixtures of the generator tests: the engine tests' stand-ins (a tiny CFRU) and faces."""

from __future__ import annotations

import numpy as np
import pytest

from tests.deid.conftest import TinyCFRU, portrait_source  # noqa: F401


def synthetic_faces(n: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random 300x300 images (the training mechanics need no real face)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        low = rng.uniform(40, 215, size=(10, 10, 3))
        img = np.kron(low, np.ones((30, 30, 1))) + rng.normal(0, 8, size=(300, 300, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


@pytest.fixture
def tiny_cfru() -> TinyCFRU:
    return TinyCFRU()
