"""Metrics against people: AUC, accuracy, Brier, ECE, reliability PNG, human ceiling."""

from __future__ import annotations

import numpy as np
import pytest

from models_app.proxy import metrics


def test_basic_metrics():
    p = np.array([0.9, 0.8, 0.3, 0.2])
    y = np.array([1, 0, 1, 0])
    assert metrics.roc_auc(p, y) == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered
    assert metrics.roc_auc([0.5, 0.5], [1, 0]) == 0.5
    rng = np.random.default_rng(1)
    s, lab, w = rng.uniform(size=200).round(1), rng.uniform(size=200) < 0.4, rng.uniform(size=200)
    pos, neg = np.flatnonzero(lab), np.flatnonzero(~lab)
    num = sum(w[i] * w[j] * ((s[i] > s[j]) + 0.5 * (s[i] == s[j])) for i in pos for j in neg)
    assert metrics.roc_auc(s, lab, w) == pytest.approx(num / (w[pos].sum() * w[neg].sum()))
    assert metrics.roc_auc([0.9, 0.1], [1, 0]) == 1.0
    assert np.isnan(metrics.roc_auc([0.2, 0.3], [1, 1]))
    assert metrics.accuracy(p, y) == 0.5
    assert metrics.brier(p, y) == pytest.approx((0.01 + 0.64 + 0.49 + 0.04) / 4)
    assert metrics.brier([0.5], [0.5]) == 0.0  # soft targets


def test_ece_and_reliability_png(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    y = (rng.uniform(size=p.size) < p).astype(float)  # calibrated by construction
    assert metrics.expected_calibration_error(p, y) < 0.02
    assert metrics.expected_calibration_error(np.full(100, 0.9), np.zeros(100)) == pytest.approx(
        0.9
    )
    rel = metrics.reliability(p, y, n_bins=5)
    assert len(rel.counts) == 5 and sum(rel.counts) == p.size
    png = metrics.reliability_diagram_png(p[:500], y[:500], tmp_path / "rel.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "rel.png").read_bytes() == png


JUDGMENTS = [
    # pair 1: 3 same, 1 different; pair 2: 1 same, 2 different; pair 3: a tie
    ("p1", "r1", True),
    ("p1", "r2", True),
    ("p1", "r3", True),
    ("p1", "r4", False),
    ("p2", "r1", False),
    ("p2", "r2", True),
    ("p2", "r3", False),
    ("p3", "r1", True),
    ("p3", "r2", False),
]


def test_majority_and_score_a():
    assert metrics.majority(JUDGMENTS) == {"p1": True, "p2": False}
    sa = metrics.score_a(JUDGMENTS)
    assert sa["p1"] == 0.75 and sa["p3"] == 0.5
    rows = [{"pair_id": "x", "rater_id": "r", "same": True}]
    assert metrics.majority(rows) == {"x": True}


def test_human_ceiling_leave_one_rater_out():
    hc = metrics.human_ceiling(JUDGMENTS)
    # r1: p1 others (T,T,F) -> T, agrees; p2 others (T,F) tie, skipped; p3 other F, disagrees
    # r2: p1 agrees; p2 others (F,F) -> F, disagrees; p3 other T, disagrees
    # r3: p1 agrees; p2 others (F,T) tie, skipped. r4: p1 others (T,T,T), disagrees
    assert hc["per_rater"] == {"r1": 0.5, "r2": pytest.approx(1 / 3), "r3": 1.0, "r4": 0.0}
    assert hc["mean_rater_agreement"] == pytest.approx((0.5 + 1 / 3 + 1 + 0) / 4)
    assert hc["n_comparisons"] == 7 and hc["pooled_agreement"] == pytest.approx(3 / 7)


def test_proxy_agreement_and_version_report(tmp_path):
    probs = {"p1": 0.8, "p2": 0.6, "p3": 0.4}
    ag = metrics.proxy_agreement(probs, JUDGMENTS)
    assert ag["vs_majority"] == 0.5 and ag["n_pairs"] == 2
    rep = metrics.version_report(probs, JUDGMENTS, png_path=tmp_path / "r.png")
    assert rep["n_majority"] == 2 and rep["accuracy"] == 0.5
    assert rep["human_ceiling"]["n_raters"] == 4 and (tmp_path / "r.png").stat().st_size > 0
    assert set(rep) >= {"auc", "brier", "ece", "reliability", "agreement"}


def test_gate_rule_and_json_safe():
    ok, why = metrics.not_worse({"auc": 0.91, "brier": 0.10}, {"auc": 0.90, "brier": 0.11})
    assert ok and not why
    ok, why = metrics.not_worse({"auc": 0.85, "brier": 0.20}, {"auc": 0.90, "brier": 0.11})
    assert not ok and len(why) == 2
    assert (
        metrics.not_worse({"auc": float("nan"), "brier": 0.1}, {"auc": 0.9, "brier": 0.1})[0]
        is False
    )
    assert metrics.json_safe({"a": [float("nan"), np.float32(1.5)], "b": np.int64(2)}) == {
        "a": [None, 1.5],
        "b": 2,
    }


def test_auc_interval_narrows_with_more_pairs_and_needs_both_classes():
    from models_app.proxy.metrics import auc_interval, roc_auc

    rng = np.random.default_rng(0)

    def sample(n):
        y = rng.random(n) < 0.5
        return np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.3, n), 0, 1), y

    p_small, y_small = sample(20)
    p_big, y_big = sample(2000)
    lo_s, hi_s = auc_interval(p_small, y_small)
    lo_b, hi_b = auc_interval(p_big, y_big)
    assert lo_b <= roc_auc(p_big, y_big) <= hi_b
    assert (hi_s - lo_s) > 2 * (hi_b - lo_b)
    assert auc_interval([0.1, 0.9, 0.8], [0, 1, 1]) is None  # one negative only


def test_paired_intervals_reject_only_a_difference_beyond_chance():
    rng = np.random.default_rng(2)
    y = (rng.random(400) > 0.5).astype(float)
    good = np.clip(y * 0.5 + 0.25 + rng.normal(0, 0.2, 400), 0, 1)
    poor = np.clip(y * 0.3 + 0.35 + rng.normal(0, 0.2, 400), 0, 1)
    ev = lambda p, n: metrics.evaluate_probs(p[:n], y[:n])  # noqa: E731
    # Many pairs: the poorer candidate is worse beyond chance, and is rejected.
    iv = metrics.paired_difference_intervals(poor, good, y)
    assert iv["auc"][1] < 0 and iv["brier"][0] > 0
    ok, why = metrics.not_worse(ev(poor, 400), ev(good, 400), intervals=iv)
    assert not ok and "beyond chance" in why[0]
    # Nine pairs: point figures say worse, the interval straddles zero, so it passes.
    iv9 = metrics.paired_difference_intervals(poor[:9], good[:9], y[:9])
    assert iv9["auc"][0] < 0 < iv9["auc"][1] and iv9["brier"][0] < 0 < iv9["brier"][1]
    assert not metrics.not_worse(ev(poor, 9), ev(good, 9))[0]  # the point rule rejects
    assert metrics.not_worse(ev(poor, 9), ev(good, 9), intervals=iv9)[0]
    # One class only: no AUC interval, so AUC keeps the point rule.
    one = metrics.paired_difference_intervals([0.2, 0.3], [0.4, 0.5], [1.0, 1.0])
    assert one["auc"] is None and one["brier"] is not None


def test_auc_ranks_by_log_odds_when_probabilities_saturate():
    y = np.array([1.0, 1.0, 0.0, 0.0])
    z = np.array([120.0, 90.0, 60.0, 45.0])  # all P = 1.0 in float64
    p = 1.0 / (1.0 + np.exp(-z))
    assert metrics.evaluate_probs(p, y)["auc"] == 0.5
    assert metrics.evaluate_probs(p, y, scores=z)["auc"] == 1.0
    iv = metrics.paired_difference_intervals(p, p, y, candidate_scores=z, reference_scores=-z)
    assert iv["auc"] == (1.0, 1.0)  # ranked by the log-odds: perfect against reversed
