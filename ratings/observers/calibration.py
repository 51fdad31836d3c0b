"""Fitting and scoring an observer's similarity → P(same) logistic on labelled pairs, and
reading the published human ROC curves to compare against. Pure (numpy, scipy)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def fit_logistic(similarity: Sequence[float], same: Sequence[bool]) -> tuple[float, float]:
    """(slope, intercept) maximising the likelihood of ``same`` under
    P = logistic(slope * s + intercept), with a tiny ridge so separable data stays finite."""
    from scipy.optimize import minimize

    s = np.asarray(similarity, dtype=np.float64)
    y = np.asarray(same, dtype=np.float64)
    if s.shape != y.shape or s.size < 2 or y.min() == y.max():
        raise ValueError("need both same and different pairs, as many labels as similarities")

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = theta[0] * s + theta[1]
        p = 1.0 / (1.0 + np.exp(-z))
        nll = np.sum(np.logaddexp(0.0, z) - y * z) + 1e-3 * theta[0] ** 2
        g = p - y
        return nll, np.array([g @ s + 2e-3 * theta[0], g.sum()])

    res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="BFGS")
    return float(res.x[0]), float(res.x[1])


def auc(score: Sequence[float], same: Sequence[bool]) -> float:
    """Area under the ROC curve (the probability a same pair outscores a different one)."""
    from scipy.stats import rankdata

    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    n1, n0 = y.sum(), (~y).sum()
    if not n1 or not n0:
        return float("nan")
    r = rankdata(s)
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def tenfold_accuracy(
    similarity: Sequence[float], same: Sequence[bool], fold: Sequence[int]
) -> tuple[float, float]:
    """LFW protocol accuracy: for each fold, fit the logistic on the other folds and count
    P(same) > 0.5 on it. Returns (mean, standard error) over folds."""
    s = np.asarray(similarity, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    f = np.asarray(fold)
    accs = []
    for k in np.unique(f):
        slope, intercept = fit_logistic(s[f != k], y[f != k])
        accs.append(float(np.mean(((slope * s[f == k] + intercept) > 0) == y[f == k])))
    a = np.array(accs)
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0


def roc_points(score: Sequence[float], same: Sequence[bool]) -> list[tuple[float, float]]:
    """(TPR, FPR) at every threshold, in the human files' column order."""
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    order = np.argsort(-s, kind="stable")
    tp = np.cumsum(y[order]) / max(1, y.sum())
    fp = np.cumsum(~y[order]) / max(1, (~y).sum())
    return [(0.0, 0.0)] + [(float(a), float(b)) for a, b in zip(tp, fp, strict=True)]


def read_human_roc(path: Path | str) -> np.ndarray:
    """A Kumar et al. (2009) ROC file: rows of ``TPR FPR``, as an (n, 2) array."""
    rows = [ln.split() for ln in Path(path).read_text().splitlines() if ln.strip()]
    return np.array([[float(a), float(b)] for a, b, *_ in rows])


def curve_summary(points: np.ndarray) -> dict[str, float]:
    """Best balanced accuracy and trapezoid AUC of ROC points (TPR, FPR)."""
    tpr, fpr = points[:, 0], points[:, 1]
    order = np.lexsort((tpr, fpr))
    x = np.concatenate([[0.0], fpr[order], [1.0]])
    y = np.concatenate([[0.0], tpr[order], [1.0]])
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
    return {"best_accuracy": float(np.max((tpr + 1 - fpr) / 2)), "auc": area}


def tpr_at_fpr(points: np.ndarray, fpr: float) -> float:
    """The curve's TPR at a false-positive rate (linear between points)."""
    order = np.lexsort((points[:, 0], points[:, 1]))
    x = np.concatenate([[0.0], points[order, 1], [1.0]])
    y = np.concatenate([[0.0], points[order, 0], [1.0]])
    return float(np.interp(fpr, x, np.maximum.accumulate(y)))
