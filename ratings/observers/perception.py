"""What the shipped observers share: luminance, their own face geometry, aligned frames,
band-pass filters, masked correlation and the logistic that turns a similarity into
P(same).

Pure computation (numpy, scipy, dlib through :mod:`models_app.vision.faces`): no Django,
no proxy, no recogniser network, no score the platform computes. Everything is computed
from luminance only, so a change of hue or saturation that keeps luminance cannot change
what an observer sees: people ignore such changes when they judge identity.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from models_app.vision import faces
from models_app.vision.battery import LUMA  # the one channel used
from models_app.vision.memo import ImageLru

# Where LFW's (deep-funnelled) photos put the face, as fractions of width and height: the
# median dlib box and 5 landmarks over 101 photos. Used only when the observer's own
# detector finds no face (e.g. the face is blacked out), as a person would assume the face
# is where faces usually are.
FALLBACK_BOX = (0.308, 0.356, 0.724, 0.724)
FALLBACK_LANDMARKS = ((0.616, 0.448), (0.548, 0.452), (0.384, 0.456), (0.448, 0.456),
                      (0.504, 0.576))


WEAK_THRESHOLD = -0.6
UPSCALE = 4
UPSCALE_MAX_SIDE = 1200
# Offsets (original pixels) of the starting boxes whose landmark predictions are averaged.
JITTER = tuple((dx, dy) for dx in (-2, 0, 2) for dy in (-2, 0, 2))


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Luminance (float, 0–255) of an HxWx3 uint8 RGB image; a 2-D image is taken as is."""
    arr = np.asarray(rgb)
    if arr.ndim == 2:
        return arr.astype(np.float64)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    return arr[..., :3].astype(np.float64) @ LUMA


def check_image(rgb: np.ndarray, name: str) -> np.ndarray:
    """The image as an HxWx3 uint8 array, or ValueError naming the argument."""
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name}: expected an HxWx3 uint8 RGB array, got {arr.dtype} {arr.shape}")
    if min(arr.shape[:2]) < 32:
        raise ValueError(f"{name}: image too small ({arr.shape[1]}x{arr.shape[0]})")
    return arr


@dataclass(frozen=True)
class Geometry:
    """The observer's own reading of where the face is: dlib box and 5 landmarks."""

    box: tuple[int, int, int, int]
    landmarks: tuple[tuple[int, int], ...]
    detected: bool  # False: the fallback (no face found)


# A rater's source photo is judged against many outputs, and face detection is most of an
# observer's time.
_GEOMETRY = ImageLru(1024)


def digest(arr: np.ndarray) -> bytes:
    a = np.ascontiguousarray(arr)
    return hashlib.blake2b(a.tobytes(), digest_size=16, person=str(a.shape).encode()[:16]).digest()


def luminance_u8(rgb: np.ndarray) -> np.ndarray:
    """Luminance rounded to uint8, replicated to three channels (what dlib takes)."""
    y = np.clip(np.rint(luminance(rgb)), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(y[..., None], 3, axis=2))


def upscale_factor(shape: tuple[int, ...]) -> int:
    """How much the luminance is enlarged before landmarks and alignment: dlib reports
    landmarks in whole pixels, and a one-pixel jump of a landmark moves the fine band by a
    fifth of its period; at 4x the steps are a quarter pixel (capped for large photos)."""
    return int(max(1, min(UPSCALE, UPSCALE_MAX_SIDE // max(shape[:2]))))


def _enlarged(y3: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return y3
    from PIL import Image

    h, w = y3.shape[:2]
    big = Image.fromarray(y3[..., 0]).resize((w * factor, h * factor), Image.BILINEAR)
    return np.ascontiguousarray(np.repeat(np.asarray(big)[..., None], 3, axis=2))


def face_geometry(y3: np.ndarray) -> Geometry:
    """The most central face of a luminance image (HxWx3 uint8, channels equal), by dlib's
    HOG detector and 5-point landmarks, run on luminance so that hue cannot move them; the
    LFW fallback when no face is found. Box and landmarks are in the enlarged image's pixels
    (:func:`upscale_factor`). Cached by image content."""

    def make() -> Geometry:
        import dlib

        h, w = y3.shape[:2]
        k = upscale_factor(y3.shape)
        found = faces.detect_faces(y3, (0, 1), cnn_fallback=False)
        if not found:
            # A weaker HOG threshold before giving up: a 2-px shift or light noise must not
            # tip a borderline face into "no face" (dlib's CNN would cost ~50x).
            rects, scores, _ = faces._Models.get()[0].run(y3, 1, WEAK_THRESHOLD)
            found = [((r.left(), r.top(), r.right(), r.bottom()), float(sc))
                     for r, sc in zip(rects, scores, strict=True)]
        if found:
            boxes = [b for b, _ in found]
            box = tuple(int(v) * k for v in boxes[faces._central_index(boxes, w, h)])
            # The mean of predictions from slightly moved starting boxes: one prediction
            # jumps by a pixel when a few grey levels change, the mean hardly moves.
            big, predictor = _enlarged(y3, k), faces._Models.get()[1]
            runs = []
            for dx, dy in JITTER:
                x0, y0, x1, y1 = box
                shape = predictor(big, dlib.rectangle(x0 + dx * k, y0 + dy * k,
                                                      x1 + dx * k, y1 + dy * k))
                runs.append([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)])
            landmarks = tuple((round(x), round(y)) for x, y in np.mean(runs, axis=0))
            return Geometry(box, landmarks, True)
        box = (round(FALLBACK_BOX[0] * w * k), round(FALLBACK_BOX[1] * h * k),
               round(FALLBACK_BOX[2] * w * k), round(FALLBACK_BOX[3] * h * k))
        lms = tuple((round(x * w * k), round(y * h * k)) for x, y in FALLBACK_LANDMARKS)
        return Geometry(box, lms, False)

    return _GEOMETRY.get(digest(y3), make)


def aligned(y3: np.ndarray, geometry: Geometry, size: int, padding: float) -> np.ndarray:
    """The luminance in the observer's face frame (dlib's chip alignment of the 5 landmarks,
    from the enlarged image): ``size`` px square, one face width =
    ``size / (1 + 2 * padding)`` px. Float 0–255."""
    big = _enlarged(y3, upscale_factor(y3.shape))
    chip = faces.context_crop(big, geometry.box, list(geometry.landmarks), size=size,
                              padding=padding)
    return chip[..., 0].astype(np.float64)


def band_pass(img: np.ndarray, low: float, high: float, face_width: float) -> np.ndarray:
    """``img`` filtered to ``low``–``high`` cycles per face width (raised-cosine edges half
    an octave wide), by FFT after removing the mean and reflecting the borders."""
    h, w = img.shape
    x = img - img.mean()
    x = np.pad(x, ((h // 2, h // 2), (w // 2, w // 2)), mode="reflect")
    fy = np.fft.fftfreq(x.shape[0])[:, None]
    fx = np.fft.fftfreq(x.shape[1])[None, :]
    f = np.hypot(fx, fy) * face_width  # cycles per face width
    with np.errstate(divide="ignore"):
        octave = np.log2(np.where(f > 0, f, 1e-9))
    lo, hi = np.log2(low), np.log2(high)
    gain = np.clip((octave - (lo - 0.25)) / 0.5, 0, 1) * np.clip(((hi + 0.25) - octave) / 0.5, 0, 1)
    gain = np.sin(gain * np.pi / 2) ** 2
    gain[f == 0] = 0.0
    out = np.real(np.fft.ifft2(np.fft.fft2(x) * gain))
    return out[h // 2 : h // 2 + h, w // 2 : w // 2 + w]


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma, mode="reflect")


def ellipse(size: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Boolean mask of an ellipse in a ``size`` square (centre and radii in pixels)."""
    yy, xx = np.mgrid[0:size, 0:size]
    return ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1.0


def correlation(a: np.ndarray, b: np.ndarray, weight: np.ndarray | None = None) -> float:
    """Weighted Pearson correlation of two equally shaped arrays; 0 when either is flat
    (a blank region carries no evidence either way)."""
    a = a.ravel()
    b = b.ravel()
    w = np.ones_like(a) if weight is None else weight.ravel().astype(np.float64)
    sw = w.sum()
    if sw <= 0:
        return 0.0
    a = a - (w * a).sum() / sw
    b = b - (w * b).sum() / sw
    va, vb = (w * a * a).sum(), (w * b * b).sum()
    if va <= 1e-9 * sw or vb <= 1e-9 * sw:
        return 0.0
    return float((w * a * b).sum() / np.sqrt(va * vb))


def shifted(img: np.ndarray, dy: int, dx: int, margin: int) -> np.ndarray:
    """The window of ``img`` cut ``margin`` px in from each border, moved by (dy, dx)."""
    h, w = img.shape[:2]
    return img[margin + dy : h - margin + dy, margin + dx : w - margin + dx]


def logistic(similarity: float, slope: float, intercept: float) -> float:
    """P(same) = 1 / (1 + exp(-(slope * similarity + intercept)))."""
    z = float(np.clip(slope * similarity + intercept, -50.0, 50.0))
    return float(1.0 / (1.0 + np.exp(-z)))


def clear_caches() -> None:
    _GEOMETRY.clear()
