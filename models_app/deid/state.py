"""What the loop takes and gives: the face to de-identify (:class:`DeidSource`), one record
per scored image (:class:`IterationRecord`), the result per face (:class:`DeidResult`) and
the state to resume a batch from (:class:`DeidState`)."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from models_app.vision import faces
from models_app.vision.chips import central_chip

from .composite import aligned_backdrop, change_mask, composite

STATE_VERSION = 1


@dataclass
class DeidSource:
    """A face to de-identify: its 300x300 context crop and, for compositing, the photo."""

    context: np.ndarray  # (300,300,3) uint8, faces.context_crop
    photo: np.ndarray | None = None  # (H,W,3) uint8 RGB
    box: tuple[int, int, int, int] | None = None
    landmarks: list[tuple[int, int]] | None = None
    # ``disguise`` only: the donor's aligned context crop (300,300,3 uint8), whose head and
    # surroundings the source's inner face is set into (models_app.deid.donors chooses it).
    donor: np.ndarray | None = None
    # ``disguise`` with the donor's surroundings: the donor's photo in this photo's frame
    # (:meth:`take_donor_surroundings`); outputs are composited onto it, not onto ``photo``.
    backdrop: np.ndarray | None = None

    @property
    def chip(self) -> np.ndarray:
        return np.ascontiguousarray(central_chip(self.context))

    def change_mask(self, blend: str = "rectangle") -> np.ndarray | None:
        """Where a change of the context crop survives compositing into the photo with this
        blend shape (see :func:`~.composite.change_mask`); None without a photo (nothing is
        composited: every pixel of the crop counts). With a backdrop every pixel inside the
        photo survives: the crop's edge is the backdrop's own pixels (no feather needed)."""
        if self.photo is None or self.box is None or self.landmarks is None:
            return None
        if self.backdrop is not None:
            return change_mask(self.photo.shape, self.box, self.landmarks,
                               self.context.shape[0], feather=1e-6, blend="rectangle")
        return change_mask(self.photo.shape, self.box, self.landmarks, self.context.shape[0],
                           blend=blend)

    def take_donor_surroundings(
        self, donor_photo: np.ndarray, donor_box: tuple[int, int, int, int] | list[int],
        donor_landmarks: list[tuple[int, int]] | list[list[int]],
    ) -> None:
        """Set the donor's whole photo behind this face: the backdrop (the donor's photo
        aligned into this photo's frame) and, as the donor crop, the backdrop's context crop
        in this face's frame (so the crop and the photo around it agree pixel for pixel)."""
        if self.photo is None or self.box is None or self.landmarks is None:
            raise ValueError("the donor's surroundings need the source's photo")
        self.backdrop = aligned_backdrop(donor_photo, donor_box, donor_landmarks,
                                         self.photo.shape, self.box, self.landmarks)
        self.donor = faces.context_crop(self.backdrop, self.box, self.landmarks)

    @property
    def reference_photo(self) -> np.ndarray | None:
        """What an output is composited onto and its seam compared with: the backdrop when
        there is one, else the photo."""
        return self.backdrop if self.backdrop is not None else self.photo

    def composite_output(self, ctx: np.ndarray, blend: str) -> np.ndarray | None:
        """The output crop (300,300,3 uint8) in the full photo as it is saved; None without
        a photo. Only the change is warped back and added: against the source crop onto the
        photo, or (donor's surroundings) against the donor crop onto the backdrop."""
        if self.photo is None or self.box is None or self.landmarks is None:
            return None
        if self.backdrop is not None:
            return composite(self.backdrop, ctx, self.box, self.landmarks,
                             context_src=self.donor, blend="rectangle")
        return composite(self.photo, ctx, self.box, self.landmarks, context_src=self.context,
                         blend=blend)


def prepare_source(rgb: np.ndarray, upsample_steps: tuple[int, ...] = (0, 1)) -> DeidSource | None:
    """Detect and align the most central face of a photo; None when there is none."""
    face = faces.detect_and_align(rgb, upsample_steps=upsample_steps)
    if face is None:
        return None
    ctx = faces.context_crop(rgb, face.box, face.landmarks)
    return DeidSource(ctx, np.ascontiguousarray(rgb), face.box, list(face.landmarks))


@dataclass
class IterationRecord:
    """One scored image of one face (what a DeidIteration row stores).

    ``iteration`` 0 is the unmodified source; k is the image after k rounds. ``seconds`` is
    the wall time of the round that produced this record, for the whole batch.
    """

    face: int
    iteration: int
    score_a: float
    score_b: float  # ensemble score-B, mean over this record's EOT samples
    score_b_min: float  # worst EOT sample (and the confirmation, when it ran)
    per_cfru: list[dict[str, Any]]  # first sample: name, distance, similarity, matches
    loss: dict[str, float]
    objective: float  # g = max(A - τA, 0) + max(τB - B, 0); 0 is success
    success: bool
    confirmed: bool | None  # None: no confirmation ran on this record
    change: dict[str, float]
    seconds: float
    # Mean P(same) over the plain output and its confirmation views, when that ran.
    confirm_score_a: float | None = None
    # From the saved-file confirmation, when it ran (the mean over the fresh crop and as
    # many views of it, with ``eot.confirm_score_a``).
    saved_score_a: float | None = None
    saved_score_b: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Rung:
    """One rung of a job's ladder: the first iterate (k >= 1) whose score-A fell below
    ``threshold``. Several thresholds crossed by one iterate are several rungs, one image."""

    face: int
    threshold: float
    iteration: int
    score_a: float
    score_b: float  # the record's ensemble score-B (mean over its EOT samples)
    context: np.ndarray  # (300,300,3) uint8, the iterate's context crop
    photo: np.ndarray | None  # the iterate composited into the photo (if given)


@dataclass
class DeidResult:
    face: int
    stop_reason: str
    iterations: int  # rounds run before stopping
    best_iteration: int  # the record whose image is returned
    score_a: float
    score_b: float
    context: np.ndarray  # (300,300,3) uint8 output context crop
    photo: np.ndarray | None  # the full photo with the output composited back (if given)
    records: list[IterationRecord]
    seconds: float  # wall time of the run (shared by the batch)
    ladder: list[Rung] = field(default_factory=list)  # rungs crossed in this run (not before a resume)
    # False: no record kept the parameterisation's human-side margin (disguise: the donor
    # share), so the output is not the change people were meant to see (never a success).
    margin_kept: bool = True
    # False: no record kept a natural face colour (metrics.naturalness, widened to the
    # source's own value); such a record is never a success either.
    natural_kept: bool = True


@dataclass
class DeidState:
    """Everything needed to continue a batch after a worker dies.

    ``iteration`` rounds are complete; the next forward pass scores image ``iteration``.
    Serialise with :meth:`to_bytes` (``torch.save`` of tensors, lists and numbers only, so
    :meth:`from_bytes` loads with ``weights_only=True``: no unpickling of code).
    """

    iteration: int
    params: torch.Tensor  # (N, P) float32
    optimizer: dict[str, Any]  # torch.optim.Adam state_dict
    base: torch.Tensor | None  # evolve mode: (N,3,300,300) uint8 current input images
    history: list[list[float]]  # objective g per face, records 0..iteration-1
    best: list[dict[str, float]]  # per face: objective, iteration, score_a, score_b
    best_images: torch.Tensor  # (N,3,300,300) uint8
    done: list[str | None]  # stop reason per face, None while running
    rng: torch.Tensor  # EOT generator state
    config: dict[str, Any]
    # Per face, the ladder thresholds already crossed (so a resumed run does not hand out a
    # rung twice). Absent from older checkpoints: then nothing counts as crossed.
    crossed: list[list[float]] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"version": STATE_VERSION, **asdict(self)}, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> DeidState:
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if raw.pop("version", None) != STATE_VERSION:
            raise ValueError("not a de-identification state of this version")
        return cls(**raw)
