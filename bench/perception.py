"""The perceptual battery (models_app.vision.battery) for the platform's proxies and for each
simulated observer, on held-out LFW faces. Prints one JSON line last.

Faces: the matched pairs of View-2 folds 8-9 (a, b: two photos of one subject), each with a
donor photo of another subject of those folds (for the inner-face illusion), as aligned
300x300 context crops. Proxies: ``bench.deid``'s loop proxy (folds 0-3, the platform's
default architecture trained on natural pairs) and held-out proxy (folds 4-7), both
subject-disjoint from the faces, cached in ``--cache`` and shared with ``bench.deid``.

The observers' and the proxies' figures are theirs: none is what people would do. The
people's side of each item is the published finding the battery encodes.

With ``--attack-faces N``: the engine's `pixels` attack at ε grey levels (default 4) against
each proxy, made honest (``attack_pixels``: PGD on the log-odds, EOT, random start, ≥ 40
signed steps of ε/4, score-B kept as the engine keeps it), judged on the saved photo after
fresh detection and alignment, by the attacked proxy and by the other (transfer).

    .venv/bin/python -m bench.perception [--faces 60] [--observer pkg.mod:observe] [--quick]
        [--attack-faces 24 --attack-steps 40 --attack-samples 2]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import add_lfw_arguments, emit, lfw_folds, log, machine, parse_args, require_lfw
from bench.deid import (
    BENCH_FOLDS,
    HELDOUT_FOLDS,
    LOOP_FOLDS,
    PROXY_CACHE,
    _contexts_for,
    benchmark_faces,
    ensure_proxy,
)
from models_app.proxy.judge import proxy_judge
from models_app.vision.battery import BatteryCase, run_battery
from ratings.observers import SHIPPED, load_observer, observer_judge

BATTERY_FOLDS = [8, 9]
# The platform's proxy architecture before this battery existed (RGB, unmirrored, the
# CFRU's taps; what a stored config without these keys loads as), with the battery
# (luminance, mirror-symmetric appearance, still the taps), and after the ε = 4 attack
# work (the defaults: no taps, trained with invariance-set known-same pairs).
ALL_TAPS = ["stem", "level1", "level2", "level3", "level4", "level5", "pooled"]
ARCHITECTURES = {
    "before": {"colour": "rgb", "mirror_symmetric": False, "identity_colour": "rgb",
               "taps": ALL_TAPS},
    "battery": {"taps": ALL_TAPS},
    "after": {"invariance_pairs": 1},
}
QUICK = {"pairs_per_fold": 20, "faces": 12, "cache": "/tmp/perception_bench_quick",
         "proxy_cache": ""}


def battery_cases(folds, lfw: Path, n: int, proxy_cache: Path | None) -> list[BatteryCase]:
    """Up to ``n`` matched pairs of the battery folds, one per subject, each with a donor:
    the first image of the next case's subject (so every donor is another person)."""
    seen: set[str] = set()
    matched = []
    for f in BATTERY_FOLDS:
        for p in folds[f].pairs:
            if p.target > 0.5 and p.subject_a not in seen:
                seen.add(p.subject_a)
                matched.append(p)
    matched = matched[:n]
    if len(matched) < 2:
        raise SystemExit("too few matched pairs in folds 8-9 for the battery")
    images = sorted({k for p in matched for k in (p.a, p.b)})
    ctx = _contexts_for(lfw, images, proxy_cache)
    index = {k: i for i, k in enumerate(images)}
    return [
        BatteryCase(ctx[index[p.a]], ctx[index[p.b]], ctx[index[matched[(i + 1) % len(matched)].a]])
        for i, p in enumerate(matched)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_lfw_arguments(ap)
    ap.add_argument("--faces", type=int, default=60)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/deid_bench"))
    ap.add_argument("--proxy-cache", default=str(PROXY_CACHE),
                    help="the proxy benchmark's cache, read for context crops ('': none)")
    ap.add_argument("--proxy-configs", default=json.dumps(ARCHITECTURES),
                    help="name -> ProxyConfig fields (JSON); each gets a loop and a held-out "
                    "proxy (default: the platform's proxy before and after issue 13)")
    ap.add_argument("--observer", action="append", default=None,
                    help="short name or package.module:callable (repeatable; default: shipped)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--battery-faces", type=int, default=None,
                    help="faces for the battery (default: --faces; 0: no battery)")
    ap.add_argument("--attack-faces", type=int, default=0,
                    help="faces (subjects of View-2 folds 8-9) for `pixels` at ε against "
                    "each proxy (0: no attack)")
    ap.add_argument("--attack-eps", type=float, default=ATTACK_DEFAULTS["eps"])
    ap.add_argument("--attack-steps", type=int, default=ATTACK_DEFAULTS["steps"])
    ap.add_argument("--attack-samples", type=int, default=ATTACK_DEFAULTS["samples"],
                    help="EOT draws per face per step")
    ap.add_argument("--attack-margin", type=float, default=ATTACK_DEFAULTS["margin"],
                    help="stop pushing a face once its log-odds are this far below logit(τA)")
    ap.add_argument("--attack-batch", type=int, default=ATTACK_DEFAULTS["batch"])
    ap.add_argument("--no-observers", action="store_true", help="proxies only")
    ap.add_argument("--naturalness", type=int, default=0, metavar="N",
                    help="also print the 1st/99th percentiles of the face colour figures over "
                    "N View-2 images (models_app.deid.metrics.NATURAL_FACE)")
    args = parse_args(ap, QUICK)
    require_lfw(args.lfw, "lfw-deepfunneled")
    torch.set_num_threads(args.threads)
    args.cache = Path(args.cache)
    args.cache.mkdir(parents=True, exist_ok=True)
    proxy_cache = Path(args.proxy_cache) if args.proxy_cache else None
    folds = lfw_folds(args.lfw, args.pairs_per_fold)
    kw = {"all_folds": folds, "pairs_per_fold": args.pairs_per_fold, "proxy_cache": proxy_cache}
    architectures = json.loads(args.proxy_configs)
    n_battery = args.faces if args.battery_faces is None else args.battery_faces
    cases = battery_cases(folds, args.lfw, n_battery, proxy_cache) if n_battery else []
    log(f"battery: {len(cases)} faces (View-2 folds {BATTERY_FOLDS})")

    judges = {}
    models = {}
    proxy_info = {}
    for arch, recipe in architectures.items():
        for name, folds_, seed in (("loop", LOOP_FOLDS, 1), ("heldout", HELDOUT_FOLDS, 2)):
            model, info = ensure_recipe_proxy(name, folds_, seed, args, recipe, kw)
            models[f"{name}_{arch}"] = model
            proxy_info[f"{name}_{arch}"] = {k: v for k, v in info.items() if k != "subjects"}
            judges[f"proxy_{name}_{arch}"] = proxy_judge(model)
    if not args.no_observers:
        for name in args.observer or list(SHIPPED):
            judges[f"observer_{name}"] = observer_judge(load_observer(name))

    results: dict[str, dict] = {}
    for name, score in judges.items() if cases else ():
        t0 = time.perf_counter()
        res = run_battery(score, cases)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results[name] = res
        log(f"{name}: passed={res['passed']} failed={res['failed']} "
            f"invariance={ {k: v['mean_abs_change'] for k, v in res['invariance'].items()} } "
            f"effects={ {k: v['mean_drop'] for k, v in res['effects'].items()} } "
            f"({res['seconds']} s)")
    out = {"bench": "perception", "machine": machine(), "faces": len(cases),
           "proxy_configs": architectures, "proxies": proxy_info, "judges": results}
    if args.attack_faces:
        subjects = {s for f in BENCH_FOLDS for s in folds[f].subjects}
        sources = [s for _, s in benchmark_faces(args.lfw, args.attack_faces, subjects)]
        log(f"attack: {len(sources)} faces (subjects of View-2 folds {BENCH_FOLDS})")
        out["attack"] = {
            "eps": args.attack_eps, "steps": args.attack_steps, "step": args.attack_eps / 4,
            "eot_samples": args.attack_samples, "margin": args.attack_margin,
            "faces": len(sources), "results": {},
        }
        for arch in architectures:
            pair = {k: models[f"{k}_{arch}"] for k in ("loop", "heldout")}
            out["attack"]["results"][arch] = run_attacks(pair, sources, args)
    if args.naturalness:
        out["naturalness_percentiles"] = face_colour_percentiles(folds, args, proxy_cache)
    emit(out)


# Training extras a --proxy-configs entry may carry besides ProxyConfig fields.
TRAIN_EXTRAS = ("invariance_pairs", "invariance_weight")


def ensure_recipe_proxy(name: str, folds_: list[int], seed: int, args, recipe: dict, kw: dict):
    """``bench.deid.ensure_proxy`` for a ProxyConfig; with ``invariance_pairs`` k > 0 the
    training pairs also get k known-same pairs per training image (the image and an
    invariance-set variant of it: ``models_app.proxy.augment``), cached beside the others."""
    recipe = dict(recipe)
    extras = {k: recipe.pop(k) for k in TRAIN_EXTRAS if k in recipe}
    if not extras.get("invariance_pairs"):
        return ensure_proxy(name, folds_, seed, args.lfw, args.cache, recipe, **kw)
    return _train_with_invariance(name, folds_, seed, args, recipe, extras, kw)


def _train_with_invariance(name, folds_, seed, args, recipe: dict, extras: dict, kw: dict):
    """The loop/held-out proxy of ``bench.deid.ensure_proxy`` (same folds, seed and stop
    rules) with invariance-set known-same pairs added to its training pairs."""
    import hashlib

    from bench.common import encode_bank
    from models_app.proxy.augment import invariance_pairs, subjects_of_images
    from models_app.proxy.config import ProxyConfig, ProxyMeta
    from models_app.proxy.data import ImageBank, PairTable
    from models_app.proxy.io import load_proxy, save_proxy
    from models_app.proxy.network import HumanProxy
    from models_app.proxy.train import StopRules, TrainConfig, train_proxy

    everything = {**recipe, **extras}
    tag = f"{name}_f{folds_[0]}-{folds_[-1]}_s{seed}_" + hashlib.sha1(
        json.dumps(everything, sort_keys=True).encode()).hexdigest()[:8]
    if kw.get("pairs_per_fold"):
        tag += f"_p{kw['pairs_per_fold']}"
    path, info_path = args.cache / f"proxy_{tag}.safetensors", args.cache / f"proxy_{tag}.json"
    if path.exists() and info_path.exists():
        return load_proxy(path), json.loads(info_path.read_text())
    all_folds = kw["all_folds"]
    pairs = PairTable([p for f in folds_ for p in all_folds[f].pairs])
    images = pairs.image_keys
    arch = ProxyConfig.from_dict(recipe)
    model = HumanProxy(arch)
    ctx = _contexts_for(args.lfw, images, kw.get("proxy_cache"))
    subj = subjects_of_images(pairs)
    k = int(extras["invariance_pairs"])
    aug, aug_keys, aug_pairs = invariance_pairs(
        list(ctx), images, [subj[i] for i in images], k,
        weight=float(extras.get("invariance_weight", 1.0)), seed=seed)
    log(f"proxy {name}: {len(pairs)} pairs + {len(aug_pairs)} invariance pairs")
    bank = ImageBank.concat([encode_bank(model, ctx, images, 250),
                             encode_bank(model, np.stack(aug), aug_keys, 250)])
    cfg = TrainConfig(seed=seed, stop=StopRules(max_epochs=25, patience=4))
    res = train_proxy(bank, pairs + aug_pairs, cfg, model_config=arch,
                      meta=ProxyMeta(prior=True, description=f"perception bench {name}"))
    save_proxy(res.model, path)
    info = {"name": name, "folds": folds_, "seed": seed, "n_pairs": res.n_pairs,
            "stop_reason": res.stop_reason, "val_auc": res.val_metrics["full"].get("auc"),
            "val_accuracy": res.val_metrics["full"].get("accuracy"),
            "seconds": round(res.seconds, 1), "model_config": everything}
    info_path.write_text(json.dumps(info))
    log(f"proxy {name}: trained in {res.seconds:.0f} s, val {res.val_metrics['full']}")
    return res.model, info


def face_colour_percentiles(folds, args, proxy_cache: Path | None) -> dict:
    """1st/99th percentiles of face_colour over View-2 images of every fold."""
    from models_app.deid.metrics import face_colour

    every = sorted({k for f in folds for p in f.pairs for k in (p.a, p.b)})
    images = every[:: max(1, len(every) // args.naturalness)][: args.naturalness]
    ctx = _contexts_for(args.lfw, images, proxy_cache)
    rows = [face_colour(c) for c in ctx if c.any()]  # all-zero: no face found
    out = {"n": len(rows)}
    for k in rows[0]:
        v = np.array([r[k] for r in rows])
        out[k] = [round(float(np.percentile(v, 1)), 2), round(float(np.percentile(v, 99)), 2)]
    log(f"naturalness percentiles: {out}")
    return out


# --------------------------------------------------------------------------------------------
# `pixels` at ε grey levels against each proxy: PGD on the proxy's log-odds, with EOT
# --------------------------------------------------------------------------------------------

# The engine's `pixels` attack made honest: a saturated P(same) (≈ 1.000 for two photos of
# one subject) has no gradient, so the attack descends the calibrated log-odds with a margin
# (it stops pushing a face once the log-odds are `margin` below logit(τA)), takes signed
# steps of ε/4 from a random start for ≥ 40 steps, through the loop's own EOT (jitter,
# rounding; JPEG on the CFRU chips), and keeps score-B as the engine does (its guard on the
# dlib distance). Success is judged on the saved photo: composited, detected and aligned
# afresh, score-A by the proxy on the fresh crop, score-B by dlib's runtime.
ATTACK_DEFAULTS = {"eps": 4.0, "steps": 40, "samples": 2, "margin": 1.0, "batch": 6}


def _logit_of(p: float) -> float:
    return math.log(p / (1 - p))


def attack_pixels(scorer, sources, *, eps: float, steps: int, samples: int, margin: float,
                  tau_a: float, keep_b: bool = True, seed: int = 0) -> list[np.ndarray]:
    """PGD (L∞ ``eps`` grey levels, step ``eps/4``, random start) on ``scorer``'s log-odds of
    (source, output) through EOT; returns the output context crops (uint8), the iterate with
    the lowest loss per face. ``keep_b``: the engine's identity guard on dlib's Θ0 distance
    (worst EOT chip) as a constraint, so score-B stays, as the engine's success needs."""
    from models_app.deid.eot import EOTConfig, eot_contexts, straight_round
    from models_app.deid.loss import LossWeights
    from models_app.vision.chips import central_chip
    from models_app.vision.dlib_resnet import get_dlib_resnet

    w = LossWeights()
    net = get_dlib_resnet("cpu")
    n = len(sources)
    src = torch.from_numpy(np.stack([s.context for s in sources])).permute(0, 3, 1, 2).float()
    src = src.contiguous()
    mask = torch.from_numpy(np.stack([s.change_mask("head") for s in sources])).float()[:, None]
    with torch.no_grad():
        src_emb = net.features(central_chip(src), taps=False)[0].repeat_interleave(samples, 0)
    src_rep = src.repeat_interleave(samples, 0).contiguous()
    eot = EOTConfig(samples=samples)
    gen = torch.Generator().manual_seed(seed)
    target = _logit_of(tau_a) - margin
    step = eps / 4.0
    delta = (torch.rand(src.shape, generator=gen) * 2 - 1) * eps
    best = delta.clone()
    best_loss = torch.full((n,), math.inf)
    for _ in range(steps + 1):
        delta.requires_grad_(True)
        out = straight_round((src + delta * mask).clamp(0.0, 255.0))
        views, chips = eot_contexts(out, eot, gen)
        z = scorer.logit(src_rep, views).view(n, samples).mean(1)
        loss = torch.relu(z - target)
        if keep_b:
            # A constraint, not a penalty (signed steps would let the log-odds' far larger
            # gradient drown it): a face past the engine's guard distance steps back only.
            emb = net.features(chips, taps=False)[0]
            d0 = (emb - src_emb).norm(dim=1).view(n, samples).max(1).values
            over = d0 - w.guard * w.threshold
            loss = torch.where(over > 0, 1e4 + over, loss)
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        with torch.no_grad():
            better = loss.detach() < best_loss
            best_loss = torch.where(better, loss.detach(), best_loss)
            best[better] = delta.detach()[better]
            delta = (delta.detach() - step * grad.sign()).clamp(-eps, eps)
            delta = (src + delta).clamp(0.0, 255.0) - src
    with torch.no_grad():
        out = (src + best * mask).clamp(0.0, 255.0).round().to(torch.uint8)
    return [o.permute(1, 2, 0).numpy().copy() for o in out]


def saved_scores(source, context_out: np.ndarray | None, scorers: dict, final_ens) -> dict:
    """Log-odds of each scorer and dlib's score-B on the photo as saved (the output
    composited with the head blend, lossless PNG = these pixels), detected and aligned
    afresh; ``context_out`` None: the unchanged photo (the baseline)."""
    from models_app.deid.composite import composite
    from models_app.vision import faces

    photo = source.photo if context_out is None else composite(
        source.photo, context_out, source.box, source.landmarks, context_src=source.context,
        blend="head")
    face = faces.detect_and_align(photo)
    if face is None:
        return {"detected": False}
    fresh = faces.context_crop(photo, face.box, face.landmarks)
    s = torch.from_numpy(source.context).permute(2, 0, 1)[None].float()
    f = torch.from_numpy(fresh).permute(2, 0, 1)[None].float()
    out = {"detected": True, "b": float(final_ens.score_b(source.chip, face.chip).score)}
    with torch.no_grad():
        for name, sc in scorers.items():
            out[f"logit_{name}"] = float(sc.logit(s, f)[0])
    return out


def run_attacks(proxies: dict, sources, args) -> dict:
    """For each proxy (name -> HumanProxy): the attack against it, its success on the saved
    photo (A ≤ τA; and with B ≥ τB, the engine's success), the mean change of its log-odds,
    and every other proxy's verdict on the same saved photos (transfer)."""
    from models_app.deid.confirm import FINAL_ENSEMBLE
    from models_app.deid.metrics import mean_abs_change, ssim
    from models_app.deid.score_a import HumanProxyScorer
    from models_app.vision import cfru as cfru_mod

    tau_a, tau_b = 0.3, 0.5
    final_ens = cfru_mod.build_ensemble(FINAL_ENSEMBLE)
    scorers = {k: HumanProxyScorer(m) for k, m in proxies.items()}
    base = [saved_scores(s, None, scorers, final_ens) for s in sources]
    lt = _logit_of(tau_a)
    results = {}
    for name, sc in scorers.items():
        t0 = time.perf_counter()
        rows = []
        for i in range(0, len(sources), args.attack_batch):
            chunk = sources[i : i + args.attack_batch]
            outs = attack_pixels(sc, chunk, eps=args.attack_eps, steps=args.attack_steps,
                                 samples=args.attack_samples, margin=args.attack_margin,
                                 tau_a=tau_a, seed=i)
            for s, o, b0 in zip(chunk, outs, base[i : i + len(chunk)], strict=True):
                r = saved_scores(s, o, scorers, final_ens)
                r["mac"] = mean_abs_change(s.context, o)
                r["ssim"] = ssim(s.context, o)
                r["base"] = b0
                rows.append(r)
            log(f"attack on {name}: {len(rows)}/{len(sources)} faces "
                f"({time.perf_counter() - t0:.0f} s)")
        ok = [r for r in rows if r["detected"] and r["base"].get("detected")]
        res: dict = {"faces": len(rows), "detected": len(ok),
                     "seconds": round(time.perf_counter() - t0, 1)}
        for judge in scorers:
            z = np.array([r[f"logit_{judge}"] for r in ok])
            z0 = np.array([r["base"][f"logit_{judge}"] for r in ok])
            a_ok = z <= lt
            both = a_ok & np.array([r["b"] >= tau_b for r in ok])
            res[judge] = {
                "success_a": round(float(a_ok.mean()), 4) if len(ok) else None,
                "success_a_and_b": round(float(both.mean()), 4) if len(ok) else None,
                "n_success_a_and_b": int(both.sum()),
                "mean_logit_before": round(float(z0.mean()), 3) if len(ok) else None,
                "mean_logit_after": round(float(z.mean()), 3) if len(ok) else None,
                "mean_logit_change": round(float((z - z0).mean()), 3) if len(ok) else None,
                "min_logit_after": round(float(z.min()), 3) if len(ok) else None,
            }
        res["b_ge_tau_b"] = round(float(np.mean([r["b"] >= tau_b for r in ok])), 4) if ok else None
        res["mac_mean"] = round(float(np.mean([r["mac"] for r in rows])), 3)
        res["ssim_mean"] = round(float(np.mean([r["ssim"] for r in rows])), 4)
        results[name] = res
        log(f"attack on {name}: {json.dumps(res)}")
    return results


if __name__ == "__main__":
    main()
