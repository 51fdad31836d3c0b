"""Score-A and score-B of an output as it will be judged: saved, detected and aligned afresh.

:func:`score_as_saved` is the loop's check of a candidate success (the output composited into
the photo); :func:`score_saved_output` is the honest final score-B of the saved file.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models_app.vision import cfru as cfru_mod
from models_app.vision import faces

from .composite import composite
from .eot import to_uint8
from .score_a import ScoreAProxy
from .state import DeidSource

# The final score-B is always the dlib runtime's on the saved file.
FINAL_ENSEMBLE: dict[str, Any] = {"cfrus": [cfru_mod.DLIB_RUNTIME], "aggregation": "min_similarity"}


@torch.no_grad()
def score_as_saved(
    out: torch.Tensor,
    source: DeidSource,
    src_ctx: torch.Tensor,
    proxy: ScoreAProxy,
    final_ens: cfru_mod.CFRUEnsemble,
    blend: str = "rectangle",
) -> tuple[float, float]:
    """(score-A, score-B) of one output as it will be judged: composited into the photo,
    detected and aligned afresh; score-B by the final ensemble (the dlib runtime), score-A by
    the proxy on the fresh context crop. No face found: (1.0, 0.0)."""
    assert source.photo is not None and source.box is not None and source.landmarks is not None
    ctx = to_uint8(out[None])[0]
    photo = composite(source.photo, ctx, source.box, source.landmarks, context_src=source.context,
                      blend=blend)
    face = faces.detect_and_align(photo)
    if face is None:
        return 1.0, 0.0
    b = final_ens.score_b(source.chip, face.chip).score
    fresh = faces.context_crop(photo, face.box, face.landmarks)
    t = torch.from_numpy(fresh).to(src_ctx.device).permute(2, 0, 1)[None].float()
    return float(proxy(src_ctx, t)[0]), float(b)


@dataclass
class FinalScore:
    """Score-B of a saved output after fresh detection and alignment."""

    detected: bool
    score_b: float  # 0.0 when no face is found in the saved output
    matches: bool
    score: cfru_mod.ScoreB | None
    chip: np.ndarray | None


def score_saved_output(
    source_chip: np.ndarray,
    saved: bytes | str | np.ndarray,
    ensemble: cfru_mod.CFRUEnsemble | Mapping[str, Any] | None = None,
    tau_b: float = 0.5,
) -> FinalScore:
    """Decode the saved file (bytes, a path, or decoded RGB), detect and align the face afresh,
    and score it against the source chip with the ensemble (default: the dlib runtime)."""
    if isinstance(saved, np.ndarray):
        rgb = saved
    else:
        from PIL import Image

        f = io.BytesIO(saved) if isinstance(saved, bytes) else saved
        with Image.open(f) as im:
            rgb = np.asarray(im.convert("RGB"))
    ens = (
        ensemble
        if isinstance(ensemble, cfru_mod.CFRUEnsemble)
        else cfru_mod.build_ensemble(ensemble or FINAL_ENSEMBLE)
    )
    face = faces.detect_and_align(rgb)
    if face is None:
        return FinalScore(False, 0.0, False, None, None)
    s = ens.score_b(np.ascontiguousarray(source_chip), face.chip)
    return FinalScore(True, s.score, s.score >= tau_b, s, face.chip)
