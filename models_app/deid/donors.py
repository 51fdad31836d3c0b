"""Donor photos for the ``disguise`` parameterisation: which donors make a natural photo
with a source.

A donor lends its head and surroundings to a source's inner face (the presidential illusion,
Sinha & Poggio 1996). The composite looks like a photograph only when the two photos agree
on what the eye checks first: the pose (head turn and tilt), the face's size in the photo
(resolution), the lighting (level and direction) and the skin tone. :func:`donor_features`
measures those, :func:`select_donors` ranks a pool by a plain weighted distance. Pure
numpy (and dlib for landmarks): no Django import; the job layer supplies the pool.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models_app.vision.landmarks68 import landmarks68

from .metrics import srgb_to_lab

# --- Donor choice -------------------------------------------------------------------------

# Feature names and the spread that counts as "one unit" of difference in the distance.
FEATURES: tuple[str, ...] = ("yaw", "roll", "size", "light", "light_lr", "skin_l", "skin_a",
                             "skin_b")
SCALES = np.array([0.08, 4.0, 0.35, 8.0, 6.0, 8.0, 3.0, 4.0])


def donor_features(
    context: np.ndarray, landmarks5: Sequence[Sequence[float]] | None = None
) -> np.ndarray:
    """The figures :func:`select_donors` compares (order of :data:`FEATURES`):

    * yaw: the nose tip's offset from the eyes' midpoint, in eye distances (head turn);
    * roll: the eye line's angle in the photo, degrees (head tilt);
    * size: log of the eye distance in photo pixels (resolution of the face);
    * light, light_lr: mean L* of the face oval, and its right-minus-left difference
      (the level and the direction of the light);
    * skin_l, skin_a, skin_b: mean CIELAB of the cheeks and forehead (skin tone).

    ``landmarks5`` are the stored dlib 5-point landmarks in the photo (eye corners 0-3,
    nose 4); without them, roll and size are 0."""
    lab = srgb_to_lab(context)
    h, w = context.shape[:2]
    k = w / 300.0
    ys, xs = np.mgrid[0:h, 0:w] / k
    face = (((xs - 150) / 48) ** 2 + ((ys - 158) / 62) ** 2) <= 1.0
    left = face & (xs < 150)
    right = face & (xs >= 150)
    # Skin: the oval without eyes, brows and mouth (cheeks, forehead, nose bridge).
    skin = face & ~((np.abs(ys - 125) < 14) & (np.abs(xs - 150) > 8)) & ~(
        (np.abs(ys - 182) < 10) & (np.abs(xs - 150) < 26))
    pts = landmarks68(context)
    eyes_l, eyes_r = pts[36:42].mean(0), pts[42:48].mean(0)
    mid = (eyes_l + eyes_r) / 2
    iod = float(np.linalg.norm(eyes_r - eyes_l)) or 1.0
    yaw = float((pts[30, 0] - mid[0]) / iod)
    roll, size = 0.0, 0.0
    if landmarks5 is not None and len(landmarks5) == 5:
        p = np.asarray(landmarks5, np.float64)
        # dlib 5-point: 0,1 the right eye's corners, 2,3 the left eye's, 4 below the nose.
        e1, e2 = p[0:2].mean(0), p[2:4].mean(0)
        d = e1 - e2
        roll = float(np.degrees(np.arctan2(d[1], d[0])))
        size = float(np.log(max(np.linalg.norm(d), 1.0)))
    light = float(lab[face, 0].mean())
    light_lr = float(lab[right, 0].mean() - lab[left, 0].mean())
    sl, sa, sb = lab[skin].mean(0)
    return np.array([yaw, roll, size, light, light_lr, sl, sa, sb], dtype=np.float64)


def donor_distance(source: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """(M,) weighted Euclidean distance of one source's features to each donor's."""
    pool = np.atleast_2d(np.asarray(pool, np.float64))
    return np.sqrt((((pool - np.asarray(source, np.float64)) / SCALES) ** 2).sum(axis=1))


def select_donors(source: np.ndarray, pool: np.ndarray, k: int = 1) -> list[int]:
    """Indices of the ``k`` donors of ``pool`` (M, F) nearest to ``source`` (F,), best first."""
    if len(pool) == 0 or k <= 0:
        return []
    d = donor_distance(source, pool)
    return [int(i) for i in np.argsort(d, kind="stable")[:k]]
