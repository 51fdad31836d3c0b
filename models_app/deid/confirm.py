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
from models_app.vision.memo import ImageLru, image_key

from .eot import EOTConfig, eot_contexts, to_uint8
from .score_a import ScoreAProxy
from .state import DeidSource

# The final score-B is always the dlib runtime's on the saved file.
FINAL_ENSEMBLE: dict[str, Any] = {"cfrus": [cfru_mod.DLIB_RUNTIME], "aggregation": "min_similarity"}

# The confirmation is most of what a judged face costs (a fresh detection, the dlib
# runtime's embeddings), and its images come back: the source chip at every candidate check
# of its face, the confirmed photo again as the saved PNG (lossless: the same bytes).
# Photos ~190 KB and chips 67 KB each: a few MB at most.
_FRESH_FACES = ImageLru(16)
_EMBEDDINGS = ImageLru(256)


def clear_memo() -> None:
    """Forget every memoised detection and embedding (benchmarks start each method cold)."""
    _FRESH_FACES.clear()
    _EMBEDDINGS.clear()


def fresh_face(photo: np.ndarray) -> faces.DetectedFace | None:
    """:func:`faces.detect_and_align` of a photo with the default settings, memoised."""
    return _FRESH_FACES.get(image_key(photo), lambda: faces.detect_and_align(photo))


def final_score_b(
    ens: cfru_mod.CFRUEnsemble, source_chip: np.ndarray, output_chip: np.ndarray
) -> cfru_mod.ScoreB:
    """``ens.score_b`` with each chip's embeddings memoised (per CFRU of the ensemble)."""

    def embed(chip: np.ndarray) -> dict[str, np.ndarray]:
        return _EMBEDDINGS.get(image_key(chip, ens.names), lambda: ens.embed(chip))

    return ens.score_embeddings(embed(source_chip), embed(output_chip))[0]


@torch.no_grad()
def score_a_views(
    proxy: ScoreAProxy,
    src_ctx: torch.Tensor,
    ctx: torch.Tensor,
    eot: EOTConfig | None = None,
    gen: torch.Generator | None = None,
    samples: int = 0,
) -> float:
    """Score-A of one context crop (1,3,300,300) float as its expectation over alignments:
    the mean P(same) of the crop itself and ``samples`` EOT views of it (the jitter a fresh
    alignment brings). Why: a proxy's P(same) of a changed face can swing by 0.5 across such
    views (a few pixels, 2°, 3 %), so one view below τA is a lucky draw, not a property of
    the image.
    ``samples`` 0: the crop alone."""
    views = [ctx]
    if samples > 0 and eot is not None:
        views += list(eot_contexts(ctx, eot, gen, samples=samples)[0].split(1))
    return mean_p_same(proxy, src_ctx, views)


@torch.no_grad()
def mean_p_same(proxy: ScoreAProxy, src_ctx: torch.Tensor, views: list[torch.Tensor]) -> float:
    """The proxy's mean P(same) of the source (1,3,300,300) against each view."""
    # One call per view with the same source tensor: the proxy encodes the source once.
    return float(np.mean([float(proxy(src_ctx, v)[0]) for v in views]))


@torch.no_grad()
def score_as_saved(
    out: torch.Tensor,
    source: DeidSource,
    src_ctx: torch.Tensor,
    proxy: ScoreAProxy,
    final_ens: cfru_mod.CFRUEnsemble,
    blend: str = "rectangle",
    *,
    eot: EOTConfig | None = None,
    gen: torch.Generator | None = None,
    samples: int = 0,
) -> tuple[float, float]:
    """(score-A, score-B) of one output as it will be judged: composited into the photo,
    detected and aligned afresh; score-B by the final ensemble (the dlib runtime), score-A by
    the proxy on the fresh context crop (with ``samples``: its mean over that crop and as many
    EOT views of it, :func:`score_a_views`). No face found: (1.0, 0.0)."""
    assert source.photo is not None and source.box is not None and source.landmarks is not None
    ctx = to_uint8(out[None])[0]
    photo = source.composite_output(ctx, blend)
    face = fresh_face(photo)
    if face is None:
        return 1.0, 0.0
    b = final_score_b(final_ens, source.chip, face.chip).score
    fresh = faces.context_crop(photo, face.box, face.landmarks)
    t = torch.from_numpy(fresh).to(src_ctx.device).permute(2, 0, 1)[None].float()
    return score_a_views(proxy, src_ctx, t, eot, gen, samples), float(b)


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
    face = fresh_face(rgb)
    if face is None:
        return FinalScore(False, 0.0, False, None, None)
    s = final_score_b(ens, np.ascontiguousarray(source_chip), face.chip)
    return FinalScore(True, s.score, s.score >= tau_b, s, face.chip)
