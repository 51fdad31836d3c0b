"""Robustness to the engine's own imperceptible attack: invariance-set known-same pairs for
training, the identity branch's view (RGB, as score-B sees it) and the band-limit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models_app.proxy.augment import (
    AUGMENTED_KEY,
    INVARIANCE_AUGMENTATIONS,
    invariance_pairs,
    invariance_variant,
)
from models_app.proxy.config import ProxyConfig
from models_app.proxy.data import ImageBank, LabelledPair, PairTable
from models_app.proxy.network import HumanProxy
from models_app.proxy.train import StopRules, TrainConfig, train_proxy
from models_app.vision import dlib_resnet
from models_app.vision.battery import LUMA
from models_app.vision.chips import central_chip

from .synthetic import TINY, natural_pairs, synthetic_bank


def _smooth_image(seed: int, size: int = 300) -> np.ndarray:
    """A photo-like image: smooth colour blobs (so blur and shifts act as on a face)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.uniform(0, 255, size=(size, size, 3)), sigma=(6, 6, 0))
    x = (x - x.min()) / (x.max() - x.min()) * 200 + 30
    return np.rint(x).astype(np.uint8)


def test_each_augmentation_stays_inside_the_invariance_set():
    x = _smooth_image(0)
    rng = np.random.default_rng(1)
    luma = x.astype(float) @ LUMA
    for _ in range(5):
        noisy = INVARIANCE_AUGMENTATIONS["noise"](x, rng)
        assert 0 < np.abs(noisy.astype(int) - x).max() <= 4
        hue = INVARIANCE_AUGMENTATIONS["hue"](x, rng)
        # Luminance kept (rounding and the RGB cube's clipping aside), colours changed.
        assert np.abs(hue.astype(float) @ LUMA - luma).mean() < 1.5
        b = INVARIANCE_AUGMENTATIONS["brightness"](x, rng).astype(float)
        assert 0.89 <= b.mean() / x.mean() <= 1.11
    np.testing.assert_array_equal(INVARIANCE_AUGMENTATIONS["mirror"](x, rng), x[:, ::-1])


def test_invariance_pairs_are_known_same_pairs_of_the_same_subject():
    imgs = [_smooth_image(s) for s in range(3)] + [np.zeros((300, 300, 3), np.uint8)]
    keys = ["s0/a", "s0/b", "s1/a", "s2/a"]
    subjects = ["s0", "s0", "s1", "s2"]
    variants, new_keys, pairs = invariance_pairs(imgs, keys, subjects, 2, weight=0.5, seed=3)
    # Two per image with a face; the all-black crop (no face found) gets none.
    assert len(variants) == len(new_keys) == len(pairs) == 6
    assert new_keys[:2] == [f"s0/a{AUGMENTED_KEY}0", f"s0/a{AUGMENTED_KEY}1"]
    by_key = dict(zip(keys, imgs, strict=True))
    for p, v, k in zip(pairs, variants, new_keys, strict=True):
        assert p.b == k and p.target == 1.0 and p.weight == 0.5 and p.natural
        assert p.subject_a == p.subject_b == dict(zip(keys, subjects, strict=True))[p.a]
        assert v.shape == (300, 300, 3) and v.dtype == np.uint8
        assert not np.array_equal(v, by_key[p.a])  # really changed ...
        # ... and the same picture: small mean change (a mirror moves more, a shift less).
        assert np.abs(v.astype(float) - by_key[p.a]).mean() < 40
    again = invariance_pairs(imgs, keys, subjects, 2, weight=0.5, seed=3)
    assert [p.pair_id for p in again[2]] == [p.pair_id for p in pairs]
    assert all(np.array_equal(a, b) for a, b in zip(again[0], variants, strict=True))
    with pytest.raises(ValueError, match="keys"):
        invariance_pairs(imgs, keys[:2], subjects, 1)


def test_variant_composes_distinct_augmentations():
    rng = np.random.default_rng(0)
    _, names = invariance_variant(_smooth_image(1), rng, n_ops=3)
    assert len(set(names)) == 3 and set(names) <= set(INVARIANCE_AUGMENTATIONS)


def test_band_limited_identity_chip_damps_four_level_noise():
    """The identity branch's low-pass keeps the face (smooth content nearly unchanged) and
    removes most of ±4-level pixel noise: what a few grey levels can do to its input."""
    x = torch.from_numpy(_smooth_image(2)).permute(2, 0, 1)[None].float()
    rng = np.random.default_rng(4)
    noise = torch.from_numpy(rng.integers(-4, 5, size=x.shape)).float()
    sharp = HumanProxy(ProxyConfig(identity_colour="rgb", identity_blur=0.0))
    blurred = HumanProxy(ProxyConfig(identity_colour="rgb", identity_blur=1.0))
    d_sharp = (sharp.identity_chip(x + noise) - sharp.identity_chip(x)).pow(2).mean().sqrt()
    d_blur = (blurred.identity_chip(x + noise) - blurred.identity_chip(x)).pow(2).mean().sqrt()
    assert d_blur < 0.4 * d_sharp  # σ = 1 px: white noise's RMS falls ~3.5x
    # The content itself (smooth at this scale) barely moves.
    content = (blurred.identity_chip(x) - sharp.identity_chip(x)).abs().mean()
    assert content < 2.0
    assert blurred.identity_on_plain_chip is False and sharp.identity_on_plain_chip is True


def test_identity_branch_sees_the_rgb_chip_as_score_b_does():
    x = torch.from_numpy(np.stack([_smooth_image(5), _smooth_image(6)])).permute(0, 3, 1, 2)
    x = x.float().contiguous()
    cfru = dlib_resnet.get_dlib_resnet("cpu")
    with torch.no_grad():
        rgb = HumanProxy(ProxyConfig(identity_colour="rgb")).identity_features(x)
        lum = HumanProxy(ProxyConfig(identity_colour="luminance")).identity_features(x)
        plain = cfru.features(central_chip(x), taps=False)[0]
    torch.testing.assert_close(rgb[:, : dlib_resnet.EMBEDDING_DIM], plain)
    assert (lum[:, : dlib_resnet.EMBEDDING_DIM] - plain).abs().max() > 1e-3
    with pytest.raises(ValueError, match="identity_colour"):
        ProxyConfig(identity_colour="hsv")
    with pytest.raises(ValueError, match="identity_blur"):
        ProxyConfig(identity_blur=-1.0)


def test_training_with_invariance_pairs_teaches_that_small_changes_say_same():
    """A tiny proxy trained with known-same pairs of images and their variants scores
    (image, variant) higher than one trained on natural pairs alone."""
    bank, subjects = synthetic_bank(n_subjects=16, per_subject=3, seed=0)
    pairs = natural_pairs(bank, subjects, seed=0)
    # Variants: the same identity features, appearance shifted by a brightness-like offset
    # that separates subjects in this synthetic data (so natural pairs teach "different").
    rng = np.random.default_rng(1)
    keys = [f"{k}{AUGMENTED_KEY}0" for k in bank.keys]
    offs = torch.from_numpy(rng.choice([-40.0, 40.0], size=(len(keys), 1, 1, 1))).float()
    small = (bank.small + offs).clamp(0, 255)
    model0 = HumanProxy(TINY)
    aug = ImageBank(keys, bank.identity.clone(), small, model0.appearance.descriptors(small))
    full = ImageBank.concat([bank, aug])
    known = PairTable([LabelledPair(k, k2, 1.0, 1.0, s, s, natural=True)
                       for k, k2, s in zip(bank.keys, keys, subjects, strict=True)])
    cfg = TrainConfig(seed=0, stop=StopRules(max_epochs=15, patience=15))
    plain = train_proxy(full, pairs, cfg, model_config=TINY).model
    robust = train_proxy(full, pairs + known, cfg, model_config=TINY).model
    ia, ib = full.indices(known)
    p_plain = plain.score_bank(full, ia, ib, branch="appearance").mean()
    p_robust = robust.score_bank(full, ia, ib, branch="appearance").mean()
    assert p_plain < 0.2 and p_robust > 0.8


@pytest.mark.parametrize("overrides", [{"identity_colour": "rgb"},
                                       {"identity_colour": "rgb", "identity_blur": 1.0},
                                       {}])
def test_loop_scorer_reuses_the_cfru_pass_only_when_the_chip_is_the_same(overrides):
    """The loop hands the proxy the CFRU features of the plain RGB chip; a proxy whose
    identity branch sees another chip (low-passed, luminance) must not take them."""
    from models_app.deid.score_a import HumanProxyScorer

    torch.manual_seed(0)
    model = HumanProxy(ProxyConfig(taps=("level5", "pooled"), **overrides)).eval()
    scorer = HumanProxyScorer(model)
    x = torch.from_numpy(np.stack([_smooth_image(7), _smooth_image(8)])).permute(0, 3, 1, 2)
    src, out = x[:1].float().contiguous(), x[1:].float().contiguous()
    with torch.no_grad():
        emb, taps = dlib_resnet.get_dlib_resnet("cpu").features(central_chip(out))
        fused = scorer.logit_with_features(src, out, emb, taps)
        torch.testing.assert_close(fused, scorer.logit(src, out), atol=1e-4, rtol=1e-4)


def test_default_identity_evidence_is_theta0_alone():
    """No CFRU taps by default: the identity pair features are the Θ0 distance, its square
    and cosine, so only a change that moves Θ0 (score-B's own evidence) moves them."""
    model = HumanProxy()
    assert model.config.taps == () and model.n_identity_pair == 3
    assert model.config.identity_dim == dlib_resnet.EMBEDDING_DIM


@pytest.mark.parametrize("colour", ["luminance", "rgb"])
def test_a_version_stored_before_identity_colour_loads_as_it_was_trained(tmp_path, colour):
    """Versions stored before ``identity_colour`` fed their identity branch what their
    appearance branch saw; they must load, and score, that way."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from models_app.proxy.io import load_proxy, save_proxy

    old = HumanProxy(ProxyConfig(colour=colour, identity_colour=colour, taps=("pooled",)))
    path = tmp_path / "old.safetensors"
    save_proxy(old, path)
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    config.pop("identity_colour")
    config.pop("identity_blur")
    save_file(tensors, str(path), metadata={**meta, "config": json.dumps(config)})
    loaded = load_proxy(path)
    assert loaded.config.identity_colour == colour and loaded.config.identity_blur == 0.0
    assert loaded.config.taps == ("pooled",)
