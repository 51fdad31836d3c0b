"""Fixtures of the de-identification engine tests: pure computation, no database."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch


def portrait_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@lru_cache(maxsize=1)
def _portrait_source():
    from PIL import Image

    from models_app.deid.state import prepare_source

    with Image.open(portrait_path()) as im:
        rgb = np.asarray(im.convert("RGB"))
    src = prepare_source(rgb)
    assert src is not None, "no face in the packaged portrait"
    return src


@pytest.fixture
def portrait_source():
    """A real face shipped with matplotlib (always available): photo, box, landmarks, crop."""
    return _portrait_source()


@pytest.fixture
def synthetic_context() -> np.ndarray:
    """A smooth random 300x300 image (no face needed for the loop's mechanics)."""
    rng = np.random.default_rng(0)
    low = rng.uniform(40, 215, size=(10, 10, 3))
    img = np.kron(low, np.ones((30, 30, 1))) + rng.normal(0, 8, size=(300, 300, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


class TinyCFRU(torch.nn.Module):
    """A small stand-in for the dlib ResNet port with the same ``features`` interface, so the
    loop's mechanics tests run in seconds (the real network is used where numbers matter)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.stem = torch.nn.Conv2d(3, 8, 5, stride=4)
        self.level1 = torch.nn.Conv2d(8, 16, 3, stride=2)
        self.level2 = torch.nn.Conv2d(16, 16, 3, stride=2)
        self.fc = torch.nn.Linear(16, 128)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.1
        self.requires_grad_(False)

    def features(self, chips: torch.Tensor, taps: bool = True):
        x = torch.relu(self.stem(chips / 255.0 - 0.5))
        a = torch.relu(self.level1(x))
        b = torch.relu(self.level2(a))
        emb = self.fc(b.mean(dim=(2, 3)))
        return emb, {"stem": x, "level1": a, "level2": b}

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return self.features(chips)[0]


@pytest.fixture
def tiny_cfru() -> TinyCFRU:
    return TinyCFRU()
