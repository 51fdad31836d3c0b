"""dlib's ResNet in PyTorch: equality with dlib, gradients, taps."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch
from vision_chips import lfw_chips, packaged_chips

from models_app.vision import dlib_dat
from models_app.vision import dlib_resnet as dr

TOL = 1e-4


@lru_cache(maxsize=1)
def _dlib_model():
    import dlib

    return dlib.face_recognition_model_v1(str(dlib_dat.default_model_path()))


def dlib_single(chips: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(_dlib_model().compute_face_descriptor(c)) for c in chips])


def dlib_batch(chips: np.ndarray) -> np.ndarray:
    return np.asarray(_dlib_model().compute_face_descriptor(list(chips)))


def torch_embed(chips: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return dr.get_dlib_resnet()(dr.chips_to_tensor(chips)).double().numpy()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------ equality


def test_equal_to_dlib_packaged_chips_single_and_batched():
    chips = packaged_chips()
    ref = dlib_single(chips)
    np.testing.assert_allclose(dlib_batch(chips), ref, atol=1e-6)  # dlib agrees with itself
    np.testing.assert_allclose(torch_embed(chips), ref, atol=TOL, rtol=0)  # batched
    for i in range(len(chips)):  # one at a time
        np.testing.assert_allclose(torch_embed(chips[i]), ref[i : i + 1], atol=TOL, rtol=0)
    # Sanity: the face chips are one person, the procedural ones are not faces of her.
    d = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
    assert d[:4, :4].max() < 0.6 and d[:4, 4:].min() > 0.6


def test_equal_to_dlib_lfw_chips_single_and_batched():
    chips = lfw_chips()
    ref = dlib_batch(chips)
    np.testing.assert_allclose(torch_embed(chips), ref, atol=TOL, rtol=0)
    for i in (0, 3):
        np.testing.assert_allclose(torch_embed(chips[i]), ref[i : i + 1], atol=TOL, rtol=0)
    d = np.linalg.norm(ref[:, None] - ref[None], axis=-1)
    assert d[~np.eye(len(ref), dtype=bool)].min() > 0.6  # six different people


def test_equal_to_dlib_in_float64():
    chips = packaged_chips()[:2]
    with torch.no_grad():
        out = dr.get_dlib_resnet(dtype=torch.float64)(
            dr.chips_to_tensor(chips, dtype=torch.float64)
        )
    np.testing.assert_allclose(out.numpy(), dlib_batch(chips), atol=TOL, rtol=0)


def test_add_prev_fills_missing_values_with_zeros_at_the_high_end():
    a = torch.ones(1, 4, 3, 3)
    b = torch.full((1, 2, 4, 4), 2.0)
    out = dr._add_prev(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert torch.all(out[:, :2, :3, :3] == 3)
    assert torch.all(out[:, 2:, :3, :3] == 1)
    assert torch.all(out[:, :2, 3, :] == 2) and torch.all(out[:, 2:, 3, :] == 0)


# ----------------------------------------------------------------------------- gradients


@lru_cache(maxsize=1)
def _model64() -> dr.DlibResNet:
    return dr.get_dlib_resnet(dtype=torch.float64)


def test_gradient_matches_finite_differences_on_a_patch():
    """gradcheck (float64) w.r.t. a 3x4x4 patch around the left eye of a real chip."""
    model = _model64()
    base = dr.chips_to_tensor(packaged_chips()[0], dtype=torch.float64)
    proj = torch.randn(128, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y0, x0 = 60, 50

    def f(patch: torch.Tensor) -> torch.Tensor:
        x = base.clone()
        x[:, :, y0 : y0 + 4, x0 : x0 + 4] = patch
        return model(x) @ proj

    patch = base[:, :, y0 : y0 + 4, x0 : x0 + 4].clone().requires_grad_(True)
    # fast_mode compares random projections of the Jacobian: a few passes instead of 2 per input.
    assert torch.autograd.gradcheck(f, (patch,), eps=1e-4, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_directional_derivative_of_embedding_and_taps():
    """Whole-input check: (f(x+hv) - f(x-hv)) / 2h against <grad f, v>, in float64."""
    model = _model64()
    x = dr.chips_to_tensor(packaged_chips()[1], dtype=torch.float64).requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    u = torch.randn(128, generator=g, dtype=torch.float64)

    def f(t: torch.Tensor) -> torch.Tensor:
        emb, taps = dr.embed_with_taps(t, model)
        return emb @ u + taps["level3"].square().mean() + taps["stem"].mean()

    (grad,) = torch.autograd.grad(f(x).sum(), x)
    analytic = float((grad * v).sum())
    # The network is piecewise linear: a step small enough to cross no relu/max-pool kink makes
    # the central difference exact up to rounding (at h = 1e-3 some kinks are crossed).
    with torch.no_grad():
        numeric = [float((f(x + h * v) - f(x - h * v)).sum() / (2 * h)) for h in (1e-4, 3e-5)]
    assert abs(analytic) > 1e-4
    assert min(abs(n - analytic) for n in numeric) <= 1e-6 * abs(analytic)


# ---------------------------------------------------------------------------------- taps


def test_taps_names_shapes_and_embedding():
    chips = dr.chips_to_tensor(packaged_chips()[:2])
    with torch.no_grad():
        emb, taps = dr.embed_with_taps(chips)
        plain = dr.get_dlib_resnet()(chips)
    assert emb.shape == (2, 128)
    torch.testing.assert_close(emb, plain, rtol=0, atol=0)
    assert tuple(taps) == dr.TAP_NAMES
    for name, t in taps.items():
        assert tuple(t.shape) == (2, *dr.TAP_SHAPES[name]), name
        assert torch.all(t >= 0), name  # every tap follows a relu (pooled: mean of one)
    torch.testing.assert_close(taps["pooled"], taps["level5"].mean(dim=(2, 3)))
    # Not unit length (dlib's metric loss does not normalise).
    assert not torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-3)


def test_input_validation():
    model = dr.get_dlib_resnet()
    with pytest.raises(ValueError, match="150, 150"):
        model(torch.zeros(1, 3, 112, 112))
    with pytest.raises(ValueError, match="150, 150, 3"):
        dr.chips_to_tensor(np.zeros((2, 150, 150), dtype=np.uint8))
    assert dr.chips_to_tensor(packaged_chips()[0]).shape == (1, 3, 150, 150)


def test_parameters_are_frozen_and_shared():
    model = dr.get_dlib_resnet()
    assert model is dr.get_dlib_resnet("cpu")
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training
