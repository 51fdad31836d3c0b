"""De-identification engine on LFW faces: success, stop reasons, speed, score-A by the loop's
proxy and by a held-out proxy, final score-B by the dlib runtime on the saved file, SSIM and
mean absolute change, the loop's overhead, and a gallery PNG. Prints one JSON line last.

Proxies (cached in ``--cache``, default /tmp/deid_bench): both are trained with the proxy
package's ``train_proxy`` on LFW View-2 natural pairs (subject-disjoint folds) — the loop's
proxy on folds 0-3 (seed 1), the held-out proxy on folds 4-7 (seed 2): other subjects, another
seed, never used in the loop. Benchmark faces (first image of each) are subjects of folds 8-9, so
both proxies are subject-disjoint from them. Context crops of the View-2 images are read from the proxy
benchmark's cache (/tmp/deid_proxy_lfw) when it is there, else computed.

    .venv/bin/python -m bench.deid [--faces 100] [--params style,pixels] [--batch 8]
        [--batch1-faces 100] [--gallery /tmp/deid_gallery.png] [--quick]

``disguise`` (issue 13) needs a donor pool: ``--donors N`` first photos of LFW subjects
outside the benchmark's and the held-out proxy's View-2 folds (the loop proxy's folds 0-3;
the shared LFW copy holds no subject outside View-2), each
source paired with the donor nearest in pose, size, light and skin tone
(``models_app.deid.donors``). Every parameterisation is also judged by a simulated crowd per
shipped observer (``--crowd`` raters of the closed loop's mix, answering from the observer's
P(same) of the source photo and the saved photo): success there = majority "different" and
score-B ≥ τB on the saved file. Those are the observers' verdicts, not people's. Per output
also the naturalness figure and the seam figure (``models_app.deid.composite.seam_figure``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import (
    add_lfw_arguments,
    cpu_name,
    emit,
    encode_bank,
    lfw_folds,
    load_rgb,
    log,
    parse_args,
    require_lfw,
)
from models_app.deid import (
    STOP_SUCCESS,
    DeidConfig,
    DeidResult,
    DeidSource,
    prepare_source,
    run_deid,
    run_deid_batch,
    score_saved_output,
)
from models_app.deid.confirm import score_a_views
from models_app.deid.metrics import mean_abs_change, ssim
from models_app.deid.score_a import EnsembleScorer, HumanProxyScorer
from models_app.proxy.data import PairTable
from models_app.vision import faces

PROXY_CACHE = Path("/tmp/deid_proxy_lfw")
# View-2 folds are subject-disjoint: the loop's proxy, the held-out proxy and the benchmark
# faces each get their own folds.
LOOP_FOLDS = [0, 1, 2, 3]
HELDOUT_FOLDS = [4, 5, 6, 7]
BENCH_FOLDS = [8, 9]
# 20 + 20 pairs of each fold for both proxies, 4 faces, 15 iterations, both parameterisations,
# one torch thread; its own cache and none of the proxy benchmark's (``--proxy-cache ''``), so
# the figures depend on nothing left by other runs: success, stop reasons, scores, SSIM are
# deterministic, the timings are not.
QUICK = {
    "pairs_per_fold": 20,
    "cache": "/tmp/deid_bench_quick",
    "proxy_cache": "",
    "gallery": "/tmp/deid_gallery_quick.png",
    "faces": 4,
    "batch": 4,
    "batch1_faces": 1,
    "max_iterations": 15,
    "threads": 1,
    "gallery_rows": 2,
}


# --------------------------------------------------------------------------------------------
# Proxies
# --------------------------------------------------------------------------------------------


def _contexts_for(lfw: Path, images: list[str], proxy_cache: Path | None) -> np.ndarray:
    """Context crops of these View-2 images: from the proxy benchmark's cache, else computed."""
    info_f = proxy_cache / "contexts.json" if proxy_cache else None
    ctx_f = proxy_cache / "contexts.npy" if proxy_cache else None
    if info_f and ctx_f and info_f.exists() and ctx_f.exists():
        info = json.loads(info_f.read_text())
        if info.get("complete"):
            index = {k: i for i, k in enumerate(info["images"])}
            if all(k in index for k in images):
                arr = np.load(ctx_f, mmap_mode="r")
                return np.stack([arr[index[k]] for k in images])
    log(f"computing {len(images)} context crops")
    out = np.zeros((len(images), 300, 300, 3), np.uint8)
    for i, k in enumerate(images):
        src = prepare_source(load_rgb(lfw / "lfw-deepfunneled" / k), (0, 1, 2))
        if src is not None:
            out[i] = src.context
    return out


def _bank_for(model, lfw: Path, images: list[str], proxy_cache: Path | None):
    """ImageBank rows for ``images``: sliced from the proxy benchmark's bank when present."""
    from models_app.proxy.data import ImageBank

    # Any cached bank whose rows fit this model (the bank depends on taps/pooling only).
    for f in sorted(proxy_cache.glob("bank_*.safetensors")) if proxy_cache else []:
        try:
            bank = ImageBank.load(f)
        except Exception:  # noqa: BLE001 - a cache being written or of another format
            continue
        index = {k: i for i, k in enumerate(bank.keys)}
        fits = (
            bank.identity.shape[1] == model.config.identity_dim
            and bank.descriptors.shape[1] == model.descriptor_dim
        )
        if fits and all(k in index for k in images):
            idx = torch.tensor([index[k] for k in images])
            log(f"bank rows from {f}")
            return ImageBank(images, bank.identity[idx], bank.small[idx], bank.descriptors[idx])
    return encode_bank(model, _contexts_for(lfw, images, proxy_cache), images, 250)


def ensure_proxy(
    name: str,
    folds: list[int],
    seed: int,
    lfw: Path,
    cache: Path,
    model_config: dict | None = None,
    *,
    all_folds: list[PairTable],
    pairs_per_fold: int = 0,
    proxy_cache: Path | None = PROXY_CACHE,
):
    """The proxy trained on these View-2 folds of ``all_folds`` (cached in ``cache``)."""
    from models_app.proxy import CorruptModelError
    from models_app.proxy.config import ProxyConfig, ProxyMeta
    from models_app.proxy.data import ImageBank
    from models_app.proxy.io import load_proxy, save_proxy
    from models_app.proxy.network import HumanProxy
    from models_app.proxy.train import StopRules, TrainConfig, train_proxy

    tag = f"{name}_f{folds[0]}-{folds[-1]}_s{seed}"
    if model_config:  # a non-default architecture gets its own cache entry
        tag += "_" + hashlib.sha1(json.dumps(model_config, sort_keys=True).encode()).hexdigest()[:8]
    if pairs_per_fold:  # so does a cut protocol
        tag += f"_p{pairs_per_fold}"
    path = cache / f"proxy_{tag}.safetensors"
    info_path = cache / f"proxy_{tag}.json"
    if path.exists() and info_path.exists():
        try:
            return load_proxy(path), json.loads(info_path.read_text())
        except CorruptModelError as exc:  # the proxy package changed: train again
            log(f"cached proxy {name} unusable ({exc}); retraining")
    pairs = PairTable([p for f in folds for p in all_folds[f].pairs])
    images = pairs.image_keys
    log(f"proxy {name}: {len(pairs)} pairs, {len(images)} images, {len(pairs.subjects)} subjects")
    arch = ProxyConfig.from_dict(model_config or {})
    # A bank depends on the images and the config's bank signature (taps, pooling, ...).
    sig = hashlib.sha1(json.dumps(arch.bank_signature(), sort_keys=True).encode()).hexdigest()
    bank_file = cache / f"bank_{name}_f{folds[0]}-{folds[-1]}_{sig[:8]}.safetensors"
    if pairs_per_fold:
        bank_file = bank_file.with_name(bank_file.stem + f"_p{pairs_per_fold}.safetensors")
    if bank_file.exists():
        bank = ImageBank.load(bank_file)
    else:
        bank = _bank_for(HumanProxy(arch), lfw, images, proxy_cache)
        bank.save(bank_file)
    cfg = TrainConfig(seed=seed, stop=StopRules(max_epochs=25, patience=4))
    res = train_proxy(
        bank,
        pairs,
        cfg,
        model_config=arch,
        meta=ProxyMeta(prior=True, description=f"deid bench {name}"),
    )
    save_proxy(res.model, path)
    info = {
        "name": name,
        "folds": folds,
        "seed": seed,
        "subjects": sorted(pairs.subjects),
        "n_pairs": res.n_pairs,
        "stop_reason": res.stop_reason,
        "val_auc": res.val_metrics["full"].get("auc"),
        "val_accuracy": res.val_metrics["full"].get("accuracy"),
        "seconds": round(res.seconds, 1),
        "model_config": model_config or {},
    }
    info_path.write_text(json.dumps(info))
    log(f"proxy {name}: trained in {res.seconds:.0f} s, val {res.val_metrics['full']}")
    return res.model, info


# --------------------------------------------------------------------------------------------
# Faces
# --------------------------------------------------------------------------------------------


def benchmark_faces(lfw: Path, n: int, subjects: set[str]) -> list[tuple[str, DeidSource]]:
    names = sorted(s for s in subjects if (lfw / "lfw-deepfunneled" / s).is_dir())
    step = max(1, len(names) // (n + n // 5 + 1))
    out = []
    for name in names[::step]:
        first = sorted((lfw / "lfw-deepfunneled" / name).glob("*.jpg"))[:1]
        src = prepare_source(load_rgb(first[0])) if first else None
        if src is not None:
            out.append((name, src))
        if len(out) == n:
            break
    return out


def attach_donors(sources, lfw: Path, n: int, exclude: set[str], cache: Path,
                  cfg: DeidConfig | None = None) -> dict:
    """Give every benchmark source its donor: the nearest (pose, size, light, skin tone) of
    a pool of the first photos of ``n`` LFW subjects outside ``exclude`` (cached); with
    ``disguise_ranges.donor_candidates`` > 1 in ``cfg``, of that many nearest the one whose
    disguise keeps the source's identity best, as the job runner chooses."""
    from models_app.deid.disguise import best_donor
    from models_app.deid.donors import donor_features, select_donors

    f = cache / f"donors_{n}.npz"
    if f.exists():
        with np.load(f) as z:
            ctxs, feats, names = z["ctx"], z["feat"], list(z["names"])
    else:
        root = lfw / "lfw-deepfunneled"
        ctxs, feats, names = [], [], []
        for name in sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in exclude):
            first = sorted((root / name).glob("*.jpg"))[:1]
            src = prepare_source(load_rgb(first[0])) if first else None
            if src is None:
                continue
            ctxs.append(src.context)
            feats.append(donor_features(src.context, src.landmarks))
            names.append(name)
            if len(names) == n:
                break
        ctxs, feats = np.stack(ctxs), np.stack(feats)
        np.savez_compressed(f, ctx=ctxs, feat=feats, names=np.array(names))
    ranges = cfg.disguise() if cfg is not None else None
    k = ranges.donor_candidates if ranges is not None else 1
    for _, src in sources:
        near = select_donors(donor_features(src.context, src.landmarks), feats, k)
        near = [near[best_donor(src.context, [ctxs[i] for i in near], ranges,
                                src.change_mask(cfg.blend))]]
        src.donor = ctxs[near[0]]
        if ranges is not None and ranges.surroundings == "donor":
            first = sorted((lfw / "lfw-deepfunneled" / str(names[near[0]])).glob("*.jpg"))[0]
            donor = prepare_source(load_rgb(first))
            src.take_donor_surroundings(donor.photo, donor.box, donor.landmarks)
    log(f"donor pool: {len(names)} photos, {k} candidate(s) per face")
    return {"pool": len(names), "source": "first photo of LFW subjects of View-2 folds 0-3"}


def network_seconds(scorer: HumanProxyScorer, batch: int, samples: int, reps: int = 7) -> float:
    """Median time of the network passes one iteration needs at this batch size, as the
    loop makes them: one CFRU forward+backward on plain + EOT chips (+ the proxy's own
    identity chips, when it has them) and the proxy's head forward+backward."""
    from models_app.vision.dlib_resnet import get_dlib_resnet

    net = get_dlib_resnet("cpu")
    times = []
    src = torch.rand(batch, 3, 300, 300) * 255
    own = scorer.identity_chips(src) is not None if hasattr(scorer, "identity_chips") else False
    for _ in range(reps):
        out = (torch.rand(batch, 3, 300, 300) * 255).requires_grad_(True)
        n = batch * (1 + samples)
        chips = torch.rand(n, 3, 150, 150) * 255
        chips.requires_grad_(True)
        t0 = time.perf_counter()
        if own:
            emb, taps = net.features(torch.cat([chips, scorer.identity_chips(out)]))
            p = scorer.logit_with_identity(src, out, emb[n:], {k: v[n:] for k, v in taps.items()})
        else:
            emb, taps = net.features(chips)
            p = scorer.logit_with_features(
                src, out, emb[:batch], {k: v[:batch] for k, v in taps.items()}
            )
        (p.sum() + emb.sum() + sum(v.sum() for v in taps.values())).backward()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# --------------------------------------------------------------------------------------------
# Evaluation of one output
# --------------------------------------------------------------------------------------------


# The closed loop's default crowd (bench.closed_loop): 60 % careful, 15 % noisy, 10 %
# same-biased, 15 % spammers.
CROWD_MIX = {"careful": 0.6, "noisy": 0.15, "same_biased": 0.1, "spammer": 0.15}


def crowd_verdicts(source_photo: np.ndarray, output_photo: np.ndarray, raters: int,
                   seed: int) -> dict[str, dict]:
    """Each shipped observer's P(same) of (source, output) photos and its simulated crowd's
    majority: ``raters`` rater types of :data:`CROWD_MIX` answering from that P."""
    from ratings.observers import SHIPPED, judge, load_observer
    from ratings.simulation.profiles import TYPES, assign_types

    out = {}
    for name in SHIPPED:
        rng = np.random.default_rng(seed)
        p = judge(load_observer(name), source_photo, output_photo, rng)
        kinds = assign_types(CROWD_MIX, raters)
        same = sum(TYPES[k].answer(p if TYPES[k].looks else None, 0, rng).same for k in kinds)
        out[name] = {"p_same": round(p, 4), "same_votes": int(same), "raters": raters,
                     "majority_different": same < raters / 2}
    return out


def evaluate(src: DeidSource, res: DeidResult, out_dir: Path, key: str, proxies, cfg,
             crowd: int = 0):
    from PIL import Image

    from models_app.deid.composite import seam_figure
    from models_app.deid.metrics import naturalness

    path = out_dir / f"{key}.png"
    Image.fromarray(res.photo).save(path)  # what the platform stores: lossless PNG
    fin = score_saved_output(src.chip, str(path), tau_b=cfg.tau_b)
    saved_rgb = load_rgb(path)
    fresh = faces.detect_and_align(saved_rgb)
    ctx_fresh = (
        faces.context_crop(saved_rgb, fresh.box, fresh.landmarks) if fresh is not None else None
    )
    s = torch.from_numpy(src.context).permute(2, 0, 1)[None].float()
    scores = {}
    # The saved photo's score-A as the loop confirms it: the mean over its fresh crop and
    # EOT views of it (one crop alone swings with a fresh alignment's jitter); ``_one``: that
    # crop only.
    views = cfg.eot.confirm_samples if cfg.eot.confirm_score_a else 0
    with torch.no_grad():
        for name, model in proxies.items():
            o = torch.from_numpy(res.context).permute(2, 0, 1)[None].float()
            scores[f"a_{name}"] = float(model(s, o))
            if ctx_fresh is not None:
                of = torch.from_numpy(ctx_fresh).permute(2, 0, 1)[None].float()
                scores[f"a_{name}_saved_one"] = float(model(s, of))
                gen = torch.Generator().manual_seed(len(key))
                scores[f"a_{name}_saved"] = score_a_views(model, s, of, cfg.eot, gen, views)
    # The source's own figure beside the output's: the reference share (by construction
    # a few % of real LFW faces fall outside some 1st-99th percentile range).
    extra: dict = {"naturalness": naturalness(res.context),
                   "source_natural": bool(naturalness(src.context)["natural"])}
    if src.photo is not None and res.photo is not None:
        extra["seam"] = seam_figure(src.reference_photo, res.photo, src.box, src.landmarks,
                                    blend=cfg.blend)
        if crowd:
            seed = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)
            extra["crowd"] = crowd_verdicts(src.photo, saved_rgb, crowd, seed)
    return {
        **extra,
        "key": key,
        "stop_reason": res.stop_reason,
        "iterations": res.iterations,
        "best_iteration": res.best_iteration,
        "a_in_loop": res.score_a,
        "b_in_loop": res.score_b,
        "final_detected": fin.detected,
        "final_b": fin.score_b,
        "final_distance": fin.score.per_cfru[0].distance if fin.score else None,
        "ssim": ssim(src.context, res.context),
        "mac": mean_abs_change(src.context, res.context),
        "seconds": res.seconds,
        "iter_seconds": [r.seconds for r in res.records if r.iteration > 0],
        # Candidates (one view under τA, score-B held) and the view means that confirmed or
        # rejected them: how often one view was a lucky draw.
        "a_candidates": [[r.score_a, r.confirm_score_a] for r in res.records
                         if r.confirm_score_a is not None],
        **scores,
    }


def summarise(rows: list[dict], cfg: DeidConfig) -> dict:
    n = len(rows)
    succ = [r for r in rows if r["stop_reason"] == STOP_SUCCESS]
    held = [r for r in succ if r.get("a_heldout_saved", r["a_heldout"]) <= cfg.tau_a]

    def mean(key, rs=rows):
        v = [r[key] for r in rs if r.get(key) is not None]
        return float(np.mean(v)) if v else None

    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r["stop_reason"]] = reasons.get(r["stop_reason"], 0) + 1
    cands = [c for r in rows for c in r.get("a_candidates", [])]
    return {
        "faces": n,
        "success_rate": len(succ) / n if n else None,
        "success_and_heldout_rate": len(held) / n if n else None,
        "a_candidates": len(cands),
        "a_candidates_rejected_by_views": sum(c[1] > cfg.tau_a for c in cands),
        "a_candidates_view_mean_minus_draw_mean": (
            float(np.mean([c[1] - c[0] for c in cands])) if cands else None),
        "faces_with_a_candidate": sum(bool(r.get("a_candidates")) for r in rows),
        "stop_reasons": reasons,
        "iterations_mean": mean("iterations"),
        "iterations_median": float(np.median([r["iterations"] for r in rows])) if rows else None,
        "a_loop_proxy_mean": mean("a_loop"),
        "a_loop_proxy_saved_mean": mean("a_loop_saved"),
        "a_heldout_proxy_mean": mean("a_heldout"),
        "a_heldout_proxy_saved_mean": mean("a_heldout_saved"),
        "heldout_le_tau_a_rate": (
            float(np.mean([r.get("a_heldout_saved", r["a_heldout"]) <= cfg.tau_a for r in rows]))
            if rows
            else None
        ),
        "final_b_mean": mean("final_b"),
        "final_b_ge_tau_b_rate_all": float(np.mean([r["final_b"] >= cfg.tau_b for r in rows])),
        "final_b_ge_tau_b_rate_successes": (
            float(np.mean([r["final_b"] >= cfg.tau_b for r in succ])) if succ else None
        ),
        "final_detected_rate": float(np.mean([r["final_detected"] for r in rows])),
        "ssim_mean": mean("ssim"),
        "mac_mean": mean("mac"),
        **_issue13_figures(rows, cfg),
    }


def _issue13_figures(rows: list[dict], cfg: DeidConfig) -> dict:
    """Naturalness share, seam figures and each observer's crowd success (issue 13)."""
    if not rows:
        return {}
    out: dict = {
        "natural_share": float(np.mean([r["naturalness"]["natural"] for r in rows
                                        if "naturalness" in r])),
        # Which figure an unnatural output misses (a*, b*, L* spread), and the sources' share.
        "natural_outside": {k: sum(k in r["naturalness"]["outside"] for r in rows
                                   if "naturalness" in r)
                            for k in ("a_mean", "b_mean", "l_spread")},
    }
    if any("source_natural" in r for r in rows):
        out["source_natural_share"] = float(np.mean([r["source_natural"] for r in rows
                                                     if "source_natural" in r]))
        # What the method itself does: of the sources inside the range, the share whose
        # output stays inside (a source outside it is one the output need not fix).
        kept = [r["naturalness"]["natural"] for r in rows
                if r.get("source_natural") and "naturalness" in r]
        out["natural_share_of_natural_sources"] = float(np.mean(kept)) if kept else None
    seams = [r["seam"] for r in rows if r.get("seam")]
    if seams:
        borders = [s["border"]["ratio"] for s in seams if s.get("border")]
        edges = [s["blend_edge"]["ratio"] for s in seams if s.get("blend_edge")]
        out["seam_pass_share"] = float(np.mean([s["passes"] for s in seams]))
        out["seam_border_ratio_mean"] = float(np.mean(borders)) if borders else None
        out["seam_border_ratio_max"] = float(np.max(borders)) if borders else None
        out["seam_border_in_photo"] = len(borders)
        out["seam_blend_edge_ratio_mean"] = float(np.mean(edges)) if edges else None
    crowd_rows = [r for r in rows if r.get("crowd")]
    for name in sorted({n for r in crowd_rows for n in r["crowd"]}):
        wins = [r["crowd"][name]["majority_different"] and r["final_b"] >= cfg.tau_b
                for r in crowd_rows]
        succ = [r for r, w in zip(crowd_rows, wins, strict=True) if w]
        diff = [r for r in crowd_rows if r["crowd"][name]["majority_different"]]
        out[f"crowd_{name}"] = {
            "success_rate": float(np.mean(wins)),
            "majority_different_rate": len(diff) / len(crowd_rows),
            # Of the outputs the crowd calls different, the share machines still match.
            "b_ge_tau_b_among_different": (float(np.mean([r["final_b"] >= cfg.tau_b
                                                          for r in diff])) if diff else None),
            "p_same_mean": float(np.mean([r["crowd"][name]["p_same"] for r in crowd_rows])),
            # Of the crowd's successes, how many the held-out proxy also calls different.
            "heldout_agrees_rate": (float(np.mean([r.get("a_heldout_saved", r["a_heldout"])
                                                   <= cfg.tau_a for r in succ]))
                                    if succ else None),
        }
    return out


def gallery(path: Path, sources, outputs: dict[str, dict[str, np.ndarray]], rows_by, n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = list(outputs)
    # The ladder of disguise strengths: its rungs (first iterate below each score-A
    # threshold) after the final outputs, where the run kept them.
    rung_keys = sorted({k.split("~", 1)[1] for p in params for k in outputs[p] if "~" in k},
                       reverse=True)
    cols = [(p, None) for p in params] + [
        (p, rk) for p in params for rk in rung_keys
        if any(k.endswith("~" + rk) for k in outputs[p])
    ]
    n = min(n, len(sources))
    fig, axes = plt.subplots(n, 1 + len(cols), figsize=(2.6 * (1 + len(cols)), 2.9 * n))
    axes = np.atleast_2d(axes)
    for i in range(n):
        key, src = sources[i]
        axes[i, 0].imshow(src.context)
        axes[i, 0].set_title("source", fontsize=8)
        for j, (p, rk) in enumerate(cols):
            r = rows_by[p].get(key)
            img = outputs[p].get(key if rk is None else f"{key}~{rk}")
            if r is None or img is None:
                continue
            axes[i, j + 1].imshow(img)
            if rk is not None:
                axes[i, j + 1].set_title(f"{p} ladder, {rk}", fontsize=7)
                continue
            crowd = " ".join(
                f"{n_[:3]} {'D' if c['majority_different'] else 'S'}"
                for n_, c in sorted(r.get("crowd", {}).items())
            )
            axes[i, j + 1].set_title(
                f"{p}: {r['stop_reason']}\nA loop {r['a_loop']:.2f} held-out {r['a_heldout']:.2f}"
                f"\nB final {r['final_b']:.2f} SSIM {r['ssim']:.2f}\ncrowd {crowd}",
                fontsize=7,
            )
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


# --------------------------------------------------------------------------------------------


def run_param(pname: str, sources, proxies, loop_proxy, args):
    """Batched run over all faces (quality figures), then batch 1 (timing) on a subset."""
    cfg = DeidConfig.from_dict(
        {
            **json.loads(args.config),
            "parameterisation": pname,
            "max_iterations": args.max_iterations,
        }
    )
    out_dir = args.cache / "outputs" / pname
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, outputs = {}, {}
    t0 = time.perf_counter()
    done = 0
    for i in range(0, len(sources), args.batch):
        if args.budget_minutes and time.perf_counter() - t0 > 60 * args.budget_minutes:
            log(f"{pname}: time budget spent after {done} faces; reporting those")
            break
        chunk = sources[i : i + args.batch]
        results = run_deid_batch([s for _, s in chunk], loop_proxy, cfg, device="cpu")
        for (key, src), res in zip(chunk, results, strict=True):
            rows[key] = evaluate(src, res, out_dir, key, proxies, cfg, crowd=args.crowd)
            outputs[key] = res.context
            for rung in res.ladder:
                outputs[f"{key}~A<{rung.threshold:g}"] = rung.context
            with open(args.cache / f"rows_{pname}.jsonl", "a") as fh:
                fh.write(json.dumps(rows[key]) + "\n")
        done += len(chunk)
        log(f"{pname} batched {i + len(chunk)}/{len(sources)}")
    batched_seconds = time.perf_counter() - t0
    b1_rows = []
    for key, src in sources[: args.batch1_faces]:
        res = run_deid(src, loop_proxy, cfg, device="cpu")
        b1_rows.append(evaluate(src, res, out_dir, key + "_b1", proxies, cfg))
    log(f"{pname} batch-1 {len(b1_rows)} faces done")
    it_s = [s for r in b1_rows for s in r["iter_seconds"]]
    net_s1 = network_seconds(loop_proxy, 1, cfg.eot.samples)
    net_sb = network_seconds(loop_proxy, args.batch, cfg.eot.samples)
    it_b = [s for r in rows.values() for s in r["iter_seconds"]]
    med_it = float(np.median(it_s)) if it_s else None
    summary = {
        "batched": summarise(list(rows.values()), cfg),
        "batch1": summarise(b1_rows, cfg) if b1_rows else None,
        "batch1_faces": len(b1_rows),
        "seconds_per_face_batch1": (
            float(np.mean([r["seconds"] for r in b1_rows])) if b1_rows else None
        ),
        "seconds_per_face_batched": batched_seconds / max(1, done),
        "batch": args.batch,
        "seconds_per_iteration_batch1_median": med_it,
        "seconds_for_90_iterations_batch1": 90 * med_it if med_it else None,
        "seconds_per_iteration_batched_median": float(np.median(it_b)) if it_b else None,
        "network_seconds_per_iteration_batch1": net_s1,
        "network_seconds_per_iteration_batched": net_sb,
        "overhead_batch1": med_it / net_s1 if med_it else None,
        "overhead_batched": float(np.median(it_b)) / net_sb if it_b else None,
    }
    log(f"{pname}: {json.dumps(summary)}")
    return summary, rows, outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_lfw_arguments(ap)
    ap.add_argument(
        "--proxy-cache",
        default=str(PROXY_CACHE),
        help="the proxy benchmark's cache, read for context crops and bank rows ('': none)",
    )
    ap.add_argument("--cache", type=Path, default=Path("/tmp/deid_bench"))
    ap.add_argument("--faces", type=int, default=100)
    ap.add_argument("--params", default="style,pixels")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batch1-faces", type=int, default=100, help="faces also run at batch 1")
    ap.add_argument("--max-iterations", type=int, default=90)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", default="{}", help="job parameters (JSON) over the defaults")
    ap.add_argument(
        "--proxy-config", default="{}", help="ProxyConfig fields (JSON) for both proxies"
    )
    ap.add_argument(
        "--loop-seeds", default="1", help="seeds of the loop's proxies (several: an ensemble)"
    )
    ap.add_argument("--gallery", type=Path, default=Path("/tmp/deid_gallery.png"))
    ap.add_argument("--gallery-rows", type=int, default=16)
    ap.add_argument("--donors", type=int, default=150,
                    help="donor pool for disguise: first photos of this many LFW subjects "
                    "outside the benchmark's and the held-out proxy's folds")
    ap.add_argument("--crowd", type=int, default=20,
                    help="simulated raters per observer judging each output (0: none)")
    ap.add_argument(
        "--budget-minutes",
        type=float,
        default=0.0,
        help="stop starting new batches after this long (0: no limit)",
    )
    ap.add_argument("--train-only", default="", help="train (and cache) these proxies only")
    ap.add_argument("--merge", default="", help="also report these params from earlier runs")
    args = parse_args(ap, QUICK)
    require_lfw(args.lfw, "lfw-deepfunneled")
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)

    which = args.train_only or "loop,heldout"
    proxy_config = json.loads(args.proxy_config)
    folds = lfw_folds(args.lfw, args.pairs_per_fold)
    proxy_kw = {
        "all_folds": folds,
        "pairs_per_fold": args.pairs_per_fold,
        "proxy_cache": Path(args.proxy_cache) if args.proxy_cache else None,
    }
    if "loop" in which:
        seeds = [int(x) for x in args.loop_seeds.split(",")]
        members = [
            ensure_proxy("loop", LOOP_FOLDS, seed, args.lfw, args.cache, proxy_config, **proxy_kw)
            for seed in seeds
        ]
        loop_models = [m for m, _ in members]
        loop_info = {**members[0][1], "seeds": seeds}
    if "heldout" in which:
        held_model, held_info = ensure_proxy(
            "heldout", HELDOUT_FOLDS, 2, args.lfw, args.cache, proxy_config, **proxy_kw
        )
    if args.train_only:
        return
    loop_proxy = (
        HumanProxyScorer(loop_models[0])
        if len(loop_models) == 1
        else EnsembleScorer([HumanProxyScorer(m) for m in loop_models])
    )
    held_proxy = HumanProxyScorer(held_model)
    proxies = {"loop": loop_proxy, "heldout": held_proxy}

    bench_subjects = {s for f in BENCH_FOLDS for s in folds[f].subjects}
    sources = benchmark_faces(args.lfw, args.faces, bench_subjects)
    log(f"{len(sources)} benchmark faces (subjects of View-2 folds {BENCH_FOLDS})")
    donor_info = None
    if "disguise" in args.params.split(","):
        # Donors: other people than the benchmark faces, and never seen by the held-out
        # proxy (its folds excluded too); the shared LFW copy holds View-2 subjects only.
        excluded = {s for f in BENCH_FOLDS + HELDOUT_FOLDS for s in folds[f].subjects}
        donor_info = attach_donors(sources, args.lfw, args.donors, excluded, args.cache,
                                   DeidConfig.from_dict({**json.loads(args.config),
                                                         "parameterisation": "disguise"}))

    summary: dict[str, dict] = {}
    rows_by: dict[str, dict[str, dict]] = {}
    outputs: dict[str, dict[str, np.ndarray]] = {}
    for pname in [p for p in args.params.split(",") if p]:
        summary[pname], rows_by[pname], outputs[pname] = run_param(
            pname, sources, proxies, loop_proxy, args
        )
        # Per-parameterisation results on disk, so runs can go in parallel and --merge
        # assembles the gallery and the JSON.
        (args.cache / f"summary_{pname}.json").write_text(json.dumps(summary[pname]))
        (args.cache / f"rows_{pname}.json").write_text(json.dumps(rows_by[pname]))
        shown = {k for k, _ in sources[: args.gallery_rows]}
        keys = [k for k in outputs[pname] if k.split("~", 1)[0] in shown]
        np.savez_compressed(
            args.cache / f"gallery_{pname}.npz", **{k: outputs[pname][k] for k in keys}
        )
    for pname in [p for p in args.merge.split(",") if p and p not in summary]:
        summary[pname] = json.loads((args.cache / f"summary_{pname}.json").read_text())
        rows_by[pname] = json.loads((args.cache / f"rows_{pname}.json").read_text())
        with np.load(args.cache / f"gallery_{pname}.npz") as z:
            outputs[pname] = {k: z[k] for k in z.files}

    args.gallery.parent.mkdir(parents=True, exist_ok=True)
    gallery(args.gallery, sources, outputs, rows_by, args.gallery_rows)
    (args.cache / "rows.json").write_text(json.dumps(rows_by))
    result = {
        "bench": "deid",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "host": {
            "cpu": cpu_name(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "faces": len(sources),
        "max_iterations": args.max_iterations,
        "config_defaults": DeidConfig().to_dict(),
        "config_overrides": json.loads(args.config),
        "proxies": {
            "loop": {k: v for k, v in loop_info.items() if k != "subjects"},
            "heldout": {k: v for k, v in held_info.items() if k != "subjects"},
        },
        "gallery": str(args.gallery),
        "donors": donor_info,
        "crowd": {"raters": args.crowd, "mix": CROWD_MIX} if args.crowd else None,
        "results": summary,
    }
    emit(result)


if __name__ == "__main__":
    main()
