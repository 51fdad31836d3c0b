"""Parameterisations, EOT and metrics: identities, bounds, gradients (pure, fast)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models_app.deid import eot, metrics, params
from models_app.vision.chips import CHIP_OFFSET


def _base(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 10, 10, generator=g) * 200 + 20
    return torch.nn.functional.interpolate(low, size=(300, 300), mode="bilinear").contiguous()


@pytest.mark.parametrize("name", ["style", "pixels"])
def test_zero_params_are_the_identity(name):
    p = params.build_parameterisation(name)
    base = _base()
    out = p.render(base, p.init_params(1))
    assert out.shape == base.shape
    assert (out - base).abs().max() < 1e-3
    assert float(p.prior(p.init_params(1))[0]) == 0.0


def test_region_masks_partition_the_crop():
    m = params.region_masks()
    assert m.shape == (3, 300, 300)
    assert torch.allclose(m.sum(0), torch.ones(300, 300), atol=1e-5)
    assert m.min() >= 0
    # Face at the centre, hair above it, background in the corner.
    assert m[0, 160, 150] > 0.95 and m[1, 60, 150] > 0.9 and m[2, 5, 5] > 0.99


def test_style_is_bounded_differentiable_and_perceptible():
    p = params.StyleParams()
    base = _base(1)
    theta = torch.randn(1, p.n_params, generator=torch.Generator().manual_seed(0)) * 3
    theta.requires_grad_(True)
    out = p.render(base, theta)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 255.0
    out.mean().backward()
    g = theta.grad[0]
    assert torch.isfinite(g).all()
    for key in ("warp", "region", "shading"):
        assert g[p.slices[key]].abs().sum() > 0, f"no gradient reaches the {key} parameters"
    # Saturated parameters make a large, visible change (unlike the pixels residual).
    assert metrics.mean_abs_change(base[0].permute(1, 2, 0), out[0].detach().permute(1, 2, 0)) > 15


def test_pixels_residual_is_bounded_by_eps():
    p = params.PixelParams(eps=4.0)
    base = _base(2)
    out = p.render(base, torch.full((1, p.n_params), 50.0))
    assert float((out - base).abs().max()) <= 4.0 + 1e-4


def test_unknown_parameterisation_is_refused():
    with pytest.raises(ValueError, match="unknown parameterisation"):
        params.build_parameterisation("gan")


def test_identity_cut_is_the_recognition_chip():
    ctx = (torch.rand(2, 3, 300, 300) * 255).round()
    chips = eot.cut_chips(ctx, eot.identity_affine(2))
    o = CHIP_OFFSET
    assert torch.allclose(chips, ctx[..., o : o + 150, o : o + 150], atol=0.02)  # float32 grid
    plain = eot.eot_chips(ctx, eot.EOTConfig.none())
    assert torch.equal(plain, ctx[..., o : o + 150, o : o + 150])


def test_eot_chips_are_integer_jittered_and_differentiable():
    ctx = (torch.rand(1, 3, 300, 300) * 255).requires_grad_(True)
    cfg = eot.EOTConfig(samples=3, jpeg_prob=1.0)
    chips = eot.eot_chips(ctx, cfg, torch.Generator().manual_seed(0))
    assert chips.shape == (3, 3, 150, 150)
    assert torch.equal(chips, chips.round()) and chips.min() >= 0 and chips.max() <= 255
    chips.sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0


def test_eot_contexts_jitter_the_whole_crop_with_the_chips_draw():
    o = CHIP_OFFSET
    ctx = (torch.rand(2, 3, 300, 300) * 255).round()
    same, chips = eot.eot_contexts(ctx, eot.EOTConfig.none())
    assert torch.equal(same, ctx) and torch.equal(chips, ctx[..., o : o + 150, o : o + 150])
    # Same draws as eot_chips: the chip is (up to bilinear rounding) the jittered crop's centre.
    cfg = eot.EOTConfig(samples=2, jpeg_prob=0.0, max_shift_px=2.0, max_rotate_deg=2.0)
    smooth = torch.nn.functional.avg_pool2d(ctx, 9, 1, 4)  # smooth: bilinear paths agree
    views, chips = eot.eot_contexts(smooth, cfg, torch.Generator().manual_seed(3))
    direct = eot.eot_chips(smooth, cfg, torch.Generator().manual_seed(3))
    assert views.shape == (4, 3, 300, 300) and torch.equal(chips, views[..., o : o + 150, o : o + 150])
    assert (chips - direct).abs().mean() < 1.0
    assert not torch.equal(views[0], smooth[0])  # it did move
    x = smooth.clone().requires_grad_(True)
    eot.eot_contexts(x, cfg, torch.Generator().manual_seed(3))[0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_jpeg_straight_through_is_the_real_codec_forward_and_identity_backward():
    x = (torch.rand(1, 3, 64, 64) * 255).round().requires_grad_(True)
    y = eot.jpeg_straight_through(x, [75])
    arr = x.detach().to(torch.uint8).permute(0, 2, 3, 1).numpy()[0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=75)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert np.array_equal(y.detach().permute(0, 2, 3, 1).numpy()[0].astype(np.uint8), ref)
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_ssim_and_mean_abs_change():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(64, 64, 3)).astype(np.uint8)
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a + rng.normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    s = metrics.ssim(a, noisy)
    assert -1.0 < s < 0.95
    assert metrics.ssim(noisy, a) == pytest.approx(s)
    # Brightness shift of a smooth image: structure kept, SSIM stays high.
    smooth = np.kron(rng.uniform(50, 200, (8, 8, 3)), np.ones((8, 8, 1)))
    assert metrics.ssim(smooth, smooth + 10) > 0.9
    assert metrics.mean_abs_change(a, a) == 0.0
    assert metrics.mean_abs_change(np.zeros((4, 4, 3)), np.full((4, 4, 3), 7.0)) == 7.0
    with pytest.raises(ValueError):
        metrics.ssim(a, a[:32])
