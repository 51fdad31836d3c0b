"""The loop's adapter of the human proxy gives the proxy's own numbers."""

from __future__ import annotations

import pytest
import torch

from models_app.deid.loop import identity_cut
from models_app.deid.proxy import HumanProxyScorer
from models_app.vision.dlib_resnet import get_dlib_resnet


def test_adapter_matches_the_proxy_forward(synthetic_context):
    network = pytest.importorskip("models_app.proxy.network")
    torch.manual_seed(0)
    model = network.HumanProxy().eval()
    src = torch.from_numpy(synthetic_context).permute(2, 0, 1)[None].float()
    out = (src + torch.randn_like(src) * 20).clamp(0, 255).round()
    with torch.no_grad():
        want = model(src, out)
        scorer = HumanProxyScorer(model)
        emb, taps = get_dlib_resnet("cpu").features(identity_cut(out))
        got = torch.sigmoid(scorer.logit_with_features(src, out, emb, taps))
        plain = scorer(src, out)
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(plain, want, atol=1e-5)
