"""The job's parameters: :class:`DeidConfig` and its validation (errors: ``.errors``).

Score-B: τB = 0.5 with the default ``min_similarity`` aggregation means every CFRU of the
ensemble matches at its LFW-calibrated threshold (calibrated similarity is
``sigmoid(scale·(thr − d))``, ≥ 0.5 exactly when d ≤ thr); with ``fraction_matching`` use
τB = 1.0 for the same meaning. ``mean_similarity``/``product_similarity`` are allowed but
τB then is not "every CFRU matches" — see :meth:`DeidConfig.validate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from models_app.vision import cfru as cfru_mod

from .composite import BLENDS
from .disguise import DisguiseRanges  # also registers the "disguise" parameterisation
from .eot import EOTConfig
from .errors import DeidConfigError
from .loss import LossWeights
from .params import PARAMETERISATIONS, StyleRanges

MODES = ("restart", "evolve")
# Score-A thresholds at which the loop hands out the iterate (a job's ladder of strengths,
# so that people judge pairs on both sides of the same/different boundary).
DEFAULT_LADDER = (0.8, 0.6, 0.4)
MAX_LADDER_RUNGS = 10

# In the loop, score-B comes from the torch port of dlib's network: the same weights as the
# reference runtime (within ~1e-6), and its Θ0 is already computed by the loss pass, so
# score-B costs nothing extra (the final score-B is the dlib runtime's: ``confirm``).
DEFAULT_ENSEMBLE: dict[str, Any] = {"cfrus": [cfru_mod.TORCH_PORT], "aggregation": "min_similarity"}
# The aggregation -> the τB for which "score-B ≥ τB" means every CFRU matches.
ALL_MATCH_TAU_B = {"min_similarity": 0.5, "fraction_matching": 1.0}


@dataclass(frozen=True)
class DeidConfig:
    """Every job parameter, with defaults. ``validate`` raises :class:`DeidConfigError` naming
    the field; ``to_dict``/``from_dict`` round-trip through JSON."""

    parameterisation: str = "style"
    mode: str = "restart"
    tau_a: float = 0.3
    tau_b: float = 0.5
    lr: float | None = None  # None: the parameterisation's default (style 0.08, pixels 0.05)
    steps_per_iteration: int = 1
    max_iterations: int = 90
    convergence_window: int = 20
    convergence_eps: float = 0.005
    ensemble: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_ENSEMBLE))
    loss: LossWeights = field(default_factory=LossWeights)
    eot: EOTConfig = field(default_factory=EOTConfig)
    pixels_eps: float = 12.0  # bound of the pixels residual, grey levels
    style_ranges: Mapping[str, Any] = field(default_factory=dict)  # StyleRanges overrides
    disguise_ranges: Mapping[str, Any] = field(default_factory=dict)  # DisguiseRanges overrides
    # How the output crop goes into the photo: "head" confines every change to a soft,
    # head-shaped oval (no rectangle can show); "rectangle" fades the whole crop at its border.
    blend: str = "head"
    seed: int = 0
    # Std of the noise added to the parameters at the first step, around the identity (θ
    # units: each transform is bound·tanh(θ)), drawn from ``seed``. A proxy that compares
    # the two images peaks at the identity, where its gradient vanishes: from exactly there
    # the loop would never move. Iteration 0 is still the source itself.
    start_noise: float = 0.05
    # Confirm a candidate success the way the result will be judged: composite into the
    # photo, detect and align afresh, score-B by the dlib runtime and score-A by the proxy
    # on the fresh crop; both must pass (only for sources that come with their photo).
    confirm_saved: bool = True
    # The first iterate (k >= 1) whose score-A falls below each threshold is handed out
    # (``on_rung``); () turns the ladder off. Never changes the trajectory.
    ladder: tuple[float, ...] = DEFAULT_LADDER

    def validate(self) -> None:
        def need(ok: bool, name: str, msg: str) -> None:
            if not ok:
                raise DeidConfigError(name, msg)

        need(
            self.parameterisation in PARAMETERISATIONS,
            "parameterisation",
            f"unknown {self.parameterisation!r}; one of {sorted(PARAMETERISATIONS)}",
        )
        need(self.mode in MODES, "mode", f"unknown {self.mode!r}; one of {list(MODES)}")
        for name in ("tau_a", "tau_b"):
            v = getattr(self, name)
            need(
                isinstance(v, int | float) and 0.0 <= v <= 1.0,
                name,
                f"must be in [0, 1], got {v!r}",
            )
        need(
            self.lr is None or (isinstance(self.lr, int | float) and 0 < self.lr < 10),
            "lr",
            f"must be in (0, 10), got {self.lr!r}",
        )
        for name, lo, hi in (
            ("steps_per_iteration", 1, 100),
            ("max_iterations", 1, 10000),
            ("convergence_window", 2, 10000),
        ):
            v = getattr(self, name)
            need(isinstance(v, int) and lo <= v <= hi, name, f"must be an integer in [{lo}, {hi}]")
        need(
            isinstance(self.convergence_eps, int | float) and self.convergence_eps >= 0,
            "convergence_eps",
            "must be >= 0",
        )
        need(self.pixels_eps > 0, "pixels_eps", "must be > 0")
        need(
            isinstance(self.start_noise, int | float) and 0.0 <= self.start_noise <= 1.0,
            "start_noise",
            f"must be in [0, 1], got {self.start_noise!r}",
        )
        try:
            StyleRanges(**dict(self.style_ranges))
        except TypeError as exc:
            raise DeidConfigError("style_ranges", str(exc)) from None
        try:
            dr = dict(self.disguise_ranges)
            for key in ("feather_px", "transfer"):
                if isinstance(dr.get(key), list):
                    dr[key] = tuple(dr[key])
            DisguiseRanges(**dr).validate()
        except (TypeError, ValueError) as exc:
            raise DeidConfigError("disguise_ranges", str(exc)) from None
        need(self.blend in BLENDS, "blend", f"unknown {self.blend!r}; one of {list(BLENDS)}")
        # The head blend would put the source's surroundings back over the donor's.
        need(
            self.parameterisation != "disguise"
            or self.disguise_ranges.get("surroundings", "source") != "donor"
            or self.blend == "rectangle",
            "blend", "disguise with the donor's surroundings needs blend 'rectangle'",
        )
        try:
            ens = cfru_mod.build_ensemble(self.ensemble)
        except ValueError as exc:
            raise DeidConfigError("ensemble", str(exc)) from None
        want = ALL_MATCH_TAU_B.get(ens.aggregation)
        need(
            want is None or self.tau_b >= want,
            "tau_b",
            f"with {ens.aggregation!r}, tau_b must be >= {want} so that score-B >= tau_b means "
            "every CFRU matches at its calibrated threshold",
        )
        lad = self.ladder
        need(
            isinstance(lad, list | tuple)
            and len(lad) <= MAX_LADDER_RUNGS
            and all(isinstance(t, int | float) and not isinstance(t, bool) and 0 < t < 1
                    for t in lad)
            and len(set(lad)) == len(lad),
            "ladder",
            f"must be a list of at most {MAX_LADDER_RUNGS} distinct score-A thresholds in "
            f"(0, 1), e.g. {list(DEFAULT_LADDER)}; [] turns it off",
        )
        self.loss.validate()
        e = self.eot
        need(e.samples >= 1 and e.confirm_samples >= 0, "eot", "samples must be >= 1")
        need(
            0 <= e.jpeg_prob <= 1 and 1 <= e.jpeg_quality[0] <= e.jpeg_quality[1] <= 100,
            "eot",
            "jpeg_prob in [0,1], 1 <= jpeg_quality[0] <= jpeg_quality[1] <= 100",
        )

    def disguise(self) -> DisguiseRanges:
        """The disguise ranges with this job's overrides (validated by :meth:`validate`)."""
        dr = dict(self.disguise_ranges)
        for key in ("feather_px", "transfer"):
            if isinstance(dr.get(key), list):
                dr[key] = tuple(dr[key])
        return DisguiseRanges(**dr)

    def learning_rate(self) -> float:
        return (
            self.lr if self.lr is not None else PARAMETERISATIONS[self.parameterisation].default_lr
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ensemble"] = dict(self.ensemble)
        d["style_ranges"] = dict(self.style_ranges)
        d["disguise_ranges"] = dict(self.disguise_ranges)
        d["loss"] = self.loss.to_dict()
        d["eot"] = self.eot.to_dict()
        d["ladder"] = list(self.ladder)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> DeidConfig:
        """Build from a JSON-like dict (unknown keys are a DeidConfigError naming them)."""
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise DeidConfigError(unknown[0], f"unknown job parameter; known: {sorted(known)}")
        try:
            if "loss" in d and not isinstance(d["loss"], LossWeights):
                d["loss"] = LossWeights(**d["loss"])
            if "eot" in d and not isinstance(d["eot"], EOTConfig):
                d["eot"] = EOTConfig.from_dict(d["eot"])
        except TypeError as exc:
            raise DeidConfigError("loss" if "Loss" in str(exc) else "eot", str(exc)) from None
        if isinstance(d.get("ladder"), list):
            d["ladder"] = tuple(d["ladder"])
        return cls(**d)
