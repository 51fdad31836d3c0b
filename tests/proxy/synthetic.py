"""Tiny synthetic data for the human-proxy tests (not a test module): no DB, no shared data."""

from __future__ import annotations

import numpy as np
import torch

from models_app.proxy.config import ProxyConfig
from models_app.proxy.data import ImageBank, LabelledPair, PairTable
from models_app.proxy.network import HumanProxy

# Small enough that a training epoch takes milliseconds on a shared 2-core CPU.
TINY = ProxyConfig(
    taps=("level5", "pooled"), pool=10, cnn_channels=(4, 8), appearance_dim=8, hidden=16,
    structure=False,  # synthetic banks have pooled crops only, no photos to band-pass
)


def synthetic_bank(
    n_subjects: int = 12, per_subject: int = 3, seed: int = 0, config: ProxyConfig = TINY
) -> tuple[ImageBank, list[str]]:
    """Images whose identity features cluster by subject and whose colours differ by subject."""
    rng = np.random.default_rng(seed)
    s = config.small_size
    keys, subj, ident, small = [], [], [], []
    for k in range(n_subjects):
        centre = rng.normal(size=config.identity_dim)
        colour = rng.uniform(30, 220, size=3)
        for j in range(per_subject):
            keys.append(f"s{k:02d}/img{j}")
            subj.append(f"s{k:02d}")
            ident.append(centre + 0.3 * rng.normal(size=config.identity_dim))
            small.append(np.clip(colour[:, None, None] + 15 * rng.normal(size=(3, s, s)), 0, 255))
    small_t = torch.tensor(np.array(small), dtype=torch.float32)
    desc = HumanProxy(config).appearance.descriptors(small_t)
    bank = ImageBank(keys, torch.tensor(np.array(ident), dtype=torch.float32), small_t, desc)
    return bank, subj


def natural_pairs(bank: ImageBank, subjects: list[str], seed: int = 0) -> PairTable:
    """All same-subject pairs and as many random different-subject pairs."""
    rng = np.random.default_rng(seed)
    same, diff = [], []
    n = len(bank.keys)
    for i in range(n):
        for j in range(i + 1, n):
            (same if subjects[i] == subjects[j] else diff).append((i, j))
    pick = rng.choice(len(diff), size=min(len(same), len(diff)), replace=False)
    out = []
    for i, j in same + [diff[k] for k in pick]:
        t = float(subjects[i] == subjects[j])
        out.append(
            LabelledPair(bank.keys[i], bank.keys[j], t, 1.0, subjects[i], subjects[j], True, f"p{i}-{j}")
        )
    return PairTable(out)


def random_contexts(n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Smooth random colour images (N, 3, 300, 300) in [0, 255] (no face needed)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 10, 10, generator=g, dtype=torch.float64) * 255
    x = torch.nn.functional.interpolate(low, size=(300, 300), mode="bilinear", align_corners=False)
    x = x + 10 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x.clamp(0, 255).to(dtype)
