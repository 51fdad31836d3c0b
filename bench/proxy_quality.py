"""Human proxy (score-A) on LFW natural pairs: accuracy/AUC of the full proxy and of the
appearance branch alone, next to people's figures (Kumar et al. 2009), plus pair-scoring
throughput and time to train. Prints one JSON line last.

Protocol: View 2 ``pairs.txt`` (10 subject-disjoint folds of 300 matched + 300 mismatched
pairs). For each test fold f, the proxy trains on 8 folds, uses fold f-1 for early stopping
and calibration (subject-disjoint from both), and is tested on fold f. Only the pairs of the
nine non-test folds are used for training ("restricted" configuration: no extra pairs).
``--folds 0,1,2`` runs fewer test folds (said so in the JSON).

Context crops (300x300, dlib alignment, padding 1.0) and frozen identity features for the
7,701 images are cached outside the repository (``--cache``, default /tmp/deid_proxy_lfw).

    .venv/bin/python -m bench.proxy_quality [--folds all] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

from bench.common import (
    add_lfw_arguments,
    emit,
    encode_bank,
    lfw_folds,
    load_rgb,
    log,
    machine,
    median_box,
    parse_args,
    require_lfw,
)
from models_app.proxy import metrics
from models_app.proxy.data import PairTable

HUMAN = {"original": 0.992, "tight_crop": 0.975, "inverse_mask": 0.936}
# 30 + 30 pairs of each fold (600 pairs, ~1,000 images), test folds 0 and 1, 3 epochs: the
# accuracies and AUCs are deterministic (seeded training, one torch thread), timings are not.
QUICK = {
    "pairs_per_fold": 30,
    "cache": "/tmp/deid_proxy_lfw_quick",
    "folds": "0,1",
    "max_epochs": 3,
    "patience": 1,
    "throughput_pairs": 16,
}


def _detect(path: str) -> tuple[list | None, list | None, str, np.ndarray | None]:
    from models_app.vision import faces

    rgb = load_rgb(path)
    for steps, how in (((0, 1), "hog"), ((2,), "hog_upsample2")):
        face = faces.detect_and_align(rgb, upsample_steps=steps)
        if face is not None:
            ctx = faces.context_crop(rgb, face.box, face.landmarks)
            return list(face.box), [list(p) for p in face.landmarks], how, ctx
    return None, None, "none", None


def prepare_contexts(lfw: Path, images: list[str], cache: Path, workers: int) -> np.ndarray:
    """(M, 300, 300, 3) uint8 context crops, cached as an .npy memmap in ``cache``."""
    from models_app.vision import faces

    ctx_file, info_file = cache / "contexts.npy", cache / "contexts.json"
    if ctx_file.exists() and info_file.exists():
        info = json.loads(info_file.read_text())
        if info.get("images") == images and info.get("complete"):
            return np.load(ctx_file, mmap_mode="r")
    t0 = time.time()
    paths = [str(lfw / "lfw-deepfunneled" / p) for p in images]
    out = np.lib.format.open_memmap(
        ctx_file, mode="w+", dtype=np.uint8, shape=(len(images), 300, 300, 3)
    )
    boxes, landmarks, methods = [None] * len(images), [None] * len(images), [""] * len(images)
    with Pool(workers) as pool:
        for i, (box, lms, how, ctx) in enumerate(pool.imap(_detect, paths, chunksize=16)):
            boxes[i], landmarks[i], methods[i] = box, lms, how
            if ctx is not None:
                out[i] = ctx
            if i % 500 == 0:
                log(f"contexts {i}/{len(images)} ({time.time() - t0:.0f} s)")
    # No face found even with 2x upsampling: landmarks on the median box (LFW centres faces).
    centre = list(median_box(b for b in boxes if b is not None))
    for i in (i for i, m in enumerate(methods) if m == "none"):
        rgb = load_rgb(paths[i])
        lms, _ = faces.align(rgb, tuple(centre))
        out[i] = faces.context_crop(rgb, centre, lms)
        boxes[i], landmarks[i], methods[i] = centre, [list(p) for p in lms], "median_box"
    out.flush()
    del out
    info = {
        "images": images,
        "boxes": boxes,
        "landmarks": landmarks,
        "methods": methods,
        "median_box": centre,
        "seconds": round(time.time() - t0, 1),
        "complete": True,
    }
    info_file.write_text(json.dumps(info))
    log(f"contexts done in {info['seconds']} s")
    return np.load(ctx_file, mmap_mode="r")


def prepare_bank(model, contexts: np.ndarray, images: list[str], cache: Path):
    """The ImageBank (frozen identity features, pooled crops, descriptors), cached per config."""
    from models_app.proxy.data import ImageBank

    tag = hashlib.sha256(
        json.dumps(model.config.bank_signature(), sort_keys=True).encode()
    ).hexdigest()
    f = cache / f"bank_{tag[:12]}.safetensors"
    if f.exists():
        bank = ImageBank.load(f)
        if bank.keys == images:
            built = f.with_suffix(".json")
            return bank, json.loads(built.read_text())["seconds"] if built.exists() else None
    t0 = time.time()
    bank = encode_bank(model, contexts, images, 500)
    seconds = time.time() - t0
    bank.save(f)
    f.with_suffix(".json").write_text(json.dumps({"seconds": seconds}))
    return bank, seconds


def best_threshold_accuracy(train_d: np.ndarray, train_y: np.ndarray, d: np.ndarray, y: np.ndarray):
    """The dlib-distance rule with its threshold chosen on the training folds (reference)."""
    cands = np.unique(train_d)
    accs = [np.mean((train_d <= t) == train_y) for t in cands]
    t = float(cands[int(np.argmax(accs))])
    return float(np.mean((d <= t) == y)), t


def throughput(model, contexts: np.ndarray, index: dict, pairs, n_pairs: int, batch: int) -> dict:
    """Pairs/s scoring end to end from uint8 context crops (tensor conversion, CFRU, head)."""
    from models_app.proxy.data import context_to_tensor

    sel = pairs.pairs[:n_pairs]
    out = {}
    for branch in ("full", "appearance"):
        t0 = time.time()
        with torch.no_grad():
            for i in range(0, len(sel), batch):
                chunk = sel[i : i + batch]
                a = context_to_tensor(np.stack([contexts[index[p.a]] for p in chunk]))
                b = context_to_tensor(np.stack([contexts[index[p.b]] for p in chunk]))
                model(a, b, branch=branch)
        out[branch] = len(sel) / (time.time() - t0)
    # Training-side scoring from a cached ImageBank (what the gate and metrics use).
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_lfw_arguments(ap)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/deid_proxy_lfw"))
    ap.add_argument("--workers", type=int, default=2, help="processes for face detection")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (shared machine)")
    ap.add_argument("--folds", default="all", help="test folds, e.g. 0,1,2 (default all 10)")
    ap.add_argument("--max-epochs", type=int, default=12)
    ap.add_argument("--patience", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--budget-min",
        type=float,
        default=45.0,
        help="start no new test fold after this many minutes of training (reported)",
    )
    ap.add_argument("--fusion", default="gated", choices=("gated", "mlp"))
    ap.add_argument("--identity-vectors", action="store_true")
    ap.add_argument("--throughput-pairs", type=int, default=128)
    ap.add_argument("--prepare-only", action="store_true")
    args = parse_args(ap, QUICK)
    require_lfw(args.lfw)
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    folds = lfw_folds(args.lfw, args.pairs_per_fold)
    images = sorted({k for f in folds for k in f.image_keys})
    log(f"{len(images)} images")
    contexts = prepare_contexts(args.lfw, images, args.cache, args.workers)
    info = json.loads((args.cache / "contexts.json").read_text())
    kinds, counts = np.unique(np.array(info["methods"]), return_counts=True)

    from models_app.proxy.config import ProxyConfig, ProxyMeta
    from models_app.proxy.data import SubjectSplit
    from models_app.proxy.network import HumanProxy
    from models_app.proxy.train import StopRules, TrainConfig, train_proxy

    bank, bank_seconds = prepare_bank(HumanProxy(), contexts, images, args.cache)
    log(f"bank ready ({bank_seconds} s)")
    if args.prepare_only:
        return

    test_folds = (
        list(range(len(folds))) if args.folds == "all" else [int(v) for v in args.folds.split(",")]
    )
    model_config = ProxyConfig(fusion=args.fusion, identity_vectors=args.identity_vectors)
    cfg = TrainConfig(
        seed=args.seed,
        stop=StopRules(monitor="val_loss", patience=args.patience, max_epochs=args.max_epochs),
    )
    emb = bank.identity[:, :128].double().numpy()
    per_fold, model = [], None
    t_start, skipped = time.time(), []
    for f in test_folds:
        if per_fold and time.time() - t_start > 60 * args.budget_min:
            skipped.append(f)
            continue
        vf = (f - 1) % len(folds)
        train_folds = [k for k in range(len(folds)) if k not in (f, vf)]
        pairs = sum((folds[k] for k in train_folds), PairTable()) + folds[vf]
        split = SubjectSplit(
            train=sorted(set().union(*(folds[k].subjects for k in train_folds))),
            val=sorted(folds[vf].subjects),
        )
        meta = ProxyMeta(prior=True, description=f"LFW View 2 natural pairs, test fold {f}")
        res = train_proxy(
            bank,
            pairs,
            cfg,
            split=split,
            meta=meta,
            model_config=model_config,
            on_epoch=lambda r, f=f: log(
                f"fold {f} epoch {r['epoch']}: train {r['train_loss']:.4f} val {r['val_loss']:.4f}"
                f" acc {r['val_accuracy']:.4f} app_acc {r['val_appearance_accuracy']:.4f}"
                f" ({r['seconds']:.0f} s)"
            ),
        )
        model = res.model.eval()
        ia, ib = bank.indices(folds[f])
        y = folds[f].targets() > 0.5
        row = {
            "fold": f,
            "val_fold": vf,
            "train_seconds": round(res.seconds, 1),
            "epochs": len(res.history),
            "best_epoch": res.best_epoch,
            "stop_reason": res.stop_reason,
        }
        for branch in ("full", "appearance"):
            p = model.score_bank(bank, ia, ib, branch=branch).double().numpy()
            row[branch] = {
                "accuracy": metrics.accuracy(p, y),
                "auc": metrics.roc_auc(p, y),
                "brier": metrics.brier(p, y),
                "ece": metrics.expected_calibration_error(p, y),
            }
        # Reference: the dlib distance alone, threshold chosen on the 9 other folds.
        tr = sum((folds[k] for k in range(len(folds)) if k != f), PairTable())
        ta, tb = bank.indices(tr)
        dtr = np.linalg.norm(emb[ta] - emb[tb], axis=1)
        dte = np.linalg.norm(emb[ia] - emb[ib], axis=1)
        acc_d, _ = best_threshold_accuracy(dtr, tr.targets() > 0.5, dte, y)
        row["dlib_distance_accuracy"] = acc_d
        row["dlib_distance_auc"] = metrics.roc_auc(-dte, y)
        per_fold.append(row)
        log(json.dumps(row))
        with open(args.cache / "folds.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")

    # Reliability diagram of the pooled test predictions is cheap: keep it beside the cache.
    def mean(key, sub=None):
        v = [r[key][sub] if sub else r[key] for r in per_fold]
        return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)

    def branch_summary(branch, also):
        acc_mean, acc_std = mean(branch, "accuracy")
        return {
            "accuracy_mean": acc_mean,
            "accuracy_std": acc_std,
            **{f"{m}_mean": mean(branch, m)[0] for m in also},
        }

    assert model is not None
    tp = throughput(
        model, contexts, bank.index, folds[per_fold[-1]["fold"]], args.throughput_pairs, 32
    )
    t0 = time.time()
    ia, ib = bank.indices(folds[per_fold[-1]["fold"]])
    model.score_bank(bank, ia, ib)
    cached_pps = len(ia) / (time.time() - t0)
    out = {
        "benchmark": "human_proxy_quality",
        "date": dt.date.today().isoformat(),
        "machine": machine(f" (shared with other jobs), no GPU, torch threads {args.threads}"),
        "protocol": (
            "LFW View 2 pairs.txt; per test fold f: train on 8 folds, fold f-1 for early "
            "stopping and Platt calibration, test on fold f; natural pairs only (prior=True)"
        ),
        "test_folds": [r["fold"] for r in per_fold],
        "folds_skipped_for_time": skipped,
        "all_10_folds": len(per_fold) == len(folds),
        "images": len(images),
        "detection": {str(k): int(c) for k, c in zip(kinds, counts, strict=True)},
        "model_config": model_config.to_dict(),
        "train_config": cfg.to_dict(),
        "full_proxy": branch_summary("full", ("auc", "brier", "ece")),
        "appearance_only": branch_summary("appearance", ("auc", "brier")),
        "dlib_distance_only": {
            "accuracy_mean": mean("dlib_distance_accuracy")[0],
            "auc_mean": mean("dlib_distance_auc")[0],
        },
        "people_kumar_2009": {
            "original_accuracy": HUMAN["original"],
            "tight_crop_accuracy": HUMAN["tight_crop"],
            "inverse_mask_accuracy": HUMAN["inverse_mask"],
        },
        "target_full_proxy_accuracy_0.98_met": mean("full", "accuracy")[0] >= 0.98,
        "train_seconds_mean_per_fold": mean("train_seconds")[0],
        "epochs_mean": mean("epochs")[0],
        "bank_build_seconds": bank_seconds,
        "context_crop_seconds": info.get("seconds"),
        "throughput_pairs_per_s": {
            "full_end_to_end_from_context_crops": tp["full"],
            "appearance_only_end_to_end": tp["appearance"],
            "full_from_cached_image_bank": cached_pps,
            "batch": 32,
            "pairs": args.throughput_pairs,
        },
        "per_fold": per_fold,
    }
    emit(out)


if __name__ == "__main__":
    main()
