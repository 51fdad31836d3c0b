"""Quality of a human-proxy version against people: AUC, accuracy, Brier score, expected
calibration error with a reliability diagram, and agreement with the human majority set
beside the human ceiling (each rater's leave-one-rater-out agreement with the others).

Conventions: ``probs`` are P(same) in [0, 1]; ``targets`` are soft human score-A in [0, 1]
(fraction of "same" answers); the human majority label is ``target > 0.5`` and pairs with an
exact tie (0.5) are left out of the majority-based metrics, since there is no majority.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A judgments row: (pair_id, rater_id, same). Any 3-sequence or a mapping with those keys.
Judgment = Sequence | Mapping


def _arr(x, dtype=np.float64) -> np.ndarray:
    return np.asarray(x, dtype=dtype).reshape(-1)


def _weights(w, n: int) -> np.ndarray:
    return np.ones(n) if w is None else _arr(w)


def majority_mask(targets) -> np.ndarray:
    """Pairs that have a majority (target != 0.5)."""
    return np.abs(_arr(targets) - 0.5) > 1e-9


def roc_auc(probs, labels, weights=None) -> float:
    """Area under the ROC curve (weighted Mann-Whitney; ties count half); NaN when only one
    class is present. Written out rather than imported: scikit-learn takes seconds to import."""
    p, y = _arr(probs), _arr(labels) > 0.5
    w = _weights(weights, len(p))
    wp, wn = w[y].sum(), w[~y].sum()
    if wp <= 0 or wn <= 0:
        return float("nan")
    scores, inv = np.unique(p, return_inverse=True)
    pos = np.bincount(inv, weights=w * y, minlength=len(scores))
    neg = np.bincount(inv, weights=w * ~y, minlength=len(scores))
    below = np.cumsum(neg) - neg  # negative weight strictly below each score
    return float(np.sum(pos * (below + 0.5 * neg)) / (wp * wn))


def auc_interval(
    probs, labels, weights=None, n_boot: int = 500, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of :func:`roc_auc` over pairs (resampled with their
    weights); None when fewer than two pairs of each class. Pairs share subjects, so this
    is narrower than a subject-level interval would be: a floor on the uncertainty."""
    p, y = _arr(probs), _arr(labels) > 0.5
    w = _weights(weights, len(p))
    if y.sum() < 2 or (~y).sum() < 2:
        return None
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        i = rng.integers(0, len(p), len(p))
        a = roc_auc(p[i], y[i], w[i])
        if not math.isnan(a):
            stats.append(a)
    if not stats:
        return None
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def paired_difference_intervals(
    candidate, reference, targets, weights=None, n_boot: int = 1000, seed: int = 0,
    level: float = 0.95, candidate_scores=None, reference_scores=None,
) -> dict[str, tuple[float, float] | None]:
    """Percentile bootstrap intervals of (candidate − reference) for AUC and Brier against
    the majority (tied pairs left out), resampling the same pairs for both models, so what
    the two share (the pairs' difficulty) cancels. An AUC interval is None when fewer than
    two pairs of each class; a Brier interval when no pair has a majority. ``*_scores``:
    what each AUC ranks by (the log-odds; see :func:`evaluate_probs`)."""
    c, r, t = _arr(candidate), _arr(reference), _arr(targets)
    cs = c if candidate_scores is None else _arr(candidate_scores)
    rs = r if reference_scores is None else _arr(reference_scores)
    w = _weights(weights, len(c))
    m = majority_mask(t)
    c, r, cs, rs, w, y = c[m], r[m], cs[m], rs[m], w[m], t[m] > 0.5
    out: dict[str, tuple[float, float] | None] = {"auc": None, "brier": None}
    if len(c) == 0:
        return out
    rng = np.random.default_rng(seed)
    d_auc, d_brier = [], []
    for _ in range(n_boot):
        i = rng.integers(0, len(c), len(c))
        d_brier.append(brier(c[i], y[i], w[i]) - brier(r[i], y[i], w[i]))
        d = roc_auc(cs[i], y[i], w[i]) - roc_auc(rs[i], y[i], w[i])
        if not math.isnan(d):
            d_auc.append(d)
    q = [(1 - level) / 2, (1 + level) / 2]
    if y.sum() >= 2 and (~y).sum() >= 2 and d_auc:
        lo, hi = np.quantile(d_auc, q)
        out["auc"] = (float(lo), float(hi))
    lo, hi = np.quantile(d_brier, q)
    out["brier"] = (float(lo), float(hi))
    return out


def accuracy(probs, labels, weights=None, threshold: float = 0.5) -> float:
    p, y = _arr(probs), _arr(labels) > 0.5
    w = _weights(weights, len(p))
    if len(p) == 0 or w.sum() <= 0:
        return float("nan")
    return float(np.sum(w * ((p > threshold) == y)) / w.sum())


def brier(probs, targets, weights=None) -> float:
    """Mean squared error of P(same) against targets (0/1 labels or soft score-A)."""
    p, t = _arr(probs), _arr(targets)
    w = _weights(weights, len(p))
    if len(p) == 0 or w.sum() <= 0:
        return float("nan")
    return float(np.sum(w * (p - t) ** 2) / w.sum())


def log_loss(probs, targets, weights=None, eps: float = 1e-7) -> float:
    p, t = np.clip(_arr(probs), eps, 1 - eps), _arr(targets)
    w = _weights(weights, len(p))
    if len(p) == 0 or w.sum() <= 0:
        return float("nan")
    return float(-np.sum(w * (t * np.log(p) + (1 - t) * np.log(1 - p))) / w.sum())


@dataclass
class Reliability:
    """Equal-width bins over [0, 1]: count, mean predicted P, observed frequency per bin."""

    edges: list[float]
    counts: list[float]
    mean_prob: list[float]
    frequency: list[float]
    ece: float

    def to_dict(self) -> dict:
        return {
            "edges": self.edges,
            "counts": self.counts,
            "mean_prob": self.mean_prob,
            "frequency": self.frequency,
            "ece": self.ece,
        }


def reliability(probs, targets, weights=None, n_bins: int = 10) -> Reliability:
    """Reliability table and expected calibration error: sum over bins of
    (weight share) x |observed frequency - mean predicted probability|.

    ``targets`` may be soft (the observed frequency is then the mean score-A)."""
    p, t = _arr(probs), _arr(targets)
    w = _weights(weights, len(p))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    counts, mp, fr = [], [], []
    ece, total = 0.0, w.sum()
    for b in range(n_bins):
        m = idx == b
        wb = w[m].sum()
        counts.append(float(wb))
        if wb > 0:
            mpb, frb = float(np.sum(w[m] * p[m]) / wb), float(np.sum(w[m] * t[m]) / wb)
            ece += wb / total * abs(frb - mpb)
        else:
            mpb = frb = float("nan")
        mp.append(mpb)
        fr.append(frb)
    return Reliability(
        [float(e) for e in edges], counts, mp, fr, float(ece) if total > 0 else float("nan")
    )


def expected_calibration_error(probs, targets, weights=None, n_bins: int = 10) -> float:
    return reliability(probs, targets, weights, n_bins).ece


def reliability_diagram_png(
    probs,
    targets,
    path: str | Path | None = None,
    weights=None,
    n_bins: int = 10,
    title: str = "Human proxy: reliability",
) -> bytes:
    """A reliability diagram as PNG bytes (also written to ``path`` when given).

    Uses matplotlib's object API with the Agg canvas: no pyplot global state, safe in a
    worker process and without a display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rel = reliability(probs, targets, weights, n_bins)
    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    centres = [(rel.edges[i] + rel.edges[i + 1]) / 2 for i in range(n_bins)]
    freq = [0.0 if np.isnan(f) else f for f in rel.frequency]
    ax.bar(centres, freq, width=1.0 / n_bins, edgecolor="black", alpha=0.6, label="observed")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ok = [i for i in range(n_bins) if rel.counts[i] > 0]
    ax.plot(
        [rel.mean_prob[i] for i in ok],
        [rel.frequency[i] for i in ok],
        "o-",
        color="C3",
        label="mean P per bin",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(same)")
    ax.set_ylabel("human score-A (fraction 'same')")
    ax.set_title(f"{title}\nECE = {rel.ece:.3f}, n = {len(_arr(probs))}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


# --------------------------------------------------------------------------------------------
# Judgments: majority, human ceiling, proxy agreement.
# --------------------------------------------------------------------------------------------


def _rows(judgments: Iterable[Judgment]) -> list[tuple[str, str, bool]]:
    out = []
    for j in judgments:
        if isinstance(j, Mapping):
            out.append((str(j["pair_id"]), str(j["rater_id"]), bool(j["same"])))
        else:
            pid, rid, same = j
            out.append((str(pid), str(rid), bool(same)))
    return out


def _by_pair(rows: list[tuple[str, str, bool]]) -> dict[str, list[tuple[str, bool]]]:
    d: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for pid, rid, same in rows:
        d[pid].append((rid, same))
    return d


def majority(judgments: Iterable[Judgment]) -> dict[str, bool]:
    """Majority answer per pair ("same" = True); tied pairs are left out."""
    out = {}
    for pid, votes in _by_pair(_rows(judgments)).items():
        n_same = sum(s for _, s in votes)
        if 2 * n_same != len(votes):
            out[pid] = 2 * n_same > len(votes)
    return out


def score_a(judgments: Iterable[Judgment]) -> dict[str, float]:
    """Human score-A per pair: the (unweighted) fraction of "same" answers."""
    return {
        pid: sum(s for _, s in votes) / len(votes)
        for pid, votes in _by_pair(_rows(judgments)).items()
    }


def _others_majority(n: int, n_same: int, same: bool) -> bool | None:
    """The majority answer ("same" = True) of a pair's other raters, leaving out one whose
    answer is ``same`` (of ``n`` answers, ``n_same`` "same"); None when they tie or nobody
    else answered."""
    n_other, n_other_same = n - 1, n_same - int(same)
    if n_other == 0 or 2 * n_other_same == n_other:
        return None
    return 2 * n_other_same > n_other


def human_ceiling(judgments: Iterable[Judgment]) -> dict:
    """Leave-one-rater-out agreement: each rater's answers against the majority of the
    other raters on the same pairs (pairs where the others tie or nobody else answered are
    skipped). Returns the mean over raters (each rater counts once), the pooled agreement
    over all (rater, pair) comparisons, and per-rater figures."""
    by_pair = _by_pair(_rows(judgments))
    hits: dict[str, list[bool]] = defaultdict(list)
    for votes in by_pair.values():
        n, n_same = len(votes), sum(s for _, s in votes)
        for rid, same in votes:
            others = _others_majority(n, n_same, same)
            if others is not None:
                hits[rid].append(same == others)
    per_rater = {r: float(np.mean(h)) for r, h in hits.items() if h}
    pooled = [x for h in hits.values() for x in h]
    return {
        "mean_rater_agreement": float(np.mean(list(per_rater.values())))
        if per_rater
        else float("nan"),
        "pooled_agreement": float(np.mean(pooled)) if pooled else float("nan"),
        "n_raters": len(per_rater),
        "n_comparisons": len(pooled),
        "per_rater": per_rater,
    }


def proxy_agreement(probs: Mapping[str, float], judgments: Iterable[Judgment]) -> dict:
    """The proxy's answer (P > 0.5) against people.

    ``vs_majority``: agreement with the majority of all raters (tied pairs skipped);
    ``vs_leave_one_out``: the proxy scored exactly like one more rater in
    :func:`human_ceiling` (against each rater-left-out majority, averaged per left-out rater
    group), so it is directly comparable with the human ceiling.
    """
    rows = _rows(judgments)
    maj = majority(rows)
    common = [pid for pid in maj if pid in probs]
    vs_maj = (
        float(np.mean([(probs[p] > 0.5) == maj[p] for p in common])) if common else float("nan")
    )
    loo: list[bool] = []
    for pid, votes in _by_pair(rows).items():
        if pid not in probs:
            continue
        n, n_same = len(votes), sum(s for _, s in votes)
        for _, same in votes:
            others = _others_majority(n, n_same, same)
            if others is not None:
                loo.append((probs[pid] > 0.5) == others)
    return {
        "vs_majority": vs_maj,
        "vs_leave_one_out": float(np.mean(loo)) if loo else float("nan"),
        "n_pairs": len(common),
    }


def evaluate_probs(probs, targets, weights=None, n_bins: int = 10, scores=None) -> dict:
    """AUC, accuracy and Brier against the human majority (tied pairs left out), Brier and
    log loss against the soft score-A, and the ECE (against score-A).

    ``scores``: what the AUC ranks by, when not the probabilities: the log-odds. A proxy's
    P(same) saturates at exactly 1.0 for log-odds beyond ~17 (float32) or ~37 (float64),
    and tied scores rank nothing (a prior read 97 % of a round's outputs as 1.0: AUC 0.5)."""
    p, t = _arr(probs), _arr(targets)
    rank = p if scores is None else _arr(scores)
    w = _weights(weights, len(p))
    m = majority_mask(t)
    lab = (t > 0.5).astype(np.float64)
    return {
        "n": int(len(p)),
        "n_majority": int(m.sum()),
        "auc": roc_auc(rank[m], lab[m], w[m]),
        "auc_ci95": auc_interval(rank[m], lab[m], w[m]),
        "accuracy": accuracy(p[m], lab[m], w[m]),
        "brier": brier(p[m], lab[m], w[m]),
        "brier_soft": brier(p, t, w),
        "log_loss": log_loss(p, t, w),
        "ece": expected_calibration_error(p, t, w, n_bins),
    }


def version_report(
    probs: Mapping[str, float],
    judgments: Iterable[Judgment],
    png_path: str | Path | None = None,
) -> dict:
    """Everything the registry records for a version on held-out judged pairs: the metrics of
    :func:`evaluate_probs` against each pair's score-A, the reliability table, the proxy's
    agreement and the human ceiling. Writes the reliability diagram when ``png_path``."""
    rows = _rows(judgments)
    sa = score_a(rows)
    pids = [p for p in sa if p in probs]
    p = np.array([probs[k] for k in pids])
    t = np.array([sa[k] for k in pids])
    out = evaluate_probs(p, t)
    out["reliability"] = reliability(p, t).to_dict()
    out["agreement"] = proxy_agreement(probs, rows)
    ceiling = human_ceiling(rows)
    ceiling.pop("per_rater")
    out["human_ceiling"] = ceiling
    if png_path is not None:
        reliability_diagram_png(p, t, png_path)
    return out


def json_safe(x):
    """Replace NaN/inf by None recursively (PostgreSQL's jsonb rejects NaN)."""
    if isinstance(x, float | np.floating):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Mapping):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def not_worse(
    candidate: Mapping[str, float],
    reference: Mapping[str, float],
    auc_tolerance: float = 0.0,
    brier_tolerance: float = 0.0,
    intervals: Mapping[str, tuple[float, float] | None] | None = None,
) -> tuple[bool, list[str]]:
    """The promotion rule on held-out human labels: the candidate's AUC is not lower and its
    Brier score not higher than the reference's (within tolerances). Returns (ok, reasons
    it failed). A missing or NaN metric fails, since "not worse" cannot be shown.

    ``intervals`` (from :func:`paired_difference_intervals`, for a held-out set too small
    for point figures to mean much): a metric fails only when its whole interval of the
    difference lies on the worse side of the tolerance, i.e. when the candidate is worse
    beyond what resampling the pairs explains. A metric without an interval keeps the
    point rule."""
    reasons = []
    ca, ra = candidate.get("auc"), reference.get("auc")
    cb, rb = candidate.get("brier"), reference.get("brier")
    if not all(isinstance(v, int | float) and np.isfinite(v) for v in (ca, ra, cb, rb)):
        return False, ["AUC or Brier score missing/undefined on the held-out labels"]
    iv = intervals or {}
    auc_iv, brier_iv = iv.get("auc"), iv.get("brier")

    def beyond(lo_hi: tuple[float, float]) -> str:
        return f" beyond chance (95 % interval of the difference {lo_hi[0]:+.3f}…{lo_hi[1]:+.3f})"

    if auc_iv is not None:
        if auc_iv[1] < -auc_tolerance:
            reasons.append(f"AUC {ca:.4f} < {ra:.4f} (promoted) - {auc_tolerance}" + beyond(auc_iv))
    elif ca < ra - auc_tolerance:
        reasons.append(f"AUC {ca:.4f} < {ra:.4f} (promoted) - {auc_tolerance}")
    if brier_iv is not None:
        if brier_iv[0] > brier_tolerance:
            reasons.append(
                f"Brier {cb:.4f} > {rb:.4f} (promoted) + {brier_tolerance}" + beyond(brier_iv)
            )
    elif cb > rb + brier_tolerance:
        reasons.append(f"Brier {cb:.4f} > {rb:.4f} (promoted) + {brier_tolerance}")
    return not reasons, reasons
