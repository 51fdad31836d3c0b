"""Simulated rater types: how one rater turns an observer's P(same) into an answer, a
confidence and a response time. Pure numpy: no Django, no HTTP."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Answer:
    same: bool
    confidence: int  # 1..4, as the rater page offers
    response_ms: int  # the simulated time to answer, what the page would measure


@dataclass(frozen=True)
class RaterType:
    """``noise``: s.d. of the logit noise added to the observer's P(same); ``bias``: logit
    shift toward "same"; ``fatigue``: extra noise s.d. per 100 judgments done;
    ``looks``: answers from the images (False: a spammer); ``rt_median_ms``/``rt_sigma``:
    log-normal response time; ``respects_min_ms``: never answers faster than the
    campaign's minimum (careful raters)."""

    name: str
    noise: float
    bias: float = 0.0
    fatigue: float = 0.3
    looks: bool = True
    rt_median_ms: float = 2500.0
    rt_sigma: float = 0.45
    respects_min_ms: bool = False

    def answer(self, p_same: float | None, n_done: int, rng: np.random.Generator,
               min_response_ms: int = 0) -> Answer:
        """One answer. ``p_same`` is the observer's P(same) (None when the type does not
        look); ``n_done``: the rater's judgments so far (fatigue)."""
        rt = float(rng.lognormal(math.log(self.rt_median_ms), self.rt_sigma))
        if self.respects_min_ms:
            rt = max(rt, min_response_ms * 1.1 + 50.0)
        if not self.looks or p_same is None:
            # A spammer: half always say "same" fast, half click at random.
            same = bool(rng.random() < 0.5) if self.bias == 0 else self.bias > 0
            return Answer(same, int(rng.integers(1, 5)), max(1, round(rt)))
        p = min(max(p_same, 1e-4), 1 - 1e-4)
        sd = self.noise + self.fatigue * n_done / 100.0
        logit = math.log(p / (1 - p)) + self.bias + float(rng.normal(0.0, sd))
        q = 1.0 / (1.0 + math.exp(-logit))
        same = bool(rng.random() < q)
        # Confidence follows how clear the case looked: |q - 0.5| in four bands.
        margin = abs(q - 0.5)
        confidence = 1 + int(margin >= 0.1) + int(margin >= 0.25) + int(margin >= 0.4)
        return Answer(same, confidence, max(1, round(rt)))


TYPES: dict[str, RaterType] = {
    "careful": RaterType("careful", noise=0.3, fatigue=0.2, respects_min_ms=True),
    "noisy": RaterType("noisy", noise=1.5, fatigue=0.6, rt_median_ms=1800.0),
    "same_biased": RaterType("same_biased", noise=0.6, bias=1.5, rt_median_ms=2000.0),
    "spammer": RaterType("spammer", noise=0.0, looks=False, rt_median_ms=600.0, rt_sigma=0.3),
}


def parse_mix(text: str) -> dict[str, float]:
    """``careful=0.6,noisy=0.2,...`` -> shares summing to 1; ValueError naming the bad part."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in TYPES:
            raise ValueError(f"mix: {part!r} is not TYPE=SHARE with TYPE one of {sorted(TYPES)}")
        try:
            share = float(value)
        except ValueError:
            raise ValueError(f"mix: share of {name!r} is not a number: {value!r}") from None
        if not math.isfinite(share) or share < 0:
            raise ValueError(f"mix: share of {name!r} must be >= 0")
        mix[name] = share
    total = sum(mix.values())
    if total <= 0:
        raise ValueError("mix: at least one positive share is needed")
    return {k: v / total for k, v in mix.items()}


def assign_types(mix: dict[str, float], n: int) -> list[str]:
    """``n`` rater types in the mix's proportions (largest remainders), every type with a
    positive share present at least once when n allows."""
    raw = {k: v * n for k, v in mix.items() if v > 0}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True):
        if sum(counts.values()) >= n:
            break
        counts[k] += 1
    for k in raw:  # a small crowd still gets its spammer
        if counts[k] == 0 and n >= len(raw):
            donor = max(counts, key=counts.get)
            counts[donor] -= 1
            counts[k] += 1
    return [k for k in mix if k in counts for _ in range(counts[k])]
