"""The proxy's structure maps (models_app.proxy.structure): what they keep and ignore."""

from __future__ import annotations

import pytest
import torch

from models_app.proxy.config import ProxyConfig
from models_app.proxy.network import HumanProxy
from models_app.proxy.structure import BANDS, StructureMaps
from models_app.vision.filters import gaussian_blur


@pytest.fixture(scope="module")
def maps() -> StructureMaps:
    return StructureMaps()


def _textured(n: int, seed: int) -> torch.Tensor:
    """(n, 1, 300, 300) luminance with structure at every band up to ~16 c/fw."""
    g = torch.Generator().manual_seed(seed)
    x = gaussian_blur(torch.randn(n, 1, 300, 300, generator=g), 1.5)
    return (128 + 40 * x / x.std()).clamp(0, 255)


def _pairs(maps: StructureMaps, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return maps.pair_features(maps.maps(a), maps.maps(b))


def test_identical_images_match_perfectly(maps):
    x = _textured(2, 0)
    f = _pairs(maps, x, x)
    k = len(maps.cells)
    assert f.shape == (2, maps.n_pair) and maps.n_pair == 2 * k
    torch.testing.assert_close(f[:, :k], torch.ones(2, k), atol=2e-3, rtol=0)
    torch.testing.assert_close(f[:, k:], torch.zeros(2, k), atol=1e-6, rtol=0)
    # Every band has its inner-face cell; the finest map covers the face and its outline.
    names = maps.cell_names()
    assert all(f"inner_face_{lo:g}-{hi:g}" in names for lo, hi, _ in BANDS)


def test_mirroring_changes_nothing_and_the_order_of_the_pair_neither(maps):
    x, y = _textured(2, 1), _textured(2, 2)
    torch.testing.assert_close(_pairs(maps, x, y.flip(-1)), _pairs(maps, x, y), atol=1e-5, rtol=0)
    torch.testing.assert_close(_pairs(maps, y, x), _pairs(maps, x, y), atol=1e-5, rtol=0)


def test_a_two_pixel_shift_keeps_the_match_and_another_image_does_not(maps):
    x = _textured(2, 3)
    shifted = torch.roll(x, (2, 2), dims=(2, 3))
    k = len(maps.cells)
    same = _pairs(maps, x, shifted)[:, :k]
    other = _pairs(maps, x, _textured(2, 4))[:, :k]
    assert same.min() > 0.8, same
    assert other.abs().max() < 0.5, other


def test_negation_reads_as_different_and_blur_lowers_contrast(maps):
    x = _textured(2, 5)
    k = len(maps.cells)
    neg = _pairs(maps, x, 255 - x)
    # No better than chance alignments of a random texture (the match of itself is 1).
    assert neg[:, :k].mean() < 0.2 and neg[:, :k].max() < 0.5, neg[:, :k]
    blurred = _pairs(maps, x, gaussian_blur(x, 3.0))
    fine = [i for i, c in enumerate(maps.cells) if c.band == len(BANDS) - 1]
    # The finest band loses most of its contrast: a large |log ratio|, not a small one.
    assert blurred[:, [k + i for i in fine]].min() > 0.5


def test_the_gradient_is_finite_at_the_loops_start(maps):
    x = _textured(1, 6)
    out = x.clone().requires_grad_(True)
    f = _pairs(maps, x, out)
    f.sum().backward()
    assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0


def test_the_proxy_carries_them_in_its_descriptors():
    torch.manual_seed(0)
    on, off = HumanProxy().eval(), HumanProxy(ProxyConfig(structure=False)).eval()
    assert on.config.structure and on.descriptor_dim == off.descriptor_dim + on.structure.dim
    assert on.n_descriptor_pair == off.n_descriptor_pair + on.structure.n_pair
    ctx = _textured(2, 7).repeat(1, 3, 1, 1)
    with torch.no_grad():
        inputs = on.image_inputs(ctx, identity=False)
    assert inputs.descriptors.shape == (2, on.descriptor_dim)
    assert on.config.bank_signature()["structure"] is True
