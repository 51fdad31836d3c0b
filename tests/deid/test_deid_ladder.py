"""The ladder: the loop hands out the first iterate below each score-A threshold, without
changing the trajectory, and a resumed run does not hand out a rung twice."""

from __future__ import annotations

import numpy as np
import pytest

from models_app import deid
from models_app.deid.eot import EOTConfig
from models_app.deid.score_a import AppearanceStandIn

FAST_EOT = EOTConfig(jpeg_prob=0.5, confirm_samples=2)


def _cfg(**kw) -> deid.DeidConfig:
    base = {"max_iterations": 8, "eot": FAST_EOT, "tau_a": 0.05}
    base.update(kw)
    return deid.DeidConfig(**base)


def test_rungs_are_the_first_iterates_below_each_threshold(synthetic_context, tiny_cfru):
    src = deid.DeidSource(synthetic_context)
    rungs, order = [], []
    res = deid.run_deid(
        src, AppearanceStandIn(), _cfg(ladder=(0.99, 0.9, 0.5)),
        on_rung=lambda r: (rungs.append(r), order.append(("rung", r.iteration))),
        on_iteration=lambda rec, ck: order.append(("record", rec.iteration)),
        device="cpu", network=tiny_cfru,
    )
    traj = [(r.iteration, r.score_a) for r in res.records]
    assert traj[0][1] > 0.9  # the source itself is never a rung
    assert rungs == res.ladder and len({r.iteration for r in rungs}) >= 2
    # Each rung comes just before the record that crossed it (stored together).
    for rung in rungs:
        k = order.index(("record", rung.iteration))
        assert ("rung", rung.iteration) in order[:k] and ("record", rung.iteration - 1) in order[:k]
    for rung in rungs:
        first = next(i for i, a in traj if i > 0 and a < rung.threshold)
        assert rung.iteration == first
        assert rung.score_a == pytest.approx(dict(traj)[first])
        assert rung.context.shape == (300, 300, 3) and rung.context.dtype == np.uint8
        assert rung.photo is None  # no photo given
    crossed = {r.threshold for r in rungs}
    assert crossed == {t for t in (0.99, 0.9, 0.5) if any(a < t for i, a in traj if i > 0)}
    # The rung of the best iterate is the returned image.
    best = [r for r in rungs if r.iteration == res.best_iteration]
    for r in best:
        assert np.array_equal(r.context, res.context)
    # The ladder never changes the trajectory: bit-identical scores without it.
    off = deid.run_deid(src, AppearanceStandIn(), _cfg(ladder=()), device="cpu", network=tiny_cfru)
    assert off.ladder == []
    assert [(r.score_a, r.score_b, r.objective) for r in off.records] == [
        (r.score_a, r.score_b, r.objective) for r in res.records
    ]
    assert np.array_equal(off.context, res.context)


def test_a_resumed_run_hands_out_no_rung_twice(synthetic_context, tiny_cfru):
    src = deid.DeidSource(synthetic_context)
    cfg = _cfg(ladder=(0.95, 0.5, 0.3, 0.1))
    saved, full = {}, []

    def keep(rec, ck):
        if rec.iteration == 1:
            saved["blob"] = ck().to_bytes()

    deid.run_deid(src, AppearanceStandIn(), cfg, on_rung=full.append, on_iteration=keep,
                  device="cpu", network=tiny_cfru)
    state = deid.DeidState.from_bytes(saved["blob"])
    before = {r.threshold for r in full if r.iteration <= 1}
    assert before and len(before) < len(full)
    assert sorted(state.crossed[0], reverse=True) == sorted(before, reverse=True)
    again = []
    deid.run_deid(src, AppearanceStandIn(), cfg, resume=state, on_rung=again.append,
                  device="cpu", network=tiny_cfru)
    assert [(r.threshold, r.iteration) for r in again] == [
        (r.threshold, r.iteration) for r in full if r.iteration > 1
    ]


def test_ladder_is_validated():
    for bad in ([1.2], [0.5, 0.5], "0.5", [True], [0.1] * 11):
        with pytest.raises(deid.DeidConfigError) as exc:
            deid.DeidConfig.from_dict({"ladder": bad}).validate()
        assert exc.value.field == "ladder"
    cfg = deid.DeidConfig.from_dict({"ladder": [0.7, 0.3]})
    assert cfg.ladder == (0.7, 0.3) and cfg.to_dict()["ladder"] == [0.7, 0.3]
    assert deid.DeidConfig().ladder == (0.8, 0.6, 0.4)
