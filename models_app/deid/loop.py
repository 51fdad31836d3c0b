"""The de-identification loop (claims 1-4, 11-16; paragraphs 34-53).

One *iteration* (``k = 1 .. max_iterations``) is one round of modifications of the image
(``steps_per_iteration`` gradient steps on the parameters) followed by the scoring of the
resulting image: score-A by the human proxy against the source context crop, score-B by the
job's CFRU ensemble on EOT-transformed recognition chips. Record 0 scores the unmodified
source. To spend one network pass per iteration, the scoring of image k and the gradient of
round k+1 come from the same forward pass.

Stop rules, checked on every record (the reason is stored in the result):

* ``success`` — score-A ≤ τA and score-B ≥ τB (claim 1), the latter confirmed on
  ``eot.confirm_samples`` fresh transforms plus the plain chip (worst case must pass), then
  (``confirm_saved``, for sources with their photo) both on the output as it will be judged:
  composited into the photo, detected and aligned afresh, score-B by the dlib runtime and
  score-A by the proxy on the fresh context crop;
* ``converged`` — the objective g = max(A − τA, 0) + max(τB − B, 0) (0 means success; a
  function of the sequence of (score-A, score-B), claim 3) has not improved by more than ε
  over the last ``convergence_window`` records;
* ``max_iterations`` — after ``max_iterations`` rounds (claim 4; default 90);
* ``cancelled`` — ``should_stop()`` returned True.

Every change goes through the source's change mask (``DeidSource.change_mask``): context
pixels that lie outside the photo, and the feathered border, do not survive compositing, so
the loop neither changes nor scores them.

Modes (paragraph 46, claim 16): ``restart`` applies the current parameters to the original
image every iteration; ``evolve`` makes each iteration's output the next iteration's input
(parameters reset to the identity after each round, Adam moments kept).

The returned image is the best record (lowest g; the success record when there is one).
Score-B: τB = 0.5 with the default ``min_similarity`` aggregation means every CFRU of the
ensemble matches at its LFW-calibrated threshold (calibrated similarity is
``sigmoid(scale·(thr − d))``, ≥ 0.5 exactly when d ≤ thr); with ``fraction_matching`` use
τB = 1.0 for the same meaning. ``mean_similarity``/``product_similarity`` are allowed but
τB then is not "every CFRU matches" — see :meth:`DeidConfig.validate`.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from models_app.vision import cfru as cfru_mod
from models_app.vision import faces
from models_app.vision.dlib_resnet import get_dlib_resnet

from . import DeidConfigError
from .composite import change_mask, composite
from .eot import EOTConfig, eot_chips, eot_contexts, straight_round, to_uint8
from .loss import LossTerms, LossWeights, deid_loss
from .params import PARAMETERISATIONS, Parameterisation, StyleRanges, build_parameterisation

STOP_SUCCESS = "success"
STOP_CONVERGED = "converged"
STOP_MAX_ITERATIONS = "max_iterations"
STOP_CANCELLED = "cancelled"
STOP_REASONS = (STOP_SUCCESS, STOP_CONVERGED, STOP_MAX_ITERATIONS, STOP_CANCELLED)
MODES = ("restart", "evolve")
STATE_VERSION = 1

# In the loop, score-B comes from the torch port of dlib's network: the same weights as the
# reference runtime (within ~1e-6), and its Θ0 is already computed by the loss pass, so
# score-B costs nothing extra. The final score-B is always the dlib runtime on the saved file.
DEFAULT_ENSEMBLE: dict[str, Any] = {"cfrus": [cfru_mod.TORCH_PORT], "aggregation": "min_similarity"}
FINAL_ENSEMBLE: dict[str, Any] = {"cfrus": [cfru_mod.DLIB_RUNTIME], "aggregation": "min_similarity"}
# The aggregation -> the τB for which "score-B ≥ τB" means every CFRU matches.
ALL_MATCH_TAU_B = {"min_similarity": 0.5, "fraction_matching": 1.0}


class ScoreAProxy(Protocol):
    """The human proxy as the loop sees it: two context crops (N,3,300,300) float in [0,255]
    (source, output) -> P(a person says "same") (N,), differentiable w.r.t. the output.

    Optional: ``logit(src, out)`` (log-odds; used for the gradient, which P loses when it
    saturates) and ``logit_with_features(src, out, emb, taps)`` (reuses the loop's CFRU pass
    on the output's plain chip); :class:`~.proxy.HumanProxyScorer` has both."""

    def __call__(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor: ...


# --------------------------------------------------------------------------------------------
# Job configuration
# --------------------------------------------------------------------------------------------


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
    seed: int = 0
    # Confirm a candidate success the way the result will be judged: composite into the
    # photo, detect and align afresh, score-B by the dlib runtime and score-A by the proxy
    # on the fresh crop; both must pass (only for sources that come with their photo).
    confirm_saved: bool = True

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
        try:
            StyleRanges(**dict(self.style_ranges))
        except TypeError as exc:
            raise DeidConfigError("style_ranges", str(exc)) from None
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
        self.loss.validate()
        e = self.eot
        need(e.samples >= 1 and e.confirm_samples >= 0, "eot", "samples must be >= 1")
        need(
            0 <= e.jpeg_prob <= 1 and 1 <= e.jpeg_quality[0] <= e.jpeg_quality[1] <= 100,
            "eot",
            "jpeg_prob in [0,1], 1 <= jpeg_quality[0] <= jpeg_quality[1] <= 100",
        )

    def learning_rate(self) -> float:
        return (
            self.lr if self.lr is not None else PARAMETERISATIONS[self.parameterisation].default_lr
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ensemble"] = dict(self.ensemble)
        d["style_ranges"] = dict(self.style_ranges)
        d["loss"] = self.loss.to_dict()
        d["eot"] = self.eot.to_dict()
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
        return cls(**d)


# --------------------------------------------------------------------------------------------
# Inputs, records, results, resume state
# --------------------------------------------------------------------------------------------


@dataclass
class DeidSource:
    """A face to de-identify: its 300x300 context crop and, for compositing, the photo."""

    context: np.ndarray  # (300,300,3) uint8, faces.context_crop
    photo: np.ndarray | None = None  # (H,W,3) uint8 RGB
    box: tuple[int, int, int, int] | None = None
    landmarks: list[tuple[int, int]] | None = None

    @property
    def chip(self) -> np.ndarray:
        return np.ascontiguousarray(faces.chip_from_context(self.context))

    def change_mask(self) -> np.ndarray | None:
        """Where a change of the context crop survives compositing into the photo (see
        :func:`~.composite.change_mask`); None without a photo (every pixel counts)."""
        if self.photo is None or self.box is None or self.landmarks is None:
            return None
        return change_mask(self.photo.shape, self.box, self.landmarks, self.context.shape[0])


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
    saved_score_a: float | None = None  # from the saved-file confirmation, when it ran
    saved_score_b: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _to_tensor(images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    arr = np.stack([np.asarray(a, dtype=np.uint8) for a in images])
    # contiguous NCHW: grid_sample's CPU backward crashes on channels-last inputs (torch 2.14)
    return torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float().contiguous()


def _objective(a: float, b: float, cfg: DeidConfig) -> float:
    return max(a - cfg.tau_a, 0.0) + max(cfg.tau_b - b, 0.0)


def _converged(history: list[float], cfg: DeidConfig) -> bool:
    w = cfg.convergence_window
    if len(history) <= w:
        return False
    return min(history[-w:]) > min(history[:-w]) - cfg.convergence_eps


class _Scorer:
    """Score-B of EOT chips against the sources with the job's ensemble; the torch port's
    embeddings come from the loss pass for free, other CFRUs embed the uint8 chips."""

    def __init__(
        self, ensemble: cfru_mod.CFRUEnsemble, src_chips: np.ndarray, src_emb: torch.Tensor
    ) -> None:
        self.ensemble = ensemble
        # name -> (N, D); the torch port's source embedding is the loop's own Θ0(Xsrc).
        self.src = {
            c.name: (
                src_emb.detach().double().cpu().numpy()
                if c.name == cfru_mod.TORCH_PORT
                else c.embed(src_chips)
            )
            for c in ensemble.cfrus
        }

    def score(
        self, faces_idx: Sequence[int], samples: int, chips: torch.Tensor, emb: torch.Tensor
    ) -> list[list[cfru_mod.ScoreB]]:
        rows = np.repeat(np.asarray(faces_idx), samples)
        out: dict[str, np.ndarray] = {}
        u8 = None
        for c in self.ensemble.cfrus:
            if c.name == cfru_mod.TORCH_PORT:
                out[c.name] = emb.detach().double().cpu().numpy()
            else:
                u8 = to_uint8(chips) if u8 is None else u8
                out[c.name] = c.embed(u8)
        src = {k: v[rows] for k, v in self.src.items()}
        flat = self.ensemble.score_embeddings(src, out)
        return [flat[i * samples : (i + 1) * samples] for i in range(len(faces_idx))]


def _per_cfru(s: cfru_mod.ScoreB) -> list[dict[str, Any]]:
    return [
        {"name": r.name, "distance": r.distance, "similarity": r.similarity, "matches": r.matches}
        for r in s.per_cfru
    ]


def run_deid_batch(
    sources: Sequence[DeidSource],
    proxy: ScoreAProxy,
    config: DeidConfig | None = None,
    *,
    on_iteration: Callable[[IterationRecord, Callable[[], DeidState]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: DeidState | None = None,
    device: torch.device | str | None = None,
    network: torch.nn.Module | None = None,
) -> list[DeidResult]:
    """De-identify a batch of faces (independent jobs sharing network passes).

    ``on_iteration(record, checkpoint)`` is called for every record; ``checkpoint()`` returns
    the :class:`DeidState` as of that record (call it only when you mean to persist: it copies
    tensors). Resuming from a checkpoint re-runs nothing already recorded. ``should_stop`` is
    polled once per iteration (cancel). Faces that stop leave the batch; the rest go on.
    ``network`` replaces the differentiable CFRU (default: the dlib ResNet port; anything with
    its ``features(chips) -> (Θ0, taps)``), e.g. a small stand-in in tests.
    """
    cfg = config or DeidConfig()
    cfg.validate()
    if not sources:
        return []
    if device is None:
        from models_app.device import get_device

        device = get_device()
    device = torch.device(device)
    t_start = time.perf_counter()
    n = len(sources)
    size = sources[0].context.shape[0]
    kw: dict[str, Any] = (
        {"eps": cfg.pixels_eps}
        if cfg.parameterisation == "pixels"
        else {"ranges": StyleRanges(**dict(cfg.style_ranges))}
    )
    param: Parameterisation = build_parameterisation(cfg.parameterisation, size, **kw).to(device)
    net = network if network is not None else get_dlib_resnet(device)
    ensemble = cfru_mod.build_ensemble(cfg.ensemble)

    src_ctx = _to_tensor([s.context for s in sources], device)
    # Changes go through each face's change mask: context pixels outside the photo (black in
    # the crop) and the feathered border would be lost on saving, so they are not scored.
    masks = [s.change_mask() for s in sources]
    mask = torch.from_numpy(
        np.stack([np.ones((size, size), np.float32) if m is None else m for m in masks])
    ).to(device)[:, None]
    src_chips_u8 = np.stack([s.chip for s in sources])
    with torch.no_grad():
        src_emb, src_taps = net.features(identity_cut(src_ctx))
    scorer = _Scorer(ensemble, src_chips_u8, src_emb)
    final_ens = cfru_mod.build_ensemble(FINAL_ENSEMBLE) if cfg.confirm_saved else None

    gen = torch.Generator().manual_seed(cfg.seed)
    if resume is not None:
        _check_resume(resume, cfg, n)
        theta = resume.params.to(device).clone().requires_grad_(True)
        base = resume.base.to(device).float() if resume.base is not None else src_ctx
        gen.set_state(resume.rng)
        history = [list(h) for h in resume.history]
        best = [dict(b) for b in resume.best]
        best_images = resume.best_images.clone()
        done = list(resume.done)
        start = resume.iteration
    else:
        theta = param.init_params(n, device).requires_grad_(True)
        base = src_ctx
        history = [[] for _ in range(n)]
        best = [{"objective": math.inf, "iteration": -1, "score_a": 1.0, "score_b": 0.0}] * n
        best = [dict(b) for b in best]
        best_images = src_ctx.round().to(torch.uint8).cpu()
        done = [None] * n
        start = 0
    opt = torch.optim.Adam([theta], lr=cfg.learning_rate())
    if resume is not None:
        opt.load_state_dict(resume.optimizer)
    records: list[list[IterationRecord]] = [[] for _ in range(n)]
    samples = cfg.eot.samples
    last_seconds = [0.0]
    it = start

    prep = param.prepare(base)

    def apply(b: torch.Tensor, th: torch.Tensor, sel: list[int] | slice) -> torch.Tensor:
        """The rendered change, through each face's change mask."""
        rendered = param.render(b, th, None if prep is None else prep[sel])
        return torch.lerp(b, rendered, mask[sel])

    fused = hasattr(proxy, "logit_with_features")
    has_logit = hasattr(proxy, "logit")
    src_views: dict[tuple[int, ...], torch.Tensor] = {}

    def forward(
        idx: list[int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, LossTerms]:
        # Every face active (batch 1 always): the tensors themselves, no gathered copies.
        sel: list[int] | slice = slice(None) if len(idx) == n else idx
        th = theta[sel]
        # A stable tensor per active set, so a proxy can cache its source-side encoding.
        key = tuple(idx)
        src = src_views.get(key)
        if src is None:
            src = src_views[key] = src_ctx[sel]
        out = straight_round(apply(base[sel], th, sel))
        k = len(idx)
        if cfg.eot.proxy:
            views, chips = eot_contexts(out, cfg.eot, gen)
            view = views[:: cfg.eot.samples]  # the proxy sees each face's first EOT draw
        else:
            view, chips = out, eot_chips(out, cfg.eot, gen)
        # One CFRU pass on [plain chips; EOT chips]: taps (formula A) use the plain chip, Θ0
        # (formula A) and score-B the EOT chips, the proxy's identity branch the chip of
        # the view it scores (the first EOT chip with ``eot.proxy``, else the plain one).
        emb, taps = net.features(torch.cat([identity_cut(out), chips]))
        taps_plain = {name: v[:k] for name, v in taps.items()}
        if cfg.eot.proxy:
            rows = torch.arange(k, device=emb.device) * cfg.eot.samples + k
            v_emb, v_taps = emb[rows], {name: v[rows] for name, v in taps.items()}
        else:
            v_emb, v_taps = emb[:k], taps_plain
        if fused:
            logit = proxy.logit_with_features(src, view, v_emb, v_taps)  # type: ignore[attr-defined]
        elif has_logit:
            logit = proxy.logit(src, view)  # type: ignore[attr-defined]
        else:
            p = proxy(src, view).clamp(1e-6, 1 - 1e-6)
            logit = torch.log(p) - torch.log1p(-p)
        terms = deid_loss(
            src_emb[sel],
            {name: v[sel] for name, v in src_taps.items()},
            emb[k:],
            taps_plain,
            logit,
            param.prior(th),
            cfg.loss,
        )
        return out, chips, emb[k:], torch.sigmoid(logit.detach()), terms

    def checkpoint_fn(iteration: int) -> Callable[[], DeidState]:
        def make() -> DeidState:
            return DeidState(
                iteration=iteration,
                params=theta.detach().cpu().clone(),
                optimizer=_cpu_state(opt.state_dict()),
                base=base.round().to(torch.uint8).cpu() if cfg.mode == "evolve" else None,
                history=[list(h) for h in history],
                best=[dict(b) for b in best],
                best_images=best_images.clone(),
                done=list(done),
                rng=gen.get_state(),
                config=cfg.to_dict(),
            )

        return make

    while True:
        idx = [i for i in range(n) if done[i] is None]
        if not idx:
            break
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out, chips, emb, p_same, terms = forward(idx)
        scores = scorer.score(idx, samples, chips, emb)
        step_rows: list[int] = []
        pending: list[tuple[int, IterationRecord]] = []
        cancelled = bool(should_stop and should_stop())
        for j, i in enumerate(idx):
            a = float(p_same[j])
            bs = [s.score for s in scores[j]]
            b, b_min = float(np.mean(bs)), float(np.min(bs))
            success, confirmed = a <= cfg.tau_a and b_min >= cfg.tau_b, None
            if success and cfg.eot.confirm_samples > 0:
                b_conf = _confirm(out[j : j + 1], i, net, scorer, cfg, gen)
                b_min = min(b_min, b_conf)
                confirmed = success = b_conf >= cfg.tau_b
            saved: tuple[float, float] | None = None
            if success and final_ens is not None and sources[i].photo is not None:
                saved = _confirm_saved(out[j], sources[i], src_ctx[i : i + 1], proxy, final_ens)
                confirmed = success = saved[0] <= cfg.tau_a and saved[1] >= cfg.tau_b
            g = 0.0 if success else max(_objective(a, b_min, cfg), 1e-9)
            history[i].append(g)
            rec = IterationRecord(
                face=i,
                iteration=it,
                score_a=a,
                score_b=b,
                score_b_min=b_min,
                per_cfru=_per_cfru(scores[j][0]),
                loss=terms.row(j),
                objective=g,
                success=success,
                confirmed=confirmed,
                change=param.describe(theta[i : i + 1]),
                seconds=last_seconds[0],
                saved_score_a=None if saved is None else saved[0],
                saved_score_b=None if saved is None else saved[1],
            )
            if g < best[i]["objective"] or (success and best[i]["objective"] > 0):
                best[i] = {"objective": g, "iteration": it, "score_a": a, "score_b": b_min}
                best_images[i] = out[j].detach().round().to(torch.uint8).cpu()
            if success:
                done[i] = STOP_SUCCESS
            elif it >= cfg.max_iterations:
                done[i] = STOP_MAX_ITERATIONS
            elif _converged(history[i], cfg):
                done[i] = STOP_CONVERGED
            elif cancelled:
                done[i] = STOP_CANCELLED
            else:
                step_rows.append(j)
            pending.append((i, rec))
        if step_rows:
            keep = torch.tensor(step_rows, device=terms.total.device)
            terms.total.index_select(0, keep).sum().backward()
            _finite_grad(theta)
            opt.step()
            active = [idx[j] for j in step_rows]
            for _ in range(cfg.steps_per_iteration - 1):
                opt.zero_grad(set_to_none=True)
                forward(active)[4].total.sum().backward()
                _finite_grad(theta)
                opt.step()
            if cfg.mode == "evolve":
                with torch.no_grad():
                    new = base.clone()
                    new[active] = apply(base[active], theta[active], active).round()
                    base = new
                    prep = param.prepare(base)
                    theta[active] = 0.0
            it += 1
        last_seconds[0] = time.perf_counter() - t0
        for i, rec in pending:
            records[i].append(rec)
            if on_iteration is not None:
                on_iteration(rec, checkpoint_fn(it))

    total = time.perf_counter() - t_start
    results = []
    for i, s in enumerate(sources):
        ctx = best_images[i].permute(1, 2, 0).numpy().copy()
        photo = None
        if s.photo is not None and s.box is not None and s.landmarks is not None:
            photo = composite(s.photo, ctx, s.box, s.landmarks, context_src=s.context)
        h = history[i]
        results.append(
            DeidResult(
                face=i,
                stop_reason=str(done[i]),
                iterations=len(h) - 1,
                best_iteration=int(best[i]["iteration"]),
                score_a=float(best[i]["score_a"]),
                score_b=float(best[i]["score_b"]),
                context=ctx,
                photo=photo,
                records=records[i],
                seconds=total,
            )
        )
    return results


def run_deid(
    source: DeidSource,
    proxy: ScoreAProxy,
    config: DeidConfig | None = None,
    **kwargs: Any,
) -> DeidResult:
    """One face; see :func:`run_deid_batch` for the keyword arguments."""
    return run_deid_batch([source], proxy, config, **kwargs)[0]


def identity_cut(context: torch.Tensor) -> torch.Tensor:
    """The recognition chip of (N,3,300,300) contexts, exactly the central 150 window."""
    o = faces.CHIP_OFFSET
    return context[..., o : o + faces.CHIP_SIZE, o : o + faces.CHIP_SIZE]


@torch.no_grad()
def _confirm(
    out: torch.Tensor,
    face: int,
    net: torch.nn.Module,
    scorer: _Scorer,
    cfg: DeidConfig,
    gen: torch.Generator,
) -> float:
    """Worst score-B over fresh EOT chips plus the plain central chip of one output."""
    k = cfg.eot.confirm_samples
    chips = torch.cat([identity_cut(out), eot_chips(out, cfg.eot, gen, samples=k)])
    emb = net(chips)
    scores = scorer.score([face], k + 1, chips, emb)[0]
    return float(min(s.score for s in scores))


@torch.no_grad()
def _confirm_saved(
    out: torch.Tensor,
    source: DeidSource,
    src_ctx: torch.Tensor,
    proxy: ScoreAProxy,
    final_ens: cfru_mod.CFRUEnsemble,
) -> tuple[float, float]:
    """(score-A, score-B) of one output as it will be judged: composited into the photo,
    detected and aligned afresh; score-B by the final ensemble (the dlib runtime), score-A by
    the proxy on the fresh context crop. No face found: (1.0, 0.0)."""
    assert source.photo is not None and source.box is not None and source.landmarks is not None
    ctx = out.detach().round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    photo = composite(source.photo, ctx, source.box, source.landmarks, context_src=source.context)
    face = faces.detect_and_align(photo)
    if face is None:
        return 1.0, 0.0
    b = final_ens.score_b(source.chip, face.chip).score
    fresh = faces.context_crop(photo, face.box, face.landmarks)
    t = torch.from_numpy(fresh).to(src_ctx.device).permute(2, 0, 1)[None].float()
    return float(proxy(src_ctx, t)[0]), float(b)


def _finite_grad(theta: torch.Tensor) -> None:
    # A NaN from a proxy (e.g. sqrt at 0) would make theta NaN, and a NaN warp grid crashes
    # grid_sample's CPU backward (out-of-range indices): zero non-finite gradient entries.
    if theta.grad is not None:
        torch.nan_to_num_(theta.grad, nan=0.0, posinf=0.0, neginf=0.0)


def _cpu_state(sd: dict[str, Any]) -> dict[str, Any]:
    def cpu(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.detach().cpu().clone()
        if isinstance(v, dict):
            return {k: cpu(x) for k, x in v.items()}
        if isinstance(v, list):
            return [cpu(x) for x in v]
        return v

    return cpu(sd)


def _check_resume(state: DeidState, cfg: DeidConfig, n: int) -> None:
    if state.params.shape[0] != n:
        raise ValueError(f"resume state holds {state.params.shape[0]} faces, the batch has {n}")
    for key in ("parameterisation", "mode", "pixels_eps", "style_ranges"):
        if state.config.get(key) != getattr(cfg, key):
            raise ValueError(f"resume state was made with {key}={state.config.get(key)!r}")


# --------------------------------------------------------------------------------------------
# Honest final score-B
# --------------------------------------------------------------------------------------------


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
