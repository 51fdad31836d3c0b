"""Face detection and alignment with dlib (HOG detector, 5-point landmarks, face chips).

Pure module: numpy arrays in, numbers and arrays out; no Django import. The weights come
from the installed ``face_recognition_models`` package (CC0), never from the network.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .chips import CHIP_PADDING, CHIP_SIZE, CONTEXT_PADDING, CONTEXT_SIZE


@dataclass(frozen=True)
class DetectedFace:
    """One detected face: box (left, top, right, bottom), 5 landmarks and the aligned chip."""

    box: tuple[int, int, int, int]
    landmarks: list[tuple[int, int]]
    chip: np.ndarray  # uint8 HxWx3 RGB, CHIP_SIZE x CHIP_SIZE
    n_faces: int  # how many faces the detector found in the image
    score: float  # detector confidence of the chosen face


class _Models:
    """dlib objects are not thread-safe; one set per thread."""

    _local = threading.local()

    @classmethod
    def get(cls):
        m = getattr(cls._local, "models", None)
        if m is None:
            import dlib
            import face_recognition_models as frm

            m = (
                dlib.get_frontal_face_detector(),
                dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
            )
            cls._local.models = m
        return m

    @classmethod
    def cnn(cls):
        m = getattr(cls._local, "cnn", None)
        if m is None:
            import dlib
            import face_recognition_models as frm

            m = dlib.cnn_face_detection_model_v1(frm.cnn_face_detector_model_location())
            cls._local.cnn = m
        return m


def _central_index(boxes: list[tuple[int, int, int, int]], width: int, height: int) -> int:
    cx, cy = width / 2.0, height / 2.0
    dists = [((b[0] + b[2]) / 2 - cx) ** 2 + ((b[1] + b[3]) / 2 - cy) ** 2 for b in boxes]
    return int(np.argmin(dists))


# Detector work is bounded by the pixels it sees after its own upsampling: HOG at 8 Mpx
# takes about 0.7 s and 150 MB; dlib's CNN about 2.6 s and 300 MB per 250 kpx (2 cores).
# LFW's 250x250 photos stay under both at upsample 0 and 1, so they are searched at full
# resolution exactly as before; only bigger images are searched on a downscaled copy.
DEFAULT_MAX_DETECT_PIXELS = 8_000_000
DEFAULT_MAX_CNN_PIXELS = 250_000
# dlib's CNN fails ("Filter windows must be small enough...") on very small inputs.
_MIN_DETECT_SIDE = 16


class FaceSearchTooCostly(RuntimeError):
    """The face search ran out of its time budget before trying every detector pass."""


def detection_scale(width: int, height: int, upsample: int, max_pixels: int) -> float:
    """The factor (at most 1) to shrink an image by so that the detector, after upsampling
    ``upsample`` times (each doubles both sides), works on at most ``max_pixels`` pixels."""
    work = width * height * 4**upsample
    return 1.0 if work <= max_pixels else (max_pixels / work) ** 0.5


def _resized(rgb: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return rgb
    from PIL import Image

    h, w = rgb.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))


def _passes(
    rgb: np.ndarray, steps: tuple[int, ...], max_pixels: int
) -> list[tuple[int, float]]:
    """(upsample, scale) of each pass, skipping a pass that would see the image at no finer
    resolution than an earlier one (on a big image, upsample 1 on a half-size copy)."""
    h, w = rgb.shape[:2]
    out: list[tuple[int, float]] = []
    finest = 0.0
    for up in steps:
        scale = detection_scale(w, h, up, max_pixels)
        effective = scale * 2**up
        if effective <= finest * (1 + 1e-6) or min(w, h) * scale < _MIN_DETECT_SIDE:
            continue
        finest = effective
        out.append((up, scale))
    return out


def _back(box: tuple[int, int, int, int], scale: float, width: int, height: int):
    """A box found on a copy shrunk by ``scale``, in the full image's pixels."""
    if scale >= 1.0:
        return box
    left, top, right, bottom = (round(v / scale) for v in box)
    return (max(0, left), max(0, top), min(width - 1, right), min(height - 1, bottom))


def detect_faces(
    rgb: np.ndarray,
    upsample_steps: tuple[int, ...] = (0, 1),
    cnn_fallback: bool = True,
    *,
    max_pixels: int = DEFAULT_MAX_DETECT_PIXELS,
    cnn_max_pixels: int = DEFAULT_MAX_CNN_PIXELS,
    time_budget_s: float | None = None,
) -> list[tuple[tuple[int, int, int, int], float]]:
    """All face boxes (in full-resolution pixels) with detector scores.

    The HOG detector tries each upsampling count until one finds a face. When none does,
    dlib's CNN (MMOD) detector gets one try: about 50x slower, so only as a fallback; on
    LFW it finds the 23 faces (of 7,701) that HOG misses at 0 and 1 upsampling. Each pass
    sees at most ``max_pixels`` (HOG) or ``cnn_max_pixels`` (CNN) pixels after upsampling:
    a bigger image is searched on a downscaled copy. With ``time_budget_s``, a pass (after
    the first) that would start once the budget is spent raises :class:`FaceSearchTooCostly`.
    """
    detector, _ = _Models.get()
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    started = time.monotonic()
    ran = False

    def check_time() -> None:
        # The first pass always runs: a face found at once never costs a refusal.
        if ran and time_budget_s is not None and time.monotonic() - started > time_budget_s:
            raise FaceSearchTooCostly(
                f"The face search took over {time_budget_s:g} s without finding a face."
            )

    for up, scale in _passes(rgb, upsample_steps, max_pixels):
        check_time()
        rects, scores, _ = detector.run(_resized(rgb, scale), up, 0.0)
        ran = True
        if len(rects):
            return [
                (_back((r.left(), r.top(), r.right(), r.bottom()), scale, w, h), float(s))
                for r, s in zip(rects, scores, strict=True)
            ]
    if cnn_fallback:
        cnn = _Models.cnn()
        for up, scale in _passes(rgb, (0, 1), cnn_max_pixels):
            check_time()
            dets = cnn(_resized(rgb, scale), up)
            ran = True
            if len(dets):
                return [
                    (_back((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()),
                           scale, w, h),
                     float(d.confidence))
                    for d in dets
                ]
    return []


def align(
    rgb: np.ndarray,
    box: tuple[int, int, int, int],
    size: int = CHIP_SIZE,
    padding: float = CHIP_PADDING,
) -> tuple[list[tuple[int, int]], np.ndarray]:
    """5-point landmarks and the aligned chip as dlib's ``get_face_chip`` makes it."""
    import dlib

    _, predictor = _Models.get()
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    shape = predictor(rgb, dlib.rectangle(*box))
    landmarks = [(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)]
    chip = np.asarray(dlib.get_face_chip(rgb, shape, size=size, padding=padding), dtype=np.uint8)
    return landmarks, chip


def detect_and_align(
    rgb: np.ndarray,
    upsample_steps: tuple[int, ...] = (0, 1),
    size: int = CHIP_SIZE,
    padding: float = CHIP_PADDING,
    cnn_fallback: bool = True,
    *,
    max_pixels: int = DEFAULT_MAX_DETECT_PIXELS,
    cnn_max_pixels: int = DEFAULT_MAX_CNN_PIXELS,
    time_budget_s: float | None = None,
) -> DetectedFace | None:
    """The most central face of an RGB uint8 image, aligned; None when there is no face.

    Detection may run on a downscaled copy (see :func:`detect_faces`); landmarks and the
    chip always come from the full-resolution pixels inside the mapped box.
    """
    found = detect_faces(
        rgb, upsample_steps, cnn_fallback=cnn_fallback, max_pixels=max_pixels,
        cnn_max_pixels=cnn_max_pixels, time_budget_s=time_budget_s,
    )
    if not found:
        return None
    boxes = [b for b, _ in found]
    i = _central_index(boxes, rgb.shape[1], rgb.shape[0])
    landmarks, chip = align(rgb, boxes[i], size=size, padding=padding)
    return DetectedFace(
        box=boxes[i], landmarks=landmarks, chip=chip, n_faces=len(found), score=found[i][1]
    )


def stored_shape(
    box: tuple[int, int, int, int] | list[int],
    landmarks: list[tuple[int, int]] | list[list[int]],
):
    """A dlib ``full_object_detection`` rebuilt from a stored box and landmarks."""
    import dlib

    return dlib.full_object_detection(
        dlib.rectangle(*[int(v) for v in box]), [dlib.point(int(x), int(y)) for x, y in landmarks]
    )


def context_crop(
    rgb: np.ndarray,
    box: tuple[int, int, int, int] | list[int],
    landmarks: list[tuple[int, int]] | list[list[int]],
    size: int = CONTEXT_SIZE,
    padding: float = CONTEXT_PADDING,
) -> np.ndarray:
    """The aligned context crop from stored detection results (no detector run); its
    central window is the recognition chip (:func:`.chips.central_chip`)."""
    import dlib

    shape = stored_shape(box, landmarks)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return np.asarray(dlib.get_face_chip(rgb, shape, size=size, padding=padding), dtype=np.uint8)


@lru_cache(maxsize=1)
def dlib_version() -> str:
    import dlib

    return str(dlib.__version__)
