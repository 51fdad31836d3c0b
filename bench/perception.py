"""The perceptual battery (models_app.vision.battery) for the platform's proxies and for each
simulated observer, on held-out LFW faces. Prints one JSON line last.

Faces: the matched pairs of View-2 folds 8-9 (a, b: two photos of one subject), each with a
donor photo of another subject of those folds (for the inner-face illusion), as aligned
300x300 context crops. Proxies: ``bench.deid``'s loop proxy (folds 0-3, the platform's
default architecture trained on natural pairs) and held-out proxy (folds 4-7), both
subject-disjoint from the faces, cached in ``--cache`` and shared with ``bench.deid``.

The observers' and the proxies' figures are theirs: none is what people would do. The
people's side of each item is the published finding the battery encodes.

    .venv/bin/python -m bench.perception [--faces 60] [--observer pkg.mod:observe] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import add_lfw_arguments, emit, lfw_folds, log, machine, parse_args, require_lfw
from bench.deid import HELDOUT_FOLDS, LOOP_FOLDS, PROXY_CACHE, _contexts_for, ensure_proxy
from models_app.proxy.judge import proxy_judge
from models_app.vision.battery import BatteryCase, run_battery
from ratings.observers import SHIPPED, load_observer, observer_judge

BATTERY_FOLDS = [8, 9]
# The platform's proxy architecture before this battery existed (an RGB appearance branch,
# unmirrored; what a stored config without these keys loads as) and after (the defaults).
ARCHITECTURES = {"before": {"colour": "rgb", "mirror_symmetric": False}, "after": {}}
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
    cases = battery_cases(folds, args.lfw, args.faces, proxy_cache)
    log(f"battery: {len(cases)} faces (View-2 folds {BATTERY_FOLDS})")

    judges = {}
    for arch, proxy_config in architectures.items():
        for name, folds_, seed in (("loop", LOOP_FOLDS, 1), ("heldout", HELDOUT_FOLDS, 2)):
            model, _info = ensure_proxy(name, folds_, seed, args.lfw, args.cache, proxy_config,
                                        **kw)
            judges[f"proxy_{name}_{arch}"] = proxy_judge(model)
    for name in args.observer or list(SHIPPED):
        judges[f"observer_{name}"] = observer_judge(load_observer(name))

    results: dict[str, dict] = {}
    for name, score in judges.items():
        t0 = time.perf_counter()
        res = run_battery(score, cases)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        results[name] = res
        log(f"{name}: passed={res['passed']} failed={res['failed']} "
            f"invariance={ {k: v['mean_abs_change'] for k, v in res['invariance'].items()} } "
            f"effects={ {k: v['mean_drop'] for k, v in res['effects'].items()} } "
            f"({res['seconds']} s)")
    out = {"bench": "perception", "machine": machine(), "faces": len(cases),
           "proxy_configs": architectures, "judges": results}
    if args.naturalness:
        out["naturalness_percentiles"] = face_colour_percentiles(folds, args, proxy_cache)
    emit(out)


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


if __name__ == "__main__":
    main()
