"""Which pairs people should judge next: expected information from the proxy's own doubt.

Pure numpy (no torch, no Django). ``p`` holds P(same) of each candidate pair under each
proxy available (rows: versions or ensemble members, columns: pairs). The score is the
binary entropy of the mean prediction (total uncertainty) plus the mutual information
between the pair's answer and the choice of model (BALD: how much the versions disagree),
in bits. A pair every version calls 0.5 scores 1; a pair two versions call 0.05 and 0.95
scores 1 + 0.71; a pair all call 0.02 scores 0.14.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-6


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) in bits, elementwise."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def expected_information(p: np.ndarray) -> np.ndarray:
    """Per pair: H(mean p) + [H(mean p) - mean H(p)] over the rows of ``p`` (one row: the
    disagreement term is 0 and only the uncertainty counts)."""
    p = np.atleast_2d(np.asarray(p, dtype=np.float64))
    if p.size == 0:
        return np.zeros(p.shape[1] if p.ndim == 2 else 0)
    total = binary_entropy(p.mean(axis=0))
    disagreement = total - binary_entropy(p).mean(axis=0)
    return total + np.maximum(disagreement, 0.0)


def order_pairs(
    p: np.ndarray | None, n: int, *, method: str, seed: int = 0,
    logits: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of ``n`` candidates in the order people should see them: by expected
    information, highest first, or a seeded uniform permutation. Ties (every pair a
    saturated proxy reads as P = 1.0 has zero information) go by the versions' mean
    |log-odds| when ``logits`` (same shape as ``p``) is given, the least sure first, else
    by index."""
    if method == "uniform":
        return np.random.default_rng(seed).permutation(n)
    if method != "active":
        raise ValueError(f"unknown sampling method {method!r}: 'active' or 'uniform'")
    if p is None:
        raise ValueError("active sampling needs the proxies' predictions")
    info = expected_information(p)
    if info.shape[0] != n:
        raise ValueError(f"{info.shape[0]} predictions for {n} candidates")
    if logits is None:
        return np.argsort(-info, kind="stable")
    sureness = np.abs(np.atleast_2d(np.asarray(logits, dtype=np.float64))).mean(axis=0)
    if sureness.shape[0] != n:
        raise ValueError(f"{sureness.shape[0]} log-odds for {n} candidates")
    return np.lexsort((np.arange(n), sureness, -info))
