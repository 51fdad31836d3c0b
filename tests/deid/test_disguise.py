"""The ``disguise`` parameterisation (issue 13, item 3), the head-shaped blend and its seam
figure, and donor choice: pure computation on the packaged portrait (always available)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models_app import deid
from models_app.deid.composite import blend_mask, composite, head_mask, seam_figure
from models_app.deid.config import DeidConfig
from models_app.deid.disguise import SCALARS, DisguiseParams, DisguiseRanges, lab_to_rgb, rgb_to_lab
from models_app.deid.donors import donor_distance, donor_features, select_donors
from models_app.deid.errors import DeidConfigError
from models_app.deid.metrics import srgb_to_lab
from models_app.vision.battery import brightness, mirror, recolour, shift


def _donor(ctx: np.ndarray) -> np.ndarray:
    """Another aligned 'head' for the mechanics: the portrait mirrored, darker and warmer."""
    return recolour(brightness(mirror(ctx), 0.8), 25)


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().contiguous()


@pytest.fixture(scope="module")
def disguise_setup():
    from tests.deid.conftest import _portrait_source

    s = _portrait_source()
    donor = _donor(s.context)
    return s, donor, DisguiseParams(300, sources=[s.context], donors=[donor])


def test_lab_round_trip_matches_numpy():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1, 3, 20, 20)).astype(np.float32)
    lab = rgb_to_lab(torch.from_numpy(img).double())
    ref = srgb_to_lab(img[0].transpose(1, 2, 0).astype(np.uint8))
    np.testing.assert_allclose(lab[0].permute(1, 2, 0).numpy(), ref, atol=1e-4)
    back = lab_to_rgb(lab)
    np.testing.assert_allclose(back.numpy(), img, atol=1e-3)


def test_identity_at_zero_strength(disguise_setup):
    s, _, p = disguise_setup
    base = _tensor(s.context)
    theta = p.init_params(1)
    assert torch.equal(theta, torch.zeros(1, p.n_params))
    assert torch.equal(p.render(base, theta), base)
    # Every other parameter at full range, the donor share at 0: still the source.
    theta = torch.full((1, p.n_params), 5.0)
    theta[:, 0] = 0.0
    assert torch.equal(p.render(base, theta), base)
    # The margin is paid in full at the identity, and not at all above the margin.
    assert float(p.margin(torch.zeros(1, p.n_params))) == pytest.approx(0.95**2)
    assert float(p.margin(torch.full((1, p.n_params), 3.0))) == 0.0


def test_parameters_stay_in_bounds(disguise_setup):
    s, _, p = disguise_setup
    r = p.r
    base = _tensor(s.context)
    for scale in (0.5, 5.0, 1e3):
        theta = torch.randn(4, p.n_params, generator=torch.Generator().manual_seed(1)) * scale
        v = p.values(theta)
        assert ((v["share"] >= 0) & (v["share"] <= 1)).all()
        assert (v["inner_sx"] - 1).abs().max() <= r.inner_scale + 1e-6
        assert (v["feather"] >= r.feather_px[0] - 1e-6).all()
        assert (v["feather"] <= r.feather_px[1] + 1e-6).all()
        assert (v["transfer"] >= r.transfer[0] - 1e-6).all()
        assert (v["transfer"] <= r.transfer[1] + 1e-6).all()
        for key, bound in (("hair_l", r.hair_lightness), ("hair_a", r.hair_chroma),
                           ("brow_dark", r.brow_darkness), ("band", r.band_gain),
                           ("beard", r.beard), ("eyes", r.eye_shading),
                           ("proportions", r.proportions)):
            assert v[key].abs().max() <= bound + 1e-6, key
        out = p.render(base.expand(1, -1, -1, -1), theta[:1])
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 255
    # Ranges that would leave a photograph are refused.
    with pytest.raises(ValueError, match="hair_lightness"):
        DisguiseRanges(hair_lightness=0.9).validate()
    with pytest.raises(DeidConfigError) as exc:
        DeidConfig(parameterisation="disguise", disguise_ranges={"band_gain": 3.0}).validate()
    assert exc.value.field == "disguise_ranges"
    with pytest.raises(DeidConfigError) as exc:
        DeidConfig(disguise_ranges={"nonsense": 1}).validate()
    assert exc.value.field == "disguise_ranges"
    with pytest.raises(DeidConfigError) as exc:
        DeidConfig(blend="square").validate()
    assert exc.value.field == "blend"
    donor_around = {"surroundings": "donor"}
    with pytest.raises(DeidConfigError) as exc:  # the head blend would undo it
        DeidConfig(parameterisation="disguise", disguise_ranges=donor_around).validate()
    assert exc.value.field == "blend" and "rectangle" in str(exc.value)
    DeidConfig(parameterisation="disguise", disguise_ranges=donor_around,
               blend="rectangle").validate()


def test_every_parameter_has_a_gradient(disguise_setup):
    s, _, p = disguise_setup
    base = _tensor(s.context)
    theta = torch.randn(1, p.n_params, generator=torch.Generator().manual_seed(2)) * 0.5
    theta[:, 0] = 0.6  # a donor share well inside (0, 1)
    theta.requires_grad_(True)
    out = p.render(base, theta)
    # A fixed random projection of the image: every parameter must move it.
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    ((out * w).sum() + p.margin(theta).sum() + p.prior(theta).sum()).backward()
    g = theta.grad[0]
    assert torch.isfinite(g).all()
    zero = [SCALARS[i] for i in range(len(SCALARS)) if g[i] == 0]
    assert not zero, f"no gradient for {zero}"
    assert (g[p.slices["warp"]] != 0).sum() >= 0.9 * (p.slices["warp"].stop - p.slices["warp"].start)
    assert (g[p.slices["contour"]] != 0).any()
    # The margin pulls the share up while it is below the margin.
    t0 = torch.zeros(1, p.n_params, requires_grad=True)
    p.margin(t0).sum().backward()
    assert t0.grad[0, 0] < 0


def test_the_disguise_changes_the_head_only(disguise_setup):
    s, _, _ = disguise_setup
    # A donor with the source's own geometry (darker, warmer): the alignment is then close
    # to the identity and what changes is the donor's look.
    donor = recolour(brightness(s.context, 0.7), 25)
    p = DisguiseParams(300, sources=[s.context], donors=[donor])
    base = _tensor(s.context)
    theta = torch.zeros(1, p.n_params)
    theta[:, 0] = 3.0  # full donor share
    out = p.render(base, theta)[0].permute(1, 2, 0).numpy()
    diff = np.abs(out - s.context).mean(2)
    # The corners of the crop (the surroundings) are the source's; the head changed a lot.
    assert diff[:12, :12].max() < 1e-3 and diff[-12:, -12:].max() < 1e-3
    assert diff[60:120, 120:180].mean() > 5  # forehead/hair: the donor's
    # The inner face is the source's structure (aligned to the donor, colour-matched: an
    # affine change of its Lab values, so its luminance pattern correlates with the source's).
    lum_out = out[140:190, 125:175] @ np.array([0.299, 0.587, 0.114])
    lum_src = s.context[140:190, 125:175] @ np.array([0.299, 0.587, 0.114])
    assert np.corrcoef(lum_out.ravel(), lum_src.ravel())[0, 1] > 0.9


def test_donor_surroundings_take_the_donors_whole_crop(disguise_setup):
    """``surroundings="donor"``: the output is the donor's crop around the source's inner
    face (the presidential illusion); the source's surroundings are gone."""
    s, _, _ = disguise_setup
    donor = recolour(brightness(s.context, 0.7), 25)
    p = DisguiseParams(300, sources=[s.context], donors=[donor],
                       ranges=DisguiseRanges(surroundings="donor"))
    base = _tensor(s.context)
    theta = torch.zeros(1, p.n_params)
    theta[:, 0] = 3.0  # full donor share
    out = p.render(base, theta)[0].permute(1, 2, 0).numpy()
    # The corners are the donor's (not the source's, as with the default).
    assert np.abs(out[:12, :12] - donor[:12, :12]).max() < 1.0
    assert np.abs(out[:12, :12] - s.context[:12, :12]).mean() > 5
    lum_out = out[140:190, 125:175] @ np.array([0.299, 0.587, 0.114])
    lum_src = s.context[140:190, 125:175] @ np.array([0.299, 0.587, 0.114])
    assert np.corrcoef(lum_out.ravel(), lum_src.ravel())[0, 1] > 0.9  # the source's inner face
    # θ = 0 is still the unchanged source.
    same = p.render(base, torch.zeros(1, p.n_params))[0].permute(1, 2, 0).numpy()
    assert np.abs(same - s.context).max() < 1e-3
    with pytest.raises(ValueError, match="surroundings"):
        DisguiseRanges(surroundings="elsewhere").validate()


def test_donor_surroundings_are_composited_onto_the_donors_whole_photo(portrait_source,
                                                                       tiny_cfru):
    """With the donor's surroundings the saved photo is the donor's photo (aligned to the
    source's face) with the change set in: no rectangle of the source's own surroundings."""
    from tests.deid.test_deid_loop import AppearanceStandIn

    s = portrait_source
    donor_photo = brightness(recolour(s.photo, 25), 0.7)  # same geometry, other colours
    src = deid.DeidSource(s.context, s.photo, s.box, s.landmarks)
    src.take_donor_surroundings(donor_photo, s.box, s.landmarks)
    assert np.abs(src.backdrop.astype(int) - donor_photo).mean() < 2  # same alignment
    assert src.reference_photo is src.backdrop
    cfg = DeidConfig(parameterisation="disguise", max_iterations=3, confirm_saved=False,
                     ladder=(), blend="rectangle", disguise_ranges={"surroundings": "donor"})
    res = deid.run_deid(src, AppearanceStandIn(), cfg, device="cpu", network=tiny_cfru)
    h, w = s.photo.shape[:2]
    for corner in ((slice(0, 10), slice(0, 10)), (slice(h - 10, h), slice(w - 10, w))):
        out = res.photo[corner].astype(int)
        apart = np.abs(s.photo[corner].astype(int) - donor_photo[corner]).mean()
        assert apart > 3 and np.abs(out - donor_photo[corner]).mean() < 0.2 * apart
    # At full donor share (the loop holds it at the margin) the crop's border shows nothing.
    p = DisguiseParams(300, sources=[s.context], donors=[src.donor],
                       ranges=DisguiseRanges(surroundings="donor"))
    theta = torch.zeros(1, p.n_params)
    theta[:, 0] = 3.0
    ctx = p.render(_tensor(s.context), theta)[0].permute(1, 2, 0).round().clamp(0, 255)
    ctx = ctx.to(torch.uint8).numpy()
    photo = src.composite_output(ctx, "rectangle")
    seam = seam_figure(src.reference_photo, photo, s.box, s.landmarks, blend="rectangle")
    assert seam["passes"], seam
    with pytest.raises(ValueError, match="photo"):
        deid.DeidSource(s.context).take_donor_surroundings(donor_photo, s.box, s.landmarks)


def test_head_blend_leaves_no_rectangle(portrait_source):
    s = portrait_source
    m = head_mask()
    assert m[150, 150] == 1.0 and m.min() == 0.0
    # Zero on the whole crop border, so the crop's rectangle cannot show in the photo.
    assert blend_mask("head")[[0, -1], :].max() == 0.0 and blend_mask("head")[:, [0, -1]].max() == 0
    # A change of the whole crop: with the head blend nothing changes along the crop border;
    # with the rectangle blend the border shows (its gradient energy goes up).
    # On a smooth photo (the portrait blurred: little texture to hide an edge), the whole
    # crop brightened as a style output might be.
    from scipy.ndimage import gaussian_filter

    from models_app.vision import faces

    photo = gaussian_filter(s.photo.astype(float), (6, 6, 0)).astype(np.uint8)
    ctx = faces.context_crop(photo, s.box, s.landmarks)
    changed = np.clip(ctx.astype(int) + 40, 0, 255).astype(np.uint8)
    head = composite(photo, changed, s.box, s.landmarks, context_src=ctx, blend="head")
    rect = composite(photo, changed, s.box, s.landmarks, context_src=ctx)
    f_head = seam_figure(photo, head, s.box, s.landmarks, blend="head")
    f_rect = seam_figure(photo, rect, s.box, s.landmarks, blend="rectangle")
    assert f_head["border"] is not None and f_head["border"]["ratio"] <= 1.001
    assert f_head["passes"] is True
    assert f_rect["border"]["ratio"] > 1.001 and f_rect["passes"] is False
    # The photo outside the head oval is untouched; inside, the change is there.
    assert np.abs(head.astype(int) - photo)[:5].max() == 0
    assert np.abs(head.astype(int) - photo).max() >= 35


def test_donor_selection_prefers_similar_pose_light_and_skin(portrait_source):
    s = portrait_source
    ctx = s.context
    f = donor_features(ctx, s.landmarks)
    assert f.shape == (8,) and np.isfinite(f).all()
    assert donor_distance(f, f[None])[0] == 0.0
    pool = [
        brightness(ctx, 0.6),  # much darker light
        recolour(ctx, 40, 1.6),  # another skin tone
        mirror(brightness(ctx, 1.2)),  # light from the other side, brighter
        shift(ctx, 1, 1),  # nearly the same photo
    ]
    feats = np.stack([donor_features(im, s.landmarks) for im in pool])
    order = select_donors(f, feats, k=4)
    assert order[0] == 3 and sorted(order) == [0, 1, 2, 3]
    assert select_donors(f, feats[:0], k=2) == []


def test_donor_identity_distances_rank_donors_by_what_the_recogniser_keeps(portrait_source):
    from models_app.deid.disguise import donor_identity_distances
    from models_app.vision.battery import negate

    s = portrait_source
    ctx = s.context
    pool = [negate(ctx), brightness(ctx, 0.95), _donor(ctx)]
    d = donor_identity_distances(ctx, pool, DisguiseRanges(surroundings="donor"),
                                 s.change_mask("rectangle"))
    assert d.shape == (3,) and np.isfinite(d).all()
    # The source's own crop as a donor keeps its identity; a negative one does not.
    assert d[1] < 0.2 < d[0] and int(np.argmin(d)) == 1
    assert donor_identity_distances(ctx, []).shape == (0,)
    for bad in (0, 65, 2.5, True):
        with pytest.raises(ValueError, match="donor_candidates"):
            DisguiseRanges(donor_candidates=bad).validate()


def test_disguise_runs_in_the_loop(portrait_source, tiny_cfru):
    from tests.deid.test_deid_loop import AppearanceStandIn

    s = portrait_source
    src = deid.DeidSource(s.context, s.photo, s.box, s.landmarks, donor=_donor(s.context))
    cfg = DeidConfig(parameterisation="disguise", max_iterations=4, confirm_saved=False,
                     ladder=())
    res = deid.run_deid(src, AppearanceStandIn(), cfg, device="cpu", network=tiny_cfru)
    recs = res.records
    assert recs[0].loss["margin"] == pytest.approx(0.95**2, abs=1e-6)  # the identity, record 0
    assert recs[0].change["disguise_share"] == 0.0
    assert recs[-1].change["disguise_share"] > 0.2  # the margin pulls the donor in
    assert recs[-1].loss["margin"] < recs[0].loss["margin"]
    # Four steps do not reach the margin (share 0.95): the result says so.
    assert max(r.change["disguise_share"] for r in recs) < 0.95 and res.margin_kept is False
    assert res.photo is not None
    seam = seam_figure(s.photo, res.photo, s.box, s.landmarks, blend="head")
    assert seam["passes"]
    # Without a donor a disguise cannot run.
    with pytest.raises(ValueError, match="donor"):
        deid.run_deid(deid.DeidSource(s.context), AppearanceStandIn(), cfg, device="cpu",
                      network=tiny_cfru)
