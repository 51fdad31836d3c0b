"""CFRUs, calibration, the registry and score-B aggregation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from vision_chips import packaged_chips

from models_app.vision import cfru as cm


class FixedCFRU(cm.CFRU):
    """Embeds a chip as its mean colour: deterministic and instant, for aggregation tests."""

    runtime = "test"

    def __init__(self, name: str, threshold: float, scale: float = 10.0) -> None:
        self.name = name
        self.version = "test"
        self.calibration = cm.Calibration(threshold, scale, "test")

    def embed_single(self, chips):
        return chips.reshape(len(chips), -1, 3).mean(axis=1) / 255.0


def _chip(value: int) -> np.ndarray:
    return np.full((150, 150, 3), value, dtype=np.uint8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- calibration


def test_calibration_similarity_is_a_centred_logistic():
    cal = cm.Calibration(threshold=0.5, scale=20.0)
    d = np.linspace(0, 2, 201)
    s = cal.similarity(d)
    assert np.all((s >= 0) & (s <= 1)) and np.all(np.diff(s) < 0)
    assert cal.similarity(0.5) == pytest.approx(0.5)
    np.testing.assert_array_equal(cal.matches(d), s >= 0.5)
    assert cal.similarity(1e6) == 0.0 and cal.similarity(-1e6) == 1.0  # no overflow


def test_fit_calibration_recovers_the_slope():
    rng = np.random.default_rng(0)
    d = rng.uniform(0, 1.2, 20000)
    same = rng.uniform(size=d.size) < 1 / (1 + np.exp(-12.0 * (0.55 - d)))
    cal = cm.fit_calibration(d, same, 0.55)
    assert cal.scale == pytest.approx(12.0, rel=0.08)


def test_best_threshold_separates_and_takes_the_middle_of_the_gap():
    d = np.array([0.1, 0.2, 0.3, 0.7, 0.8])
    same = np.array([True, True, True, False, False])
    assert cm.best_threshold(d, same) == pytest.approx(0.5)
    # One error is unavoidable here; the threshold still lands in a best gap.
    d2 = np.array([0.1, 0.2, 0.75, 0.3, 0.8, 0.9])
    same2 = np.array([True, True, True, False, False, False])
    t = cm.best_threshold(d2, same2)
    assert np.mean((d2 <= t) == same2) == pytest.approx(5 / 6)


def test_calibration_file_roundtrip_and_fallback(tmp_path: Path):
    p = tmp_path / "cal.json"
    assert cm.load_calibrations(p) == {}
    assert cm.calibration_for("x", p).threshold == cm.FALLBACK_THRESHOLD
    p.write_text(json.dumps({"cfrus": {"x": {"threshold": 0.42, "scale": 17, "source": "s"}}}))
    assert cm.calibration_for("x", p) == cm.Calibration(0.42, 17.0, "s")


def test_shipped_calibration_covers_both_cfrus():
    cals = cm.load_calibrations()
    if not cals:
        pytest.skip("calibration.json not written yet (run bench/lfw_verification.py)")
    for name in (cm.DLIB_RUNTIME, cm.TORCH_PORT, cm.DLIB_RUNTIME_FLIP, cm.TORCH_PORT_FLIP):
        assert 0.3 < cals[name].threshold < 0.8 and cals[name].scale > 1, name
        assert "LFW" in cals[name].source


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_errors():
    names = {cm.DLIB_RUNTIME, cm.TORCH_PORT, cm.DLIB_RUNTIME_FLIP, cm.TORCH_PORT_FLIP}
    assert names <= set(cm.available_cfrus())
    with pytest.raises(ValueError, match="unknown CFRU 'nope'.*dlib_resnet_v1"):
        cm.get_cfru("nope")
    with pytest.raises(ValueError, match="already registered"):
        cm.register_cfru(cm.DLIB_RUNTIME, cm.DlibRuntimeCFRU)
    cm.register_cfru("test_fixed_a", lambda: FixedCFRU("test_fixed_a", 0.1), replace=True)
    try:
        a = cm.get_cfru("test_fixed_a")
        assert a is cm.get_cfru("test_fixed_a")  # one shared instance
        assert a.describe()["threshold"] == 0.1
    finally:
        cm.unregister_cfru("test_fixed_a")
    assert "test_fixed_a" not in cm.available_cfrus()


# ---------------------------------------------------------------------------------- CFRUs


def test_real_cfrus_agree_and_recognise_the_portrait():
    chips = packaged_chips()  # 0-3: one real face; 4-5: procedural images
    dl, tp = cm.get_cfru(cm.DLIB_RUNTIME), cm.get_cfru(cm.TORCH_PORT)
    e_dl, e_tp = dl.embed(chips), tp.embed(chips)
    assert e_dl.shape == e_tp.shape == (6, 128) and e_dl.dtype == np.float64
    assert np.abs(e_dl - e_tp).max() < 1e-4
    for c, e in ((dl, e_dl), (tp, e_tp)):
        assert c.name and c.version
        assert 0.0 <= c.threshold <= 1.5
        sim_same = c.similarity(e[0], e[1:4])
        sim_other = c.similarity(e[0], e[4:])
        assert np.all(c.matches(e[0], e[1:4])) and not np.any(c.matches(e[0], e[4:]))
        assert np.all(sim_same > 0.5) and np.all(sim_other < 0.5)
        assert np.all(sim_same <= 1) and np.all(sim_other >= 0)
    # Single chip in, one row out.
    assert dl.embed(chips[0]).shape == (1, 128)


def test_flip_averaged_cfrus():
    chips = packaged_chips()[[0, 1, 4]]
    mirrored = np.ascontiguousarray(chips[:, :, ::-1])
    tp, tpf = cm.get_cfru(cm.TORCH_PORT), cm.get_cfru(cm.TORCH_PORT_FLIP)
    dlf = cm.get_cfru(cm.DLIB_RUNTIME_FLIP)
    assert tpf.flip_average and not tp.flip_average and dlf.flip_average
    assert tpf.runtime == tp.runtime and dlf.runtime == cm.get_cfru(cm.DLIB_RUNTIME).runtime
    e = tpf.embed(chips)
    np.testing.assert_allclose(e, (tp.embed(chips) + tp.embed(mirrored)) / 2, atol=1e-6)
    assert np.abs(dlf.embed(chips) - e).max() < 1e-4
    # Chip 1 is chip 0's subject photographed mirrored: flip-averaging brings them closer.
    assert tpf.distance(e[0], e[1]) < tp.distance(tp.embed(chips[0]), tp.embed(chips[1]))[0]
    assert tpf.describe()["flip_average"] is True


def test_embed_rejects_wrong_chips():
    c = cm.get_cfru(cm.TORCH_PORT)
    with pytest.raises(ValueError, match="150, 150, 3"):
        c.embed(np.zeros((1, 100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        c.embed(np.zeros((1, 150, 150, 3), np.float32))


# -------------------------------------------------------------------------------- score-B


@pytest.fixture
def three_cfrus():
    # Mean-colour embeddings: a grey-100 chip vs grey-110 is at distance ~0.068.
    cfrus = [FixedCFRU("t_loose", 0.2), FixedCFRU("t_mid", 0.1), FixedCFRU("t_strict", 0.05)]
    for c in cfrus:
        cm.register_cfru(c.name, lambda c=c: c, replace=True)
    yield cfrus
    for c in cfrus:
        cm.unregister_cfru(c.name)


def test_score_b_aggregations(three_cfrus):
    src, out = _chip(100), _chip(110)
    d = np.sqrt(3) * 10 / 255
    sims = np.array([c.calibration.similarity(d) for c in three_cfrus])
    expected = {
        "mean_similarity": sims.mean(),
        "fraction_matching": 2 / 3,  # loose and mid match, strict does not
        "min_similarity": sims.min(),
        "product_similarity": sims.prod(),
    }
    for agg, want in expected.items():
        s = cm.CFRUEnsemble(three_cfrus, agg).score_b(src, out)
        assert s.score == pytest.approx(want), agg
        assert s.aggregation == agg
        assert [r.matches for r in s.per_cfru] == [True, True, False]
        assert [r.distance for r in s.per_cfru] == pytest.approx([d] * 3)
        assert 0.0 <= s.score <= 1.0
        assert s.to_dict()["per_cfru"][0]["name"] == "t_loose"


def test_score_b_from_cached_source_embeddings(three_cfrus):
    ens = cm.CFRUEnsemble(three_cfrus, "fraction_matching")
    src = ens.embed(_chip(100))  # embedded once per job
    outs = ens.embed(np.stack([_chip(100), _chip(110), _chip(200)]))
    scores = ens.score_embeddings(src, outs)
    assert [s.score for s in scores] == pytest.approx([1.0, 2 / 3, 0.0])


def test_ensemble_and_aggregation_are_chosen_per_job(three_cfrus):
    job_a = cm.build_ensemble(
        {"cfrus": ["t_loose", "t_strict"], "aggregation": "fraction_matching"}
    )
    job_b = cm.build_ensemble({"cfrus": ["t_mid"], "aggregation": "mean_similarity"})
    assert job_a.names == ("t_loose", "t_strict") and job_b.names == ("t_mid",)
    src, out = _chip(100), _chip(110)
    assert job_a.score_b(src, out).score == pytest.approx(0.5)
    assert job_b.score_b(src, out).score == pytest.approx(
        three_cfrus[1].calibration.similarity(np.sqrt(3) * 10 / 255)
    )
    assert job_a.spec() == {"cfrus": ["t_loose", "t_strict"], "aggregation": "fraction_matching"}
    default = cm.build_ensemble(None)
    assert default.names == cm.DEFAULT_CFRUS and default.aggregation == cm.DEFAULT_AGGREGATION


def test_ensemble_spec_errors(three_cfrus):
    with pytest.raises(ValueError, match="unknown score-B aggregation 'median'"):
        cm.build_ensemble({"cfrus": ["t_mid"], "aggregation": "median"})
    with pytest.raises(ValueError, match="unknown CFRU 'missing'"):
        cm.build_ensemble({"cfrus": ["missing"]})
    with pytest.raises(ValueError, match="unknown keys"):
        cm.build_ensemble({"cfru": ["t_mid"]})
    with pytest.raises(ValueError, match="duplicate"):
        cm.build_ensemble({"cfrus": ["t_mid", "t_mid"]})
    with pytest.raises(ValueError, match="at least one"):
        cm.CFRUEnsemble([])


def test_score_b_with_both_real_cfrus():
    chips = packaged_chips()
    ens = cm.build_ensemble({"cfrus": [cm.DLIB_RUNTIME, cm.TORCH_PORT]})
    same = ens.score_b(chips[0], chips[1])
    other = ens.score_b(chips[0], chips[4])
    assert same.score > 0.5 > other.score
    a, b = same.per_cfru
    assert a.distance == pytest.approx(b.distance, abs=1e-4)
    frac = cm.build_ensemble(
        {"cfrus": [cm.DLIB_RUNTIME, cm.TORCH_PORT], "aggregation": "fraction_matching"}
    )
    assert frac.score_b(chips[0], chips[1]).score == 1.0
    assert frac.score_b(chips[0], chips[4]).score == 0.0
