"""Face detection and alignment with dlib (HOG detector, 5-point landmarks, face chips).

Pure module: numpy arrays in, numbers and arrays out; no Django import. The weights come
from the installed ``face_recognition_models`` package (CC0), never from the network.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

CHIP_SIZE = 150
CHIP_PADDING = 0.25


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


def _central_index(boxes: list[tuple[int, int, int, int]], width: int, height: int) -> int:
    cx, cy = width / 2.0, height / 2.0
    dists = [((b[0] + b[2]) / 2 - cx) ** 2 + ((b[1] + b[3]) / 2 - cy) ** 2 for b in boxes]
    return int(np.argmin(dists))


def detect_faces(
    rgb: np.ndarray, upsample_steps: tuple[int, ...] = (0, 1)
) -> list[tuple[tuple[int, int, int, int], float]]:
    """All face boxes with detector scores; tries each upsampling count until one finds a face."""
    detector, _ = _Models.get()
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    for up in upsample_steps:
        rects, scores, _ = detector.run(rgb, up, 0.0)
        if len(rects):
            return [
                ((r.left(), r.top(), r.right(), r.bottom()), float(s))
                for r, s in zip(rects, scores, strict=True)
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
) -> DetectedFace | None:
    """The most central face of an RGB uint8 image, aligned; None when there is no face."""
    found = detect_faces(rgb, upsample_steps)
    if not found:
        return None
    boxes = [b for b, _ in found]
    i = _central_index(boxes, rgb.shape[1], rgb.shape[0])
    landmarks, chip = align(rgb, boxes[i], size=size, padding=padding)
    return DetectedFace(
        box=boxes[i], landmarks=landmarks, chip=chip, n_faces=len(found), score=found[i][1]
    )


@lru_cache(maxsize=1)
def dlib_version() -> str:
    import dlib

    return str(dlib.__version__)
