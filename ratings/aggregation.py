"""Pure aggregation of same/different judgments: no Django here, so it is testable alone.

Input rows are ``(rater, pair, same)`` with any hashable ids. Output: per-pair human
score-A (P(a person says "same")), per-rater reliability, and Krippendorff's alpha.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field

import krippendorff
import numpy as np
import pandas as pd
from crowdkit.aggregation import DawidSkene, MajorityVote

DAWID_SKENE = "dawid_skene"
MAJORITY_VOTE = "majority_vote"
METHODS = (DAWID_SKENE, MAJORITY_VOTE)

Row = tuple[Hashable, Hashable, bool]


@dataclass
class AggregationResult:
    score_a: dict[Hashable, float] = field(default_factory=dict)
    reliability: dict[Hashable, float] = field(default_factory=dict)
    alpha: float | None = None


def aggregate(rows: Iterable[Row], method: str = DAWID_SKENE, n_iter: int = 100) -> AggregationResult:
    with warnings.catch_warnings():
        # crowd-kit 1.4 uses pandas keywords that pandas 3 deprecates; harmless here.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return _aggregate(rows, method, n_iter)


def _aggregate(rows: Iterable[Row], method: str, n_iter: int) -> AggregationResult:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    df = pd.DataFrame(list(rows), columns=["worker", "task", "label"])
    if df.empty:
        return AggregationResult()
    df["label"] = df["label"].astype(int)
    alpha = krippendorff_alpha(df)
    if method == DAWID_SKENE and df["label"].nunique() == 2:
        ds = DawidSkene(n_iter=n_iter).fit(df)
        probas = ds.probas_
        score = probas[1] if 1 in probas.columns else pd.Series(0.0, index=probas.index)
        reliability = _ds_reliability(ds.errors_, ds.priors_)
    else:
        # Majority vote (also Dawid-Skene's answer when every judgment agrees).
        probas = MajorityVote().fit_predict_proba(df)
        score = probas[1] if 1 in probas.columns else pd.Series(0.0, index=probas.index)
        reliability = _agreement(df, (score >= 0.5).astype(int))
    return AggregationResult(
        score_a={task: float(v) for task, v in score.items()},
        reliability=reliability,
        alpha=alpha,
    )


def _ds_reliability(errors: pd.DataFrame, priors: pd.Series) -> dict[Hashable, float]:
    """Probability that a rater's answer equals the truth, under Dawid-Skene's model."""
    out: dict[Hashable, float] = {}
    for worker in errors.index.get_level_values(0).unique():
        confusion = errors.loc[worker]
        acc = 0.0
        for label, prior in priors.items():
            if label in confusion.index and label in confusion.columns:
                acc += float(prior) * float(confusion.loc[label, label])
        out[worker] = acc
    return out


def _agreement(df: pd.DataFrame, labels: pd.Series) -> dict[Hashable, float]:
    agree = df["label"].to_numpy() == labels.reindex(df["task"]).to_numpy()
    return {w: float(v) for w, v in pd.Series(agree, index=df["worker"]).groupby(level=0).mean().items()}


# What a too-fast answer is taken to be worth: a guess (chance on same/different).
GUESS_ACCURACY = 0.5


def pace_adjusted(reliability: float | None, n: int, n_too_fast: int) -> float | None:
    """A rater's reliability with their too-fast answers (under the campaign's minimum
    time) taken as guesses: the share answered too fast is worth chance at best, so a rater
    who rushes half their answers is half as far above chance as the model alone says."""
    if reliability is None or n <= 0 or n_too_fast <= 0:
        return reliability
    fast = min(n_too_fast, n)
    return ((n - fast) * reliability + fast * min(reliability, GUESS_ACCURACY)) / n


def krippendorff_alpha(df: pd.DataFrame) -> float | None:
    """Nominal alpha over pairs with at least two judgments; None when undefined."""
    counts = pd.crosstab(df["task"], df["label"]).reindex(columns=[0, 1], fill_value=0)
    counts = counts[counts.sum(axis=1) >= 2]
    if counts.empty or (counts.to_numpy() > 0).sum(axis=0).astype(bool).sum() < 2:
        return None  # nothing pairable, or only one value ever used: alpha is undefined
    value = krippendorff.alpha(value_counts=counts.to_numpy(), level_of_measurement="nominal")
    return None if value is None or math.isnan(value) else float(value)


def accuracy(score_a: dict[Hashable, float], truth: dict[Hashable, bool]) -> float:
    keys = [k for k in truth if k in score_a]
    if not keys:
        return float("nan")
    return float(np.mean([(score_a[k] >= 0.5) == truth[k] for k in keys]))


def synthetic_crowd(
    n_pairs: int = 300,
    n_good: int = 8,
    n_spammers: int = 7,
    k: int = 5,
    good_accuracy: Sequence[float] = (0.65, 0.9),
    seed: int = 0,
) -> tuple[list[Row], dict[Hashable, bool]]:
    """A crowd with known truth: good raters (accuracy in a range) and spammers.

    Spammers are the harmful kind Dawid-Skene is built for: half always answer "same",
    half answer at random. Each pair gets ``k`` raters drawn from everyone.
    """
    rng = random.Random(seed)
    truth = {f"p{i}": rng.random() < 0.5 for i in range(n_pairs)}
    raters: dict[str, tuple[str, float]] = {}
    for i in range(n_good):
        raters[f"good{i}"] = ("good", rng.uniform(*good_accuracy))
    for i in range(n_spammers):
        raters[f"spam{i}"] = ("always" if i % 2 == 0 else "random", 0.5)
    names = list(raters)
    rows: list[Row] = []
    for pair, same in truth.items():
        for worker in rng.sample(names, k):
            kind, acc = raters[worker]
            if kind == "good":
                answer = same if rng.random() < acc else not same
            elif kind == "always":
                answer = True
            else:
                answer = rng.random() < 0.5
            rows.append((worker, pair, answer))
    return rows, truth


def compare_methods(seeds: Sequence[int] = range(5), **crowd: int) -> dict[str, float]:
    """Mean accuracy of Dawid-Skene and majority vote on synthetic crowds with known truth."""
    acc: dict[str, list[float]] = {DAWID_SKENE: [], MAJORITY_VOTE: []}
    for seed in seeds:
        rows, truth = synthetic_crowd(seed=seed, **crowd)
        for method in METHODS:
            acc[method].append(accuracy(aggregate(rows, method).score_a, truth))
    return {m: round(float(np.mean(v)), 4) for m, v in acc.items()}


if __name__ == "__main__":  # python -m ratings.aggregation: DS vs MV on synthetic crowds
    import json
    import time

    for spammers in (0, 4, 7, 10):
        t0 = time.perf_counter()
        out = compare_methods(n_pairs=300, n_good=8, n_spammers=spammers, k=5)
        print(json.dumps({"good": 8, "spammers": spammers, "pairs": 300, "k": 5, **out,
                          "seconds": round(time.perf_counter() - t0, 2)}))
