"""The loop: stop rules, records, modes, batching, cancel, resume, compositing, final score-B.

Uses a stand-in proxy (the real one is trained elsewhere) and few iterations.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models_app import deid
from models_app.deid.composite import composite
from models_app.deid.eot import EOTConfig
from models_app.deid.loss import LossWeights
from models_app.deid.score_a import AppearanceStandIn
from models_app.vision import faces

FAST_EOT = EOTConfig(jpeg_prob=0.5, confirm_samples=2)


class ConstantProxy:
    """P(same) stuck at a value (never success), still differentiable."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return self.p + 0.0 * out.mean(dim=(1, 2, 3))


def _cfg(**kw) -> deid.DeidConfig:
    base = {"max_iterations": 4, "eot": FAST_EOT}
    base.update(kw)
    return deid.DeidConfig(**base)


def test_success_stops_and_records_every_iteration(synthetic_context):
    net = None  # the real dlib ResNet port
    records, states = [], []
    res = deid.run_deid(
        deid.DeidSource(synthetic_context),
        AppearanceStandIn(),
        _cfg(max_iterations=12, tau_a=0.6),
        on_iteration=lambda r, ck: (records.append(r), states.append(ck)),
        device="cpu",
        network=net,
    )
    assert res.stop_reason == deid.STOP_SUCCESS
    assert [r.iteration for r in records] == list(range(len(records)))
    first, last = records[0], records[-1]
    assert first.iteration == 0 and first.score_a > 0.9  # the unmodified source
    assert last.success and last.confirmed and last.score_a <= 0.6 and last.score_b_min >= 0.5
    # The result reports the confirmed score-A (mean over the output and its views), which
    # is what made the record a success.
    assert last.confirm_score_a is not None and last.confirm_score_a <= 0.6
    assert res.best_iteration == last.iteration
    assert res.score_a == pytest.approx(last.confirm_score_a)
    assert {"theta0_distance", "score_a_term", "formula_a", "prior", "tap_stem"} <= set(last.loss)
    assert last.per_cfru[0]["name"] == "torch_dlib_resnet_v1"
    assert res.context.shape == (300, 300, 3) and res.context.dtype == np.uint8
    assert not np.array_equal(res.context, synthetic_context)
    assert res.photo is None  # no photo given: nothing to composite
    assert states[-1]().done == [deid.STOP_SUCCESS]


class LuckyViewProxy:
    """P(same) 0.1 in the loop's differentiable pass and 0.9 on every other view: a proxy
    fooled by one view only (what a lucky EOT draw looks like from the loop)."""

    def __call__(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        p = 0.1 if torch.is_grad_enabled() else 0.9
        return p + 0.0 * out.mean(dim=(1, 2, 3))


def test_score_a_is_confirmed_over_views_not_one_lucky_view(synthetic_context, tiny_cfru):
    src = deid.DeidSource(synthetic_context)
    res = deid.run_deid(src, LuckyViewProxy(), _cfg(max_iterations=3), device="cpu",
                        network=tiny_cfru)
    # Every record was a candidate (A 0.1 in the pass, B holds) and none is confirmed.
    assert res.stop_reason == deid.STOP_MAX_ITERATIONS
    assert all(r.confirmed is False and not r.success for r in res.records)
    assert all(r.score_a == pytest.approx(0.1) for r in res.records)
    assert all(r.confirm_score_a == pytest.approx(0.9) for r in res.records)
    # The check switched off: the one view decides, as it did before the check existed.
    eot = EOTConfig(jpeg_prob=0.5, confirm_samples=2, confirm_score_a=False)
    res = deid.run_deid(src, LuckyViewProxy(), _cfg(max_iterations=3, eot=eot), device="cpu",
                        network=tiny_cfru)
    assert res.stop_reason == deid.STOP_SUCCESS and res.iterations == 0
    assert res.records[0].confirm_score_a is None and res.score_a == pytest.approx(0.1)


def test_max_iterations_and_convergence(synthetic_context, tiny_cfru):
    net = tiny_cfru
    src = deid.DeidSource(synthetic_context)
    res = deid.run_deid(src, ConstantProxy(0.9), _cfg(max_iterations=3), device="cpu", network=net)
    assert res.stop_reason == deid.STOP_MAX_ITERATIONS
    assert [r.iteration for r in res.records] == [0, 1, 2, 3]
    res = deid.run_deid(
        src,
        ConstantProxy(0.9),
        _cfg(max_iterations=50, convergence_window=2, convergence_eps=0.01),
        device="cpu",
        network=net,
    )
    assert res.stop_reason == deid.STOP_CONVERGED and len(res.records) == 3


def test_cancel(synthetic_context, tiny_cfru):
    net = tiny_cfru
    res = deid.run_deid(
        deid.DeidSource(synthetic_context),
        ConstantProxy(0.9),
        _cfg(),
        should_stop=lambda: True,
        device="cpu",
        network=net,
    )
    assert res.stop_reason == deid.STOP_CANCELLED and len(res.records) == 1


@pytest.mark.parametrize("mode", ["restart", "evolve"])
def test_resume_continues_exactly(synthetic_context, mode, tiny_cfru):
    net = tiny_cfru
    src = deid.DeidSource(synthetic_context)
    cfg = _cfg(max_iterations=4, mode=mode, tau_a=0.05)
    full, saved = [], {}

    def keep(r, ck):
        full.append(r)
        if r.iteration == 1:
            saved["blob"] = ck().to_bytes()

    ref = deid.run_deid(src, AppearanceStandIn(), cfg, on_iteration=keep, device="cpu", network=net)
    state = deid.DeidState.from_bytes(saved["blob"])
    assert state.iteration == 2 and (state.base is not None) == (mode == "evolve")
    resumed = deid.run_deid(src, AppearanceStandIn(), cfg, resume=state, device="cpu", network=net)
    assert [r.iteration for r in resumed.records] == [r.iteration for r in full[2:]]
    assert len(full) >= 4
    for a, b in zip(resumed.records, full[2:], strict=True):
        assert a.score_a == pytest.approx(b.score_a, abs=1e-4)
        assert a.score_b == pytest.approx(b.score_b, abs=1e-4)
    assert resumed.stop_reason == ref.stop_reason
    assert np.abs(resumed.context.astype(int) - ref.context.astype(int)).max() <= 1


def test_resume_refuses_another_parameterisation(synthetic_context, tiny_cfru):
    net = tiny_cfru
    src = deid.DeidSource(synthetic_context)
    blob = {}
    deid.run_deid(
        src,
        ConstantProxy(0.9),
        _cfg(max_iterations=1),
        on_iteration=lambda r, ck: blob.setdefault("s", ck()),
        device="cpu",
        network=net,
    )
    with pytest.raises(ValueError, match="parameterisation"):
        deid.run_deid(
            src,
            ConstantProxy(0.9),
            _cfg(parameterisation="pixels"),
            resume=blob["s"],
            device="cpu",
            network=net,
        )


def test_batch_faces_stop_independently(synthetic_context, tiny_cfru):
    net = tiny_cfru
    easy = deid.DeidSource(synthetic_context)
    hard = deid.DeidSource(np.full((300, 300, 3), 128, np.uint8))

    class Mixed:
        def __call__(self, src, out):
            p = AppearanceStandIn()(src, out)
            # The flat grey face never gets below τA.
            return torch.where(src.std(dim=(1, 2, 3)) < 1, 0.9 + 0.0 * p, p)

    cfg = _cfg(max_iterations=8, tau_a=0.6, convergence_window=50)
    res = deid.run_deid_batch([easy, hard], Mixed(), cfg, device="cpu", network=net)
    assert res[0].stop_reason == deid.STOP_SUCCESS
    assert res[1].stop_reason == deid.STOP_MAX_ITERATIONS
    assert len(res[0].records) < len(res[1].records) == 9


def test_pixels_baseline_runs(synthetic_context, tiny_cfru):
    net = tiny_cfru
    res = deid.run_deid(
        deid.DeidSource(synthetic_context),
        AppearanceStandIn(),
        _cfg(parameterisation="pixels", max_iterations=2),
        device="cpu",
        network=net,
    )
    diff = np.abs(res.context.astype(int) - synthetic_context.astype(int))
    assert diff.max() <= 13  # pixels_eps 12 plus rounding


def test_composite_round_trip_on_a_real_photo(portrait_source):
    s = portrait_source
    # Difference mode (what the loop uses): an unchanged crop leaves the photo as it was.
    same = composite(s.photo, s.context, s.box, s.landmarks, context_src=s.context)
    assert np.abs(same.astype(int) - s.photo).max() <= 1
    # Both modes put the change where the crop came from: re-cropping gives it back.
    inverted = 255 - s.context
    changed = composite(s.photo, inverted, s.box, s.landmarks)
    again = faces.context_crop(changed, s.box, s.landmarks).astype(float)
    assert np.abs(again - inverted)[40:260, 40:260].mean() < 3.0
    brighter = np.clip(s.context.astype(int) + 30, 0, 255).astype(np.uint8)
    changed = composite(s.photo, brighter, s.box, s.landmarks, context_src=s.context)
    again = faces.context_crop(changed, s.box, s.landmarks).astype(float)
    assert np.abs(again - brighter)[40:260, 40:260].mean() < 3.0


def test_final_score_b_on_the_saved_file(portrait_source, tmp_path):
    net = None  # the real dlib ResNet port
    from PIL import Image

    s = portrait_source
    res = deid.run_deid(s, AppearanceStandIn(), _cfg(max_iterations=1), device="cpu", network=net)
    assert res.photo is not None and res.photo.shape == s.photo.shape
    path = tmp_path / "out.png"
    Image.fromarray(res.photo).save(path)
    fin = deid.score_saved_output(s.chip, str(path))
    assert fin.detected and fin.score.per_cfru[0].name == "dlib_resnet_v1"
    assert fin.matches and fin.score_b >= 0.5
    blank = deid.score_saved_output(s.chip, np.zeros((200, 200, 3), np.uint8))
    assert not blank.detected and blank.score_b == 0.0


def test_the_saved_file_is_not_detected_or_embedded_twice(portrait_source, monkeypatch):
    """A confirmed candidate comes back as the saved PNG (the same bytes): its detection and
    embeddings come from the memo, with the same figures; one changed pixel recomputes."""
    import io

    from PIL import Image

    from models_app.deid import confirm
    from models_app.vision import faces

    s = portrait_source
    confirm._FRESH_FACES.clear()
    confirm._EMBEDDINGS.clear()
    calls = {"detect": 0}
    real = faces.detect_and_align

    def counting(rgb, *a, **k):
        calls["detect"] += 1
        return real(rgb, *a, **k)

    monkeypatch.setattr(faces, "detect_and_align", counting)
    photo = np.clip(s.photo.astype(int) + 12, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    first = deid.score_saved_output(s.chip, buf.getvalue())
    assert calls["detect"] == 1 and confirm._EMBEDDINGS.misses == 2
    again = deid.score_saved_output(s.chip, photo)  # decoded PNG == the array
    assert calls["detect"] == 1 and confirm._EMBEDDINGS.misses == 2
    assert again.score_b == first.score_b and np.array_equal(again.chip, first.chip)
    # Uncached, the same figure: the memo changes the time only.
    ens = confirm.cfru_mod.build_ensemble(confirm.FINAL_ENSEMBLE)
    assert ens.score_b(s.chip, first.chip).score == pytest.approx(first.score_b, abs=1e-12)
    other = photo.copy()
    other[0, 0] ^= 1
    deid.score_saved_output(s.chip, other)
    assert calls["detect"] == 2  # one pixel differs: detected afresh


def test_change_mask_keeps_only_what_survives_compositing(portrait_source):
    from models_app.deid.composite import change_mask

    s = portrait_source
    m = change_mask(s.photo.shape, s.box, s.landmarks)
    assert m.shape == (300, 300) and m.dtype == np.float32
    assert m[150, 150] == 1.0 and m[0, 0] < 0.05  # face centre kept, the border feathered
    # A crop hanging over the photo's edge: zero where get_face_chip had no photo pixels.
    small = s.photo[: s.photo.shape[0] // 2 + 40]
    m_small = change_mask(small.shape, s.box, s.landmarks)
    assert m_small[290, 150] == 0.0 and m_small.sum() < m.sum()
    # The loop changes nothing outside the mask (here: it recolours, nothing else moves).
    res = deid.run_deid(
        deid.DeidSource(s.context, small, s.box, s.landmarks),
        AppearanceStandIn(),  # rewards change: the best record is a changed image
        # About the mask, not the colour: lr 0.5 recolours past the natural range, which
        # would (rightly) keep the unchanged source as the best record.
        _cfg(max_iterations=3, lr=0.5, confirm_saved=False,
             loss=LossWeights(lambda_natural=0.0)),
        device="cpu",
    )
    outside = m_small == 0
    assert np.array_equal(res.context[outside], s.context[outside])
    assert (res.context[~outside] != s.context[~outside]).any()


class LowProxy:
    """P(same) low on crops, high on anything else the caller decides: for confirmation."""

    def __init__(self, p: float) -> None:
        self.p = p
        self.calls = 0

    def __call__(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.p + 0.0 * out.mean(dim=(1, 2, 3))


@pytest.mark.slow
def test_success_is_confirmed_on_the_saved_file(portrait_source):
    s = portrait_source
    proxy = LowProxy(0.1)  # "different" at once: the first record is a candidate success
    res = deid.run_deid(s, proxy, _cfg(max_iterations=3), device="cpu")
    rec = res.records[0]
    # Confirmed through composite -> fresh detection -> dlib runtime and the proxy's fresh crop.
    assert res.stop_reason == deid.STOP_SUCCESS and rec.confirmed
    assert rec.saved_score_a == pytest.approx(0.1) and rec.saved_score_b >= 0.5
    assert proxy.calls >= 2  # the loop's own call and the fresh crop's
    # A photo whose saved output loses the face fails confirmation: never a success (no
    # start noise: an unchanged crop puts nothing into the blank photo, so no face is there).
    blank = deid.DeidSource(s.context, np.zeros_like(s.photo), s.box, s.landmarks)
    res = deid.run_deid(blank, LowProxy(0.1), _cfg(max_iterations=2, start_noise=0.0),
                        device="cpu")
    assert res.stop_reason != deid.STOP_SUCCESS
    assert all(r.saved_score_b == 0.0 for r in res.records if r.saved_score_b is not None)
    # Without confirmation the in-loop scores decide, as before.
    res = deid.run_deid(blank, LowProxy(0.1), _cfg(confirm_saved=False), device="cpu")
    assert res.stop_reason == deid.STOP_SUCCESS and res.records[0].saved_score_a is None


class _PeakedProxy:
    """P(same) from the squared distance of the two crops' 8x8 layouts: its gradient is
    exactly zero where output = source, as any proxy that compares the two images is."""

    def __call__(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        a, b = F.adaptive_avg_pool2d(src, 8), F.adaptive_avg_pool2d(out, 8)
        return torch.sigmoid(4.0 - (a - b).pow(2).mean(dim=(1, 2, 3)) / 20.0)


def test_the_start_noise_leaves_the_identity_where_a_proxy_has_no_gradient(
    synthetic_context, tiny_cfru
):
    src = deid.DeidSource(synthetic_context)
    runs = {}
    for noise in (0.0, 0.05):
        # Only score-A steers, on the output itself (EOT noise would move it by itself).
        weights = LossWeights(lambda0=0.0, lambda_taps={}, lambda_guard=0.0,
                                   lambda_prior=0.0, lambda_margin=0.0)
        cfg = _cfg(max_iterations=12, start_noise=noise, convergence_window=50,
                   eot=EOTConfig(jpeg_prob=0.0, confirm_samples=2, proxy=False), tau_a=0.01,
                   loss=weights)
        runs[noise] = deid.run_deid(src, _PeakedProxy(), cfg, device="cpu", network=tiny_cfru)
    # Iteration 0 is the source itself either way (the same EOT draw: the same score).
    assert runs[0.0].records[0].score_a == pytest.approx(runs[0.05].records[0].score_a)
    still = runs[0.0].records[-1].score_a
    moved = runs[0.05].records[-1].score_a
    assert moved < still - 0.05, (still, moved)
