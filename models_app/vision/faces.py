"""Face detection and alignment with dlib (HOG detector, 5-point landmarks, face chips).

Pure module: numpy arrays in, numbers and arrays out; no Django import. The weights come
from the installed ``face_recognition_models`` package (CC0), never from the network.
"""

from __future__ import annotations

import threading
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


def detect_faces(
    rgb: np.ndarray, upsample_steps: tuple[int, ...] = (0, 1), cnn_fallback: bool = True
) -> list[tuple[tuple[int, int, int, int], float]]:
    """All face boxes with detector scores.

    The HOG detector tries each upsampling count until one finds a face. When none does,
    dlib's CNN (MMOD) detector gets one try: about 50x slower, so only as a fallback; on
    LFW it finds the 23 faces (of 7,701) that HOG misses at 0 and 1 upsampling.
    """
    detector, _ = _Models.get()
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    for up in upsample_steps:
        rects, scores, _ = detector.run(rgb, up, 0.0)
        if len(rects):
            return [
                ((r.left(), r.top(), r.right(), r.bottom()), float(s))
                for r, s in zip(rects, scores, strict=True)
            ]
    if cnn_fallback:
        cnn = _Models.cnn()
        for up in (0, 1):
            dets = cnn(rgb, up)
            if len(dets):
                return [
                    ((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()),
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
) -> DetectedFace | None:
    """The most central face of an RGB uint8 image, aligned; None when there is no face."""
    found = detect_faces(rgb, upsample_steps, cnn_fallback=cnn_fallback)
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
