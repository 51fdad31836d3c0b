"""The proxy network: shapes, symmetry, cached-features equivalence, end-to-end gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models_app.proxy.calibration import fit_platt
from models_app.proxy.config import ProxyConfig
from models_app.proxy.network import HumanProxy
from models_app.vision import dlib_resnet
from tests.helpers import require_lfw

from .synthetic import TINY, random_contexts


@pytest.fixture(scope="module")
def model() -> HumanProxy:
    torch.manual_seed(0)
    return HumanProxy().eval()


@pytest.fixture(scope="module")
def contexts() -> torch.Tensor:
    return random_contexts(4, seed=1)


def test_forward_shape_range_symmetry(model, contexts):
    src, out = contexts[:2], contexts[2:]
    with torch.no_grad():
        p = model(src, out)
        q = model(out, src)
        pa = model(src, out, branch="appearance")
    assert p.shape == (2,) and pa.shape == (2,)
    assert torch.all((p > 0) & (p < 1)) and torch.all((pa > 0) & (pa < 1))
    torch.testing.assert_close(p, q)
    assert not model.prior


def test_bad_inputs(model, contexts):
    with pytest.raises(ValueError, match="300, 300"):
        model(contexts[:, :, :150, :150], contexts[:, :, :150, :150])
    with pytest.raises(ValueError, match="float"):
        model(contexts.to(torch.uint8), contexts.to(torch.uint8))
    with pytest.raises(ValueError, match="shapes differ"):
        model(contexts[:1], contexts[:2])
    with pytest.raises(ValueError, match="branch"):
        model(contexts[:1], contexts[1:2], branch="identity")
    with pytest.raises(ValueError, match="unknown"):
        HumanProxy(ProxyConfig(taps=("nope",)))


def test_cached_bank_gives_the_same_scores(model, contexts):
    """Training runs on an ImageBank; it must score exactly like forward() on images."""
    bank = model.encode_images(contexts, ["a", "b", "c", "d"], batch_size=3)
    ia, ib = torch.tensor([0, 1, 2]), torch.tensor([2, 3, 3])
    with torch.no_grad():
        direct = model(contexts[ia], contexts[ib])
        direct_app = model(contexts[ia], contexts[ib], branch="appearance")
    torch.testing.assert_close(model.score_bank(bank, ia, ib), direct, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        model.score_bank(bank, ia, ib, branch="appearance"), direct_app, atol=1e-5, rtol=1e-5
    )
    # uint8 HWC input (what storage gives) encodes the same as float CHW.
    u8 = contexts.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    bank8 = model.encode_images(u8, ["a", "b", "c", "d"])
    assert bank8.identity.shape == (4, model.config.identity_dim)
    assert bank8.small.shape == (4, 3, 75, 75)


def test_appearance_branch_does_not_run_the_cfru(model, contexts, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the CFRU ran")

    monkeypatch.setattr(dlib_resnet, "get_dlib_resnet", boom)
    with torch.no_grad():
        model(contexts[:1], contexts[1:2], branch="appearance")


def test_gradient_reaches_both_images(model, contexts):
    src = contexts[:1].clone().requires_grad_(True)
    out = contexts[1:2].clone().requires_grad_(True)
    model(src, out).sum().backward()
    for g in (src.grad, out.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
        # Both the recognition chip (identity) and the surroundings (appearance) matter.
        assert g[..., 75:225, 75:225].abs().sum() > 0
        assert g[..., :60, :].abs().sum() > 0


def test_gradient_finite_for_identical_images(model, contexts):
    """The de-identification loop starts from out == src: no 0/0 in any distance."""
    src = contexts[:1]
    out = src.clone().requires_grad_(True)
    p = model(src, out)
    p.sum().backward()
    assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0


def test_directional_derivative_float64(model, contexts):
    """grad . v against a central finite difference, in float64, w.r.t. the output image."""
    m64 = HumanProxy(model.config).double().eval()
    m64.load_state_dict(model.state_dict())
    src = contexts[:1].double()
    out = contexts[1:2].double().requires_grad_(True)
    m64(src, out).sum().backward()
    g = out.grad.detach()
    v = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    eps = 1e-6  # small enough that no ReLU/max-pool switches along the path
    with torch.no_grad():
        fd = (m64(src, out + eps * v) - m64(src, out - eps * v)).item() / (2 * eps)
        # A few single pixels: one in the chip, one in the hair band, one in the background.
        for y, x in ((150, 150), (60, 150), (10, 10)):
            e = torch.zeros_like(out)
            e[0, 1, y, x] = 1.0
            fdp = (m64(src, out + 1e-3 * e) - m64(src, out - 1e-3 * e)).item() / 2e-3
            assert fdp == pytest.approx(g[0, 1, y, x].item(), rel=1e-3, abs=1e-10)
    assert fd == pytest.approx(float((g * v).sum()), rel=1e-3)


def test_fit_platt_recovers_scaling():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, generator=g, dtype=torch.float64) * 3
    y = (torch.rand(4000, generator=g, dtype=torch.float64) < torch.sigmoid(0.5 * z - 1)).double()
    a, b = fit_platt(z, y)
    assert a == pytest.approx(0.5, abs=0.08) and b == pytest.approx(-1.0, abs=0.15)


@pytest.mark.parametrize(
    "overrides", [{}, {"fusion": "mlp", "identity_vectors": True}, {"identity_vectors": True}]
)
def test_config_variants_score_and_roundtrip(overrides):
    from models_app.proxy.io import load_proxy, proxy_to_bytes

    from .synthetic import synthetic_bank

    cfg = ProxyConfig(**{**TINY.to_dict(), **overrides})
    m = HumanProxy(cfg).eval()
    bank, _ = synthetic_bank(n_subjects=2, per_subject=2, config=cfg)
    ia, ib = torch.tensor([0, 1]), torch.tensor([2, 3])
    m.fit_feature_scaling(bank, torch.tensor([0, 0, 1]), torch.tensor([1, 2, 3]))
    p = m.score_bank(bank, ia, ib)
    assert p.shape == (2,) and torch.all((p > 0) & (p < 1))
    again = load_proxy(proxy_to_bytes(m))
    assert again.config == cfg
    torch.testing.assert_close(again.score_bank(bank, ia, ib), p, atol=0, rtol=0)
    with pytest.raises(ValueError, match="fusion"):
        HumanProxy(ProxyConfig(fusion="sum"))


def test_real_lfw_faces(model):
    """On real LFW context crops: the dlib distance in the cached identity features separates
    one person from another, and the bank still matches forward()."""
    lfw_dir = require_lfw()
    from PIL import Image

    from models_app.vision import faces

    names = [
        "Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
        "Aaron_Peirsol/Aaron_Peirsol_0003.jpg",
        "Abel_Pacheco/Abel_Pacheco_0001.jpg",
    ]
    crops = []
    for n in names:
        rgb = np.asarray(Image.open(lfw_dir / n).convert("RGB"))
        face = faces.detect_and_align(rgb)
        assert face is not None
        crops.append(faces.context_crop(rgb, face.box, face.landmarks))
    bank = model.encode_images(np.stack(crops), names)
    e = bank.identity[:, :128]
    assert (e[0] - e[1]).norm() < 0.6 < (e[0] - e[2]).norm()
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        direct = model(x[[0, 0]], x[[1, 2]])
    torch.testing.assert_close(
        model.score_bank(bank, torch.tensor([0, 0]), torch.tensor([1, 2])),
        direct,
        atol=1e-5,
        rtol=1e-5,
    )


def _recoloured(x: torch.Tensor) -> torch.Tensor:
    """Hue rotated 120° keeping BT.601 luminance, as the battery does (float, unclipped)."""
    from models_app.vision.battery import _FROM_YIQ, _TO_YIQ

    to, back = torch.tensor(_TO_YIQ, dtype=x.dtype), torch.tensor(_FROM_YIQ, dtype=x.dtype)
    t = np.deg2rad(120)
    rot = torch.tensor([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]],
                       dtype=x.dtype)
    return torch.einsum("ij,njhw->nihw", back @ rot @ to, x)


def test_default_proxy_sees_luminance_so_hue_earns_nothing(contexts):
    torch.manual_seed(0)
    lum = HumanProxy().eval()
    torch.manual_seed(0)
    rgb = HumanProxy(ProxyConfig(colour="rgb")).eval()
    src, out = contexts[:2], contexts[2:]
    with torch.no_grad():
        torch.testing.assert_close(lum(src, _recoloured(out)), lum(src, out), atol=1e-4, rtol=0)
        moved = (rgb(src, _recoloured(out), branch="appearance")
                 - rgb(src, out, branch="appearance")).abs().max()
    assert moved > 1e-3  # the RGB branch does read hue: the option is what makes the difference


def test_mirror_symmetric_appearance_ignores_mirroring(model, contexts):
    src, out = contexts[:2], contexts[2:]
    with torch.no_grad():
        p = model(src, out, branch="appearance")
        q = model(src, out.flip(-1), branch="appearance")
    torch.testing.assert_close(p, q, atol=1e-5, rtol=0)


def test_unknown_colour_is_refused():
    with pytest.raises(ValueError, match="colour must be one of"):
        ProxyConfig(colour="hsv")


def test_and_fusion_is_the_product_of_identity_and_appearance():
    """fusion="and": P(same) = P_identity x P_appearance, stable at large logits, so a
    clearly different appearance vetoes a clear identity match."""
    from models_app.proxy.network import _and_logit

    x = torch.tensor([-30.0, -2.0, 0.0, 3.0, 15.0, 40.0, 40.0])
    y = torch.tensor([5.0, 1.0, 0.0, -3.0, 15.0, -6.0, 40.0])
    p = torch.sigmoid(_and_logit(x.double(), y.double()))
    torch.testing.assert_close(p, torch.sigmoid(x.double()) * torch.sigmoid(y.double()))
    assert torch.isfinite(_and_logit(x, y)).all()
    assert float(torch.sigmoid(_and_logit(torch.tensor(40.0), torch.tensor(-6.0)))) < 0.01
    assert HumanProxy().config.fusion == "and" and not hasattr(HumanProxy(), "gate")
