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


def test_joint_pass_scores_as_the_proxys_own_cfru_pass(synthetic_context):
    """The loop adds the proxy's identity chips (luminance, by default) to its own CFRU
    batch: the log-odds and their gradient are those of the proxy's separate pass."""
    from models_app.deid.config import DeidConfig
    from models_app.deid.loop import joint_pass_ok, network_pass

    torch.manual_seed(0)
    scorers = [HumanProxyScorer(HumanProxy().eval()) for _ in range(2)]
    assert scorers[0].identity_chips(torch.zeros(1, 3, 300, 300)) is not None  # luminance
    src = torch.from_numpy(synthetic_context).permute(2, 0, 1)[None].float()
    net = get_dlib_resnet("cpu")
    cfg = DeidConfig()
    for proxy in (scorers[0], EnsembleScorer(scorers)):
        assert joint_pass_ok(proxy, None) and not joint_pass_ok(proxy, net)
        got = {}
        for joint in (True, False):
            out = (src + 30).clamp(0, 255).requires_grad_(True)
            ps = network_pass(out, src, proxy, net, cfg, torch.Generator().manual_seed(3),
                              joint=joint)
            ps.logit.sum().backward()
            got[joint] = (ps.logit.detach(), out.grad, ps.emb.detach())
        torch.testing.assert_close(got[True][0], got[False][0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got[True][1], got[False][1], atol=1e-5, rtol=1e-3)
        torch.testing.assert_close(got[True][2], got[False][2], atol=1e-5, rtol=1e-5)
