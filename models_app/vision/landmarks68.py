"""68-point landmarks of the face in an aligned context crop, and point-set fits.

The ``disguise`` parameterisation (``models_app.deid.disguise``) aligns a source's inner
face to a donor's by these points and places its masks (brows, eyes, beard area) on them.
Pure module: numpy and dlib, no Django import. The 68-point shape predictor comes from the
installed ``face_recognition_models`` package (CC0), as the 5-point one does.
"""

from __future__ import annotations

import threading

import numpy as np

# Where the aligned 300 context crop (faces.context_crop) puts dlib's detector box; used when
# the detector finds no face in the crop itself.
CANONICAL_BOX = (93, 93, 217, 217)
# 68-point index groups (iBUG 300-W).
JAW = slice(0, 17)
BROWS = slice(17, 27)
NOSE = slice(27, 36)
EYES = slice(36, 48)
MOUTH = slice(48, 68)
INNER = slice(17, 68)  # brows, nose, eyes, mouth: the inner face

_local = threading.local()


def _models():
    m = getattr(_local, "models", None)
    if m is None:
        import dlib
        import face_recognition_models as frm

        m = (dlib.get_frontal_face_detector(),
             dlib.shape_predictor(frm.pose_predictor_model_location()))
        _local.models = m
    return m


def landmarks68(context: np.ndarray) -> np.ndarray:
    """(68, 2) float landmarks (x, y) of the face in an aligned context crop (HxWx3 uint8).

    The detector runs on the crop (the face is where the alignment put it); when it finds
    nothing, the predictor starts from the box where aligned faces sit."""
    import dlib

    det, pred = _models()
    img = np.ascontiguousarray(context, dtype=np.uint8)
    h, w = img.shape[:2]
    boxes = list(det(img, 0))
    if boxes:
        cx, cy = w / 2, h / 2
        box = min(boxes, key=lambda r: (r.center().x - cx) ** 2 + (r.center().y - cy) ** 2)
    else:
        k = h / 300.0
        box = dlib.rectangle(*[int(round(v * k)) for v in CANONICAL_BOX])
    shape = pred(img, box)
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float64)


def fit_transform(src: np.ndarray, dst: np.ndarray, affine: bool) -> np.ndarray:
    """(2, 3) least-squares map of points ``src`` onto ``dst`` ((K, 2) each): a similarity
    (rotation, uniform scale, shift) or, with ``affine``, a full affine map."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if affine:
        a = np.hstack([src, np.ones((len(src), 1))])
        m, *_ = np.linalg.lstsq(a, dst, rcond=None)
        return m.T
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    # Umeyama without reflection: x' = [[a, -b], [b, a]] x + t.
    den = (s**2).sum()
    a = (s * d).sum() / den
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / den
    r = np.array([[a, -b], [b, a]])
    return np.hstack([r, (md - r @ ms)[:, None]])
