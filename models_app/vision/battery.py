"""The perceptual battery: controlled variants of face photos that people ignore, or that
change what people see, and how much a judge's P(same) moves under each.

A *judge* is anything that says P(same) for (source, output) image pairs: a human-proxy
version, a simulated observer. The battery shows each judge the pairs (a, b), where a and
b are two photos of one subject (or one photo twice), and then (a, V(b)) for every variant
V, all as 300x300 aligned context crops (what the proxy sees, and the campaign's "context
crop" view):

* the **invariance set** must leave P(same) within ``tolerance`` (0.05) of the unchanged
  pair: people ignore hue that keeps luminance (Kemp et al. 1996), a few grey levels of
  noise, JPEG at quality 70, a 2-pixel shift, mirroring, and ±10 % brightness or contrast;
* the **effect set** must lower P(same) in the order people's data show: the face alone
  against the whole photo costs people little (Kumar et al. 2009: 99.2 % → 97.5 %), while
  luminance negation (Gilad, Meng & Sinha 2009) and an inner face set into another
  person's head and surroundings (Sinha & Poggio 1996) disrupt matching strongly.

Whether negation or the illusion disrupts more is not settled for this pairing, so the
order asks only that each lowers P(same) by at least ``strong_drop`` and by more than the
face alone does. Pure numpy/scipy/PIL: no Django, no network.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# ITU-R BT.601 luma weights: the luminance people read (the proxy and the observers too).
LUMA = np.array([0.299, 0.587, 0.114])
# RGB <-> YIQ (NTSC): Y is that luminance; I and Q carry colour.
_TO_YIQ = np.array([LUMA, [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_FROM_YIQ = np.linalg.inv(_TO_YIQ)

TOLERANCE = 0.05  # |ΔP(same)| the invariance set may cause, on average over faces
STRONG_DROP = 0.10  # the least drop in P(same) that counts as "strongly" for an effect

# Where the aligned 300 context crop puts the face (models_app.deid.params.region_masks):
# brows to chin an ellipse around (150, 158), 50 x 66 px half-axes; the inner face (brows,
# eyes, nose, mouth) a smaller one inside it.
FACE_ELLIPSE = (150.0, 158.0, 50.0, 66.0)
INNER_FACE_ELLIPSE = (150.0, 160.0, 40.0, 52.0)


# --- Image changes (HxWx3 uint8 RGB in and out) ------------------------------------------


def recolour(rgb: np.ndarray, hue_degrees: float, saturation: float = 1.0) -> np.ndarray:
    """Rotate hue by ``hue_degrees`` and scale saturation, keeping luminance (up to clipping
    of colours that leave the RGB cube, and rounding)."""
    yiq = rgb.astype(np.float64) @ _TO_YIQ.T
    t = np.deg2rad(hue_degrees)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * saturation
    yiq[..., 1:] = yiq[..., 1:] @ rot.T
    return np.clip(np.rint(yiq @ _FROM_YIQ.T), 0, 255).astype(np.uint8)


def add_noise(rgb: np.ndarray, rng: np.random.Generator, levels: int = 4) -> np.ndarray:
    """Independent integer noise, uniform in ±``levels`` grey levels, on every channel."""
    noise = rng.integers(-levels, levels + 1, size=rgb.shape)
    return np.clip(rgb.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """A JPEG round trip at ``quality`` (PIL, 4:2:0 chroma as browsers receive it)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def shift(rgb: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The picture moved by (dy, dx) px, the uncovered border filled by edge replication."""
    h, w = rgb.shape[:2]
    pad = np.pad(rgb, ((abs(dy), abs(dy)), (abs(dx), abs(dx)), (0, 0)), mode="edge")
    return np.ascontiguousarray(pad[abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w])


def negate(rgb: np.ndarray) -> np.ndarray:
    """The photographic negative (luminance inverted)."""
    return (255 - rgb).astype(np.uint8)


def mirror(rgb: np.ndarray) -> np.ndarray:
    """Left and right swapped."""
    return np.ascontiguousarray(rgb[:, ::-1])


def brightness(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Every channel scaled by ``factor`` (1.1: 10 % brighter)."""
    return np.clip(np.rint(rgb.astype(np.float64) * factor), 0, 255).astype(np.uint8)


def contrast(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Deviations from the image's mean luminance scaled by ``factor``."""
    x = rgb.astype(np.float64)
    mean = float((x @ LUMA).mean())
    return np.clip(np.rint(mean + (x - mean) * factor), 0, 255).astype(np.uint8)


def ellipse_mask(
    shape: tuple[int, int], ellipse: tuple[float, float, float, float], feather: float = 0.0
) -> np.ndarray:
    """(H, W) float mask, 1 inside the ellipse (cx, cy, rx, ry) given in the 300 frame and
    scaled to ``shape``; ``feather`` px (300 frame) of Gaussian edge."""
    from scipy.ndimage import gaussian_filter

    h, w = shape
    cx, cy, rx, ry = ellipse
    ys = (np.arange(h) + 0.5) * (300.0 / h)
    xs = (np.arange(w) + 0.5) * (300.0 / w)
    inside = (((xs[None, :] - cx) / rx) ** 2 + ((ys[:, None] - cy) / ry) ** 2) <= 1.0
    mask = inside.astype(np.float64)
    if feather > 0:
        mask = gaussian_filter(mask, feather * h / 300.0)
    return mask


def face_alone(rgb: np.ndarray) -> np.ndarray:
    """The face oval only, everything else black (Kumar et al.'s tight-crop condition)."""
    keep = ellipse_mask(rgb.shape[:2], FACE_ELLIPSE) > 0.5
    return np.where(keep[..., None], rgb, 0).astype(np.uint8)


def inner_face_into(face: np.ndarray, donor: np.ndarray, feather: float = 6.0) -> np.ndarray:
    """``face``'s inner face (brows, eyes, nose, mouth) set into ``donor``'s head and
    surroundings: both aligned crops, so the landmarks already coincide. The inner face's
    colour is matched to the donor's face (per-channel mean and spread over the inner-face
    oval) and blended with a feathered oval (the presidential illusion)."""
    if face.shape != donor.shape:
        raise ValueError(f"face {face.shape} and donor {donor.shape} must be the same size")
    alpha = ellipse_mask(face.shape[:2], INNER_FACE_ELLIPSE, feather)[..., None]
    region = ellipse_mask(face.shape[:2], INNER_FACE_ELLIPSE) > 0.5
    f, d = face.astype(np.float64), donor.astype(np.float64)
    fm, fs = f[region].mean(0), f[region].std(0) + 1e-6
    dm, ds = d[region].mean(0), d[region].std(0) + 1e-6
    matched = (f - fm) / fs * np.sqrt(fs * ds) + dm  # the donor's tone, half its contrast ratio
    out = alpha * matched + (1 - alpha) * d
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --- The battery -------------------------------------------------------------------------

Variant = Callable[[np.ndarray, np.random.Generator], np.ndarray]

INVARIANCE: dict[str, Variant] = {
    "hue_rotation_120": lambda x, rng: recolour(x, 120),
    "noise_4_levels": lambda x, rng: add_noise(x, rng, 4),
    "jpeg_70": lambda x, rng: jpeg(x, 70),
    "shift_2px": lambda x, rng: shift(x, 2, 2),
    "mirror": lambda x, rng: mirror(x),
    "brightness_+10%": lambda x, rng: brightness(x, 1.1),
    "brightness_-10%": lambda x, rng: brightness(x, 0.9),
    "contrast_+10%": lambda x, rng: contrast(x, 1.1),
    "contrast_-10%": lambda x, rng: contrast(x, 0.9),
}
# The effect set: (b, donor, rng) -> image. The donor is another subject's photo.
EFFECTS: dict[str, Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]] = {
    "face_alone": lambda x, donor, rng: face_alone(x),
    "negation": lambda x, donor, rng: negate(x),
    "inner_face_in_other_head": lambda x, donor, rng: inner_face_into(x, donor),
}
SMALL_EFFECT = "face_alone"  # people: 99.2 % whole photo, 97.5 % face alone


@dataclass(frozen=True)
class BatteryCase:
    """One face: ``source`` (a), ``target`` (b: another photo of the same subject, or a
    itself) and ``donor`` (a photo of another subject). 300x300x3 uint8 aligned crops."""

    source: np.ndarray
    target: np.ndarray
    donor: np.ndarray


ScoreFn = Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], np.ndarray]


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


def run_battery(
    score: ScoreFn,
    cases: Sequence[BatteryCase],
    *,
    seed: int = 0,
    tolerance: float = TOLERANCE,
    strong_drop: float = STRONG_DROP,
) -> dict:
    """Score ``cases`` and every variant with ``score`` (lists of sources and outputs in,
    P(same) per pair out) and say which items pass.

    Invariance item: mean |P(a, V(b)) − P(a, b)| ≤ ``tolerance``. Effects: the mean drop
    P(a, b) − P(a, E(b)); the order holds when negation and the illusion each drop by at
    least ``strong_drop`` and by more than the face alone does. Returns a JSON-ready dict
    with per-item figures, ``failed`` (the item names that did not pass) and ``passed``."""
    if not cases:
        raise ValueError("the battery needs at least one face")
    rng = np.random.default_rng(seed)
    sources = [c.source for c in cases]

    def probs(outputs: list[np.ndarray]) -> np.ndarray:
        p = np.asarray(score(sources, outputs), dtype=np.float64).reshape(-1)
        if p.shape != (len(cases),) or not np.all(np.isfinite(p)):
            raise ValueError(f"score returned {p.shape} values for {len(cases)} pairs")
        return p

    base = probs([c.target for c in cases])
    invariance: dict[str, dict] = {}
    failed: list[str] = []
    for name, variant in INVARIANCE.items():
        changed = probs([variant(c.target, rng) for c in cases])
        delta = np.abs(changed - base)
        ok = bool(delta.mean() <= tolerance)
        invariance[name] = {
            "mean_abs_change": round(float(delta.mean()), 4),
            "p90_abs_change": round(float(np.quantile(delta, 0.9)), 4),
            "share_within_tolerance": round(float(np.mean(delta <= tolerance)), 4),
            # In log-odds: a judge sure of "same" (P near 1) hides changes in P that an
            # attack can still use; this figure shows them.
            "mean_abs_logit_change": round(float(np.mean(np.abs(_logit(changed) - _logit(base)))), 4),
            "passed": ok,
        }
        if not ok:
            failed.append(name)
    effects: dict[str, dict] = {}
    for name, effect in EFFECTS.items():
        drop = base - probs([effect(c.target, c.donor, rng) for c in cases])
        effects[name] = {
            "mean_drop": round(float(drop.mean()), 4),
            "share_lowered": round(float(np.mean(drop > 0)), 4),
        }
    small = effects[SMALL_EFFECT]["mean_drop"]
    for name, e in effects.items():
        if name == SMALL_EFFECT:
            e["passed"] = bool(small >= -tolerance)  # the face alone must not raise P(same)
        else:
            e["passed"] = bool(e["mean_drop"] >= strong_drop and e["mean_drop"] > small)
        if not e["passed"]:
            failed.append(name)
    invariance_ok = all(v["passed"] for v in invariance.values())
    order_ok = all(v["passed"] for v in effects.values())
    return {
        "n_faces": len(cases),
        "tolerance": tolerance,
        "strong_drop": strong_drop,
        "baseline_p_same": round(float(base.mean()), 4),
        "invariance": invariance,
        "effects": effects,
        "expected_order": f"{SMALL_EFFECT} < negation, inner_face_in_other_head",
        "invariance_passed": invariance_ok,
        "order_passed": order_ok,
        "failed": failed,
        "passed": invariance_ok and order_ok,
    }
