"""The loop's adapter of the human proxy gives the proxy's own numbers."""

from __future__ import annotations

import pytest
import torch

from models_app.deid.score_a import EnsembleScorer, HumanProxyScorer
from models_app.proxy.network import HumanProxy
from models_app.vision.chips import central_chip
from models_app.vision.dlib_resnet import get_dlib_resnet


def test_adapter_matches_the_proxy_forward(synthetic_context):
    torch.manual_seed(0)
    model = HumanProxy().eval()
    src = torch.from_numpy(synthetic_context).permute(2, 0, 1)[None].float()
    out = (src + torch.randn_like(src) * 20).clamp(0, 255).round()
    with torch.no_grad():
        want = model(src, out)
        scorer = HumanProxyScorer(model)
        emb, taps = get_dlib_resnet("cpu").features(central_chip(out))
        got = torch.sigmoid(scorer.logit_with_features(src, out, emb, taps))
        plain = scorer(src, out)
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(plain, want, atol=1e-5)


def test_ensemble_scorer_averages_log_odds(synthetic_context):
    src = torch.from_numpy(synthetic_context).permute(2, 0, 1)[None].float()
    out = (src + 25).clamp(0, 255)
    scorers = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        scorers.append(HumanProxyScorer(HumanProxy().eval()))
    ens = EnsembleScorer(scorers)
    with torch.no_grad():
        want = (scorers[0].logit(src, out) + scorers[1].logit(src, out)) / 2
        emb, taps = get_dlib_resnet("cpu").features(central_chip(out))
        assert torch.allclose(ens.logit(src, out), want, atol=1e-5)
        assert torch.allclose(ens.logit_with_features(src, out, emb, taps), want, atol=1e-4)
        assert torch.allclose(ens(src, out), torch.sigmoid(want), atol=1e-6)
    with pytest.raises(ValueError):
        EnsembleScorer([])
