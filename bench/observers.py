"""Where the simulated observers land on natural LFW pairs, beside people (Kumar et al.
2009), and how much the changes people ignore move them.

    .venv/bin/python -m bench.observers            # calibration + invariances + timing
    .venv/bin/python -m bench.observers --fit      # also print the logistic constants
    .venv/bin/python -m bench.observers --quick

Conditions (the human study's three): ``whole`` (the LFW photo), ``crop`` (a tight face
oval, everything else black), ``surroundings`` (the face oval black, hair and background
left). The ovals come from a detection on the whole photo made here, by the benchmark; the
observers only see the pixels. Accuracy is the LFW protocol's: each fold judged by a
logistic fitted on the other nine. The observers' figures are theirs: they are not what
people would do.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import (
    SHARED_DATA,
    add_lfw_arguments,
    emit,
    lfw_folds,
    load_rgb,
    log,
    machine,
    parse_args,
    require_lfw,
)
from ratings.observers import SHIPPED, load_observer
from ratings.observers import transforms as T
from ratings.observers.calibration import (
    auc,
    curve_summary,
    fit_logistic,
    read_human_roc,
    tenfold_accuracy,
)
from ratings.observers.perception import ellipse

HUMAN = {"whole": "kumar_human_orig.txt", "crop": "kumar_human_crop.txt",
         "surroundings": "kumar_human_inv.txt"}


def face_oval(rgb: np.ndarray) -> np.ndarray:
    """The face oval of a whole photo (detected here, for making the conditions)."""
    from models_app.vision import faces

    h, w = rgb.shape[:2]
    found = faces.detect_faces(rgb, (0, 1), cnn_fallback=False)
    if found:
        boxes = [b for b, _ in found]
        x0, y0, x1, y1 = boxes[faces._central_index(boxes, w, h)]
    else:
        x0, y0, x1, y1 = 0.31 * w, 0.36 * h, 0.72 * w, 0.72 * h
    bw, bh = x1 - x0, y1 - y0
    assert h == w, "LFW photos are square"
    return ellipse(w, (x0 + x1) / 2, (y0 + y1) / 2 - 0.08 * bh, 0.58 * bw, 0.72 * bh)


def condition(rgb: np.ndarray, oval: np.ndarray, name: str) -> np.ndarray:
    if name == "whole":
        return rgb
    keep = oval if name == "crop" else ~oval
    return np.where(keep[..., None], rgb, 0).astype(np.uint8)


def similarity_fn(path: str):
    """The observer's similarity when it exposes one, else its P(same) (a plug-in)."""
    import importlib

    spec = SHIPPED.get(path, path)
    module = importlib.import_module(spec.partition(":")[0])
    return getattr(module, "similarity", None)


def probabilities(name, s, observe, view, rows, rng) -> np.ndarray:
    """P(same) of every pair: a shipped observer's stored logistic on the similarities
    already measured, else the observer itself."""
    import importlib

    module = importlib.import_module(SHIPPED.get(name, name).partition(":")[0])
    if hasattr(module, "SLOPE") and hasattr(module, "similarity"):
        return 1.0 / (1.0 + np.exp(-(module.SLOPE * s + module.INTERCEPT)))
    return np.array([observe(view[p.a], view[p.b], rng) for _, p in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_lfw_arguments(ap)
    ap.set_defaults(pairs_per_fold=5)
    ap.add_argument("--observer", action="append", default=None,
                    help="short name or package.module:callable (repeatable; default: shipped)")
    ap.add_argument("--faces", type=int, default=24, help="faces for the invariance deltas")
    ap.add_argument("--fit", action="store_true",
                    help="print the logistic (slope, intercept) fitted on all whole-photo pairs")
    ap.add_argument("--conditions", default=",".join(HUMAN),
                    help="comma-separated subset of whole,crop,surroundings")
    ap.add_argument("--votes", type=int, default=7,
                    help="judgments per pair of the simulated crowd in the ceiling figure")
    args = parse_args(ap, {"pairs_per_fold": 3, "faces": 8})
    require_lfw(args.lfw)
    names = args.observer or list(SHIPPED)
    folds = lfw_folds(args.lfw, args.pairs_per_fold)
    rows = [(k, p) for k, f in enumerate(folds) for p in f.pairs]
    same = np.array([p.target > 0.5 for _, p in rows])
    fold = np.array([k for k, _ in rows])
    images = sorted({x for _, p in rows for x in (p.a, p.b)})
    log(f"{len(rows)} pairs, {len(images)} images")
    pix = {i: load_rgb(args.lfw / "lfw-deepfunneled" / i) for i in images}
    ovals = {i: face_oval(a) for i, a in pix.items()}
    rng = np.random.default_rng(0)
    result: dict[str, object] = {"bench": "observers", "machine": machine(),
                                 "pairs": len(rows), "pairs_per_fold": args.pairs_per_fold}
    humans = {c: curve_summary(read_human_roc(SHARED_DATA / "lfw_human_verification_roc" / f))
              for c, f in HUMAN.items()}
    result["people"] = {c: {k: round(v, 4) for k, v in h.items()} for c, h in humans.items()}
    per: dict[str, dict] = {}
    for name in names:
        observe = load_observer(name)
        sim = similarity_fn(name) or (lambda a, b, _o=observe: _o(a, b, rng))
        out: dict[str, object] = {}
        for cond in [c for c in HUMAN if c in args.conditions.split(",")]:
            t0 = time.perf_counter()
            view = {i: condition(pix[i], ovals[i], cond) for i in images}
            s = np.array([sim(view[p.a], view[p.b]) for _, p in rows])
            secs = (time.perf_counter() - t0) / len(rows)
            p_same = probabilities(name, s, observe, view, rows, rng)
            acc, se = tenfold_accuracy(s, same, fold)
            out[cond] = {"tenfold_accuracy": round(acc, 4), "se": round(se, 4),
                         "auc": round(auc(s, same), 4),
                         "accuracy_stored_logistic": round(float(np.mean((p_same > 0.5) == same)), 4),
                         "mean_p_same": {"same": round(float(p_same[same].mean()), 3),
                                         "different": round(float(p_same[~same].mean()), 3)},
                         "people_accuracy": round(humans[cond]["best_accuracy"], 4)}
            if cond == "whole":
                out["ceiling"] = ceiling(p_same, same, args.votes, rng)
            log(f"{name} {cond}: {out[cond]} ({secs * 1000:.0f} ms/pair incl. detection)")
            if cond == "whole" and args.fit:
                slope, intercept = fit_logistic(s, same)
                out["fitted"] = {"slope": round(slope, 3), "intercept": round(intercept, 3)}
                log(f"{name}: SLOPE = {slope:.3f}, INTERCEPT = {intercept:.3f}")
        if args.faces > 0:
            out["invariance"] = invariances(observe, rows, pix, args.faces)
        # A judgment as the crowd makes it: a new (uncached) pair each time.
        from ratings.observers.perception import clear_caches

        t0 = time.perf_counter()
        k = min(10, len(rows))
        for _, p in rows[:k]:
            clear_caches()
            observe(pix[p.a], pix[p.b], rng)
        out["ms_per_judgment"] = round((time.perf_counter() - t0) / k * 1000, 1)
        per[name] = out
    result["observers"] = per
    emit(result)


TAU_A = 0.3  # DeidConfig.tau_a's default (not imported: that pulls torch into this bench)


def ceiling(p_same: np.ndarray, same: np.ndarray, votes: int, rng: np.random.Generator,
            draws: int = 50) -> dict[str, float]:
    """How often the observer, and a simulated crowd answering from it, call a pair
    "different": on pairs of two different people this is the most any de-identified output
    can score as a crowd success against this observer (an output that looks like a
    genuinely different person to it, and no more); on pairs of one person it is the
    observer's false "different" rate. The crowd is the closed loop's (bench.deid.CROWD_MIX):
    ``votes`` raters drawn from the mix per pair, ``draws`` draws per pair."""
    from bench.deid import CROWD_MIX
    from ratings.simulation.profiles import TYPES

    kinds, shares = list(CROWD_MIX), np.array(list(CROWD_MIX.values()))
    majority = np.zeros(len(p_same))
    for i, p in enumerate(p_same):
        wins = 0
        for _ in range(draws):
            drawn = rng.choice(len(kinds), size=votes, p=shares / shares.sum())
            n_same = sum(TYPES[kinds[k]].answer(float(p) if TYPES[kinds[k]].looks else None,
                                                0, rng).same for k in drawn)
            wins += n_same < votes / 2
        majority[i] = wins / draws
    return {"different_pairs_observer_says_different": round(float(np.mean(p_same[~same] < 0.5)), 4),
            "different_pairs_crowd_majority_different": round(float(majority[~same].mean()), 4),
            "same_pairs_observer_says_different": round(float(np.mean(p_same[same] < 0.5)), 4),
            "same_pairs_crowd_majority_different": round(float(majority[same].mean()), 4),
            # How often the observer itself puts two different people at or under the
            # loop's τA: a proxy calibrated to it would call an output that looks like
            # another person, and no more, a success only this often.
            "different_pairs_observer_p_le_tau_a": round(float(np.mean(p_same[~same] <= TAU_A)), 4),
            "same_pairs_observer_p_le_tau_a": round(float(np.mean(p_same[same] <= TAU_A)), 4),
            "tau_a": TAU_A,
            "votes": votes}


def invariances(observe, rows, pix, n: int) -> dict[str, dict[str, float]]:
    """Mean and max |ΔP(same)| of (a, T(b)) against (a, b) over natural pairs, and the drop
    from (a, a) to (a, negative of a)."""
    rng = np.random.default_rng(1)
    changes = {
        "hue_rotation_120": lambda x: T.recolour(x, 120),
        "recolour_hue_180_saturation_1.6": lambda x: T.recolour(x, 180, 1.6),
        "noise_4_levels": lambda x: T.add_noise(x, rng, 4),
        "jpeg_70": lambda x: T.jpeg(x, 70),
        "shift_2px": lambda x: T.shift(x, 2, 2),
    }
    pairs = [p for _, p in rows][:n]
    deltas: dict[str, list[float]] = {k: [] for k in changes}
    drops = []
    for p in pairs:
        a, b = pix[p.a], pix[p.b]
        base = observe(a, b, rng)
        for k, f in changes.items():
            deltas[k].append(abs(observe(a, f(b), rng) - base))
        drops.append(observe(a, a, rng) - observe(a, T.negate(a), rng))
    out = {k: {"mean": round(float(np.mean(v)), 4), "max": round(float(np.max(v)), 4)}
           for k, v in deltas.items()}
    out["negation_drop_same_image"] = {"mean": round(float(np.mean(drops)), 4),
                                       "min": round(float(np.min(drops)), 4)}
    return out


if __name__ == "__main__":
    main()
