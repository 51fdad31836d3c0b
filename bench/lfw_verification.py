"""LFW View-2 verification for each CFRU, with our own detection and alignment.

Official protocol: ``pairs.txt`` (10 folds of 300 matched + 300 mismatched pairs); for each
fold the distance threshold is chosen on the other 9 folds and accuracy is measured on it.
Reports, per CFRU, mean accuracy ± std over the folds, the calibrated threshold, and the
accuracy at dlib's fixed 0.6; fits the logistic similarity slope and writes both to
``models_app/vision/calibration.json`` (unless ``--no-write``). Prints one JSON line last.

Chips and embeddings are cached outside the repository (``--cache``, default
/tmp/deid_lfw_cache) so a rerun only evaluates.

    .venv/bin/python -m bench.lfw_verification [--cfrus dlib_resnet_v1,torch_dlib_resnet_v1]
        [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import inspect
import json
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from bench.common import (
    add_lfw_arguments,
    emit,
    lfw_folds,
    load_rgb,
    machine,
    median_box,
    parse_args,
    require_lfw,
)
from models_app.vision import cfru as cfru_mod
from models_app.vision import dlib_dat, faces

DETECTION_POLICY = "hog0-1-2_central40_cnn0-1_centrebox.v2"

# 8 + 8 pairs of each fold (160 pairs, ~250 images), all four CFRUs; its own cache, and the
# calibration is not written (a quick run must not recalibrate the platform).
QUICK = {"pairs_per_fold": 8, "cache": "/tmp/deid_lfw_cache_quick", "no_write": True}


# LFW crops are centred on the subject (Viola-Jones box enlarged 2.2x, then deep-funneled);
# a detection whose centre is farther than this from the image centre is someone else.
CENTRE_RADIUS = 40
_cnn_detector = None
# faces.detect_faces may fall back to the CNN detector itself; here each stage is explicit.
_HOG_ONLY = (
    {"cnn_fallback": False}
    if "cnn_fallback" in inspect.signature(faces.detect_faces).parameters
    else {}
)


def _central_box(
    boxes: list[tuple[int, int, int, int]], width: int, height: int
) -> tuple[int, int, int, int] | None:
    if not boxes:
        return None
    cx, cy = width / 2.0, height / 2.0
    dist = [np.hypot((b[0] + b[2]) / 2 - cx, (b[1] + b[3]) / 2 - cy) for b in boxes]
    i = int(np.argmin(dist))
    return boxes[i] if dist[i] <= CENTRE_RADIUS else None


def _cnn_boxes(rgb: np.ndarray, upsample: int) -> list[tuple[int, int, int, int]]:
    """dlib's CNN (MMOD) face detector, from the same face_recognition_models package."""
    global _cnn_detector
    import dlib

    if _cnn_detector is None:
        path = dlib_dat.default_model_path().with_name("mmod_human_face_detector.dat")
        _cnn_detector = dlib.cnn_face_detection_model_v1(str(path))
    dets = _cnn_detector(rgb, upsample)
    return [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()) for d in dets]


def _detect(path: str) -> tuple[np.ndarray | None, tuple[int, int, int, int] | None, str]:
    """Our detection + alignment: the central face by HOG (0, 1, 2 upsamplings), else by
    dlib's CNN detector; (None, None, "none") when neither finds a face near the centre."""
    rgb = load_rgb(path)
    h, w = rgb.shape[:2]
    for up in (0, 1, 2):
        box = _central_box([b for b, _ in faces.detect_faces(rgb, (up,), **_HOG_ONLY)], w, h)
        if box is not None:
            return faces.align(rgb, box)[1], box, "hog" if up < 2 else "hog_upsample2"
    for up in (0, 1):
        box = _central_box(_cnn_boxes(rgb, up), w, h)
        if box is not None:
            return faces.align(rgb, box)[1], box, "cnn"
    return None, None, "none"


def make_chips(
    lfw_dir: Path, images: list[str], cache: Path, workers: int
) -> tuple[np.ndarray, dict]:
    chips_file, info_file = cache / "chips.npy", cache / "chips.json"
    if chips_file.exists() and info_file.exists():
        info = json.loads(info_file.read_text())
        if info["images"] == images and info.get("policy") == DETECTION_POLICY:
            return np.load(chips_file), info
    t0 = time.time()
    paths = [str(lfw_dir / "lfw-deepfunneled" / p) for p in images]
    with Pool(workers) as pool:
        results = pool.map(_detect, paths, chunksize=32)
    chips = np.zeros((len(images), 150, 150, 3), dtype=np.uint8)
    methods = []
    boxes = []
    for i, (chip, box, how) in enumerate(results):
        methods.append(how)
        if chip is not None:
            chips[i] = chip
            boxes.append(box)
    # Still no face: the median detection box, in the middle of the image.
    centre = median_box(boxes)
    for i in [i for i, m in enumerate(methods) if m == "none"]:
        chips[i] = faces.align(load_rgb(paths[i]), centre)[1]
        methods[i] = "centre_box"
    info = {
        "images": images,
        "policy": DETECTION_POLICY,
        "methods": methods,
        "median_box": list(centre),
        "seconds": round(time.time() - t0, 1),
    }
    np.save(chips_file, chips)
    info_file.write_text(json.dumps(info))
    return chips, info


def _digests(chips: np.ndarray) -> np.ndarray:
    return np.array([hashlib.blake2b(c.tobytes(), digest_size=8).hexdigest() for c in chips])


def _embed_single_cached(
    cfru: cfru_mod.CFRU, chips: np.ndarray, cache: Path
) -> tuple[np.ndarray, float, int]:
    """``cfru.embed_single`` of every chip; the cache (per runtime, by chip content) means a
    rerun, or a second CFRU on the same engine, only computes chips it has not seen."""
    f = cache / f"emb_{cfru.runtime}.npz"
    digests = _digests(chips)
    known: dict[str, np.ndarray] = {}
    if f.exists():
        with np.load(f) as old:
            known = dict(zip(old["digests"], old["emb"], strict=True))
    todo = [i for i, d in enumerate(digests) if d not in known]
    seconds = float("nan")
    if todo:
        t0 = time.time()
        for i in range(0, len(todo), 256):
            idx = todo[i : i + 256]
            for d, e in zip(digests[idx], cfru.embed_single(chips[idx]), strict=True):
                known[d] = e
        seconds = time.time() - t0
        np.savez(f, emb=np.stack(list(known.values())), digests=np.array(list(known)))
    return np.stack([known[d] for d in digests]), seconds, len(todo)


def embed_all(name: str, chips: np.ndarray, cache: Path) -> tuple[np.ndarray, float, int]:
    """The CFRU's embeddings of all chips, built from cached single passes (chips and, for
    flip-averaging CFRUs, their mirror images), checked against ``cfru.embed`` on a sample."""
    cfru = cfru_mod.get_cfru(name)
    views = [chips] + ([np.ascontiguousarray(chips[:, :, ::-1])] if cfru.flip_average else [])
    parts = [_embed_single_cached(cfru, v, cache) for v in views]
    emb = np.mean([p[0] for p in parts], axis=0)
    sample = np.linspace(0, len(chips) - 1, 8).astype(int)
    gap = float(np.abs(cfru.embed(chips[sample]) - emb[sample]).max())
    if gap > 1e-6:
        raise RuntimeError(f"{name}: cached embeddings differ from cfru.embed by {gap}")
    seconds = [p[1] for p in parts if not np.isnan(p[1])]
    return emb, (sum(seconds) if seconds else float("nan")), sum(p[2] for p in parts)


def evaluate(dist: np.ndarray, same: np.ndarray, fold_of: np.ndarray) -> dict:
    n_folds = int(fold_of.max()) + 1
    accs, ths, accs06 = [], [], []
    for f in range(n_folds):
        test, train = fold_of == f, fold_of != f
        t = cfru_mod.best_threshold(dist[train], same[train])
        ths.append(t)
        accs.append(float(np.mean((dist[test] <= t) == same[test])))
        accs06.append(float(np.mean((dist[test] <= 0.6) == same[test])))
    t_all = cfru_mod.best_threshold(dist, same)
    cal = cfru_mod.fit_calibration(dist, same, t_all)
    a, a06 = np.array(accs), np.array(accs06)
    return {
        "accuracy_mean": float(a.mean()),
        "accuracy_std": float(a.std(ddof=1)),
        "accuracy_sem": float(a.std(ddof=1) / np.sqrt(n_folds)),
        "fold_accuracies": [round(v, 4) for v in accs],
        "fold_thresholds_mean": float(np.mean(ths)),
        "fold_thresholds_std": float(np.std(ths, ddof=1)),
        "calibrated_threshold": t_all,
        "accuracy_all_pairs_at_calibrated": float(np.mean((dist <= t_all) == same)),
        "logistic_scale": cal.scale,
        "accuracy_at_0.6_mean": float(a06.mean()),
        "accuracy_at_0.6_std": float(a06.std(ddof=1)),
        "accuracy_all_pairs_at_0.6": float(np.mean((dist <= 0.6) == same)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_lfw_arguments(ap)
    ap.add_argument(
        "--cfrus",
        default=",".join(
            (
                cfru_mod.DLIB_RUNTIME,
                cfru_mod.TORCH_PORT,
                cfru_mod.DLIB_RUNTIME_FLIP,
                cfru_mod.TORCH_PORT_FLIP,
            )
        ),
    )
    ap.add_argument("--cache", type=Path, default=Path("/tmp/deid_lfw_cache"))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--calibration-out", type=Path, default=cfru_mod.CALIBRATION_PATH)
    ap.add_argument("--no-write", action="store_true", help="do not write calibration.json")
    args = parse_args(ap, QUICK)

    require_lfw(args.lfw)
    args.cache.mkdir(parents=True, exist_ok=True)
    folds = lfw_folds(args.lfw, args.pairs_per_fold)
    images = sorted({k for fold in folds for k in fold.image_keys})
    index = {p: i for i, p in enumerate(images)}
    ia = np.array([index[p.a] for fold in folds for p in fold])
    ib = np.array([index[p.b] for fold in folds for p in fold])
    same = np.array([p.target > 0.5 for fold in folds for p in fold])
    fold_of = np.repeat(np.arange(len(folds)), [len(f) for f in folds])

    chips, info = make_chips(args.lfw, images, args.cache, args.workers)
    methods = np.array(info["methods"])
    kinds, counts = np.unique(methods, return_counts=True)
    detection = {str(m): int(c) for m, c in zip(kinds, counts, strict=True)}
    # Images where the HOG detector (0 or 1 upsampling) found no face near the centre.
    not_detected = {images[i]: str(methods[i]) for i in np.flatnonzero(methods != "hog")}
    print(
        f"chips: {len(images)} images; detection {detection}; {info['seconds']} s",
        file=sys.stderr,
    )

    results, embeddings = {}, {}
    for name in args.cfrus.split(","):
        emb, seconds, computed = embed_all(name, chips, args.cache)
        embeddings[name] = emb
        dist = np.linalg.norm(emb[ia] - emb[ib], axis=1)
        r = evaluate(dist, same, fold_of)
        cfru = cfru_mod.get_cfru(name)
        r.update(
            version=cfru.version,
            embedded_now=computed,
            embed_seconds=None if np.isnan(seconds) else round(seconds, 1),
        )
        results[name] = r
        print(f"{name}: {json.dumps(r)}", file=sys.stderr)

    names = list(embeddings)
    cross = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            cross[f"{a}~{b}"] = float(np.abs(embeddings[a] - embeddings[b]).max())

    today = dt.date.today().isoformat()
    if not args.no_write:
        old = {}
        if args.calibration_out.exists():
            old = json.loads(args.calibration_out.read_text()).get("cfrus", {})
        for name, r in results.items():
            old[name] = {
                "threshold": round(r["calibrated_threshold"], 6),
                "scale": round(r["logistic_scale"], 4),
                "source": (
                    f"LFW View-2 pairs.txt, 6000 pairs, our detection/alignment, {today}: "
                    f"10-fold accuracy {r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}"
                ),
            }
        payload = {
            "meta": {
                "written_by": "bench/lfw_verification.py",
                "date": today,
                "similarity": "sigmoid(scale * (threshold - euclidean_distance))",
                "match": "euclidean_distance <= threshold",
            },
            "cfrus": old,
        }
        args.calibration_out.write_text(json.dumps(payload, indent=2) + "\n")

    out = {
        "benchmark": "lfw_view2_verification",
        "date": today,
        "machine": machine(", no GPU used"),
        "images": len(images),
        "pairs": int(len(same)),
        "folds": len(folds),
        "detection": detection,
        "hog_missed_how_handled": not_detected,
        "centre_box": info["median_box"],
        "cfrus": results,
        "max_abs_embedding_diff_between_cfrus": cross,
        "calibration_written": None if args.no_write else str(args.calibration_out),
    }
    emit(out)


if __name__ == "__main__":
    main()
