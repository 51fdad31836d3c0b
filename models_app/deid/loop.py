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
A parameterisation with a human-side margin (``disguise``) must keep it: a record below
the margin is never a success, and any record that keeps it is preferred as the output.
So must every output's face colour (``metrics.naturalness``, the range widened to take in
the source's own value; ``loss.lambda_natural`` = 0 turns it off).

Ladder (``DeidConfig.ladder``): the first natural iterate (k >= 1) whose score-A falls
below each threshold is handed to ``on_rung`` (and listed in the result), as its context
crop and, for sources with their photo, composited into the photo: what people judge then
spans the boundary, not only the final output. It only reads the images, so the trajectory
is the same with or without a ladder.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from models_app.vision import cfru as cfru_mod
from models_app.vision.chips import central_chip
from models_app.vision.dlib_resnet import get_dlib_resnet

from .config import DeidConfig
from .confirm import FINAL_ENSEMBLE, mean_p_same, score_as_saved
from .eot import eot_chips, eot_contexts, straight_round, to_uint8
from .loss import LossTerms, deid_loss
from .metrics import face_colour_torch, natural_bounds, natural_excess
from .params import Parameterisation, StyleRanges, build_parameterisation
from .score_a import ScoreAProxy
from .state import DeidResult, DeidSource, DeidState, IterationRecord, Rung

STOP_SUCCESS = "success"
STOP_CONVERGED = "converged"
STOP_MAX_ITERATIONS = "max_iterations"
STOP_CANCELLED = "cancelled"
STOP_REASONS = (STOP_SUCCESS, STOP_CONVERGED, STOP_MAX_ITERATIONS, STOP_CANCELLED)


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


class Pass(NamedTuple):
    """What one network pass over a batch of rendered outputs gives the loss and the scores."""

    view: torch.Tensor  # what the proxy scored (each face's first EOT draw, or the output)
    chips: torch.Tensor  # EOT chips (N*samples, 3, 150, 150), face-major: score-B
    emb: torch.Tensor  # Θ0 of the EOT chips
    taps_plain: dict[str, torch.Tensor]  # CFRU taps of the plain central chips: formula A
    logit: torch.Tensor  # the proxy's calibrated log-odds of "same" (N,)


def network_pass(
    out: torch.Tensor,
    src: torch.Tensor,
    proxy: ScoreAProxy,
    net: torch.nn.Module,
    cfg: DeidConfig,
    gen: torch.Generator,
    *,
    joint: bool,
) -> Pass:
    """One pass of the networks over rendered outputs (N,3,300,300), differentiable: EOT
    draws, then ONE CFRU batch of [plain chips; EOT chips; the proxy's identity chips] (the
    last only with ``joint``: the dlib network itself and a proxy with ``identity_chips``),
    then the proxy's head. The loop and the generator's training both use it, so they score
    the same way. Taps of the plain chip feed formula A; Θ0 of the EOT chips feeds formula A
    and score-B; the proxy's identity branch gets the chip of the view it scores."""
    k = out.shape[0]
    if cfg.eot.proxy:
        views, chips = eot_contexts(out, cfg.eot, gen)
        view = views[:: cfg.eot.samples]  # the proxy sees each face's first EOT draw
    else:
        view, chips = out, eot_chips(out, cfg.eot, gen)
    id_chips = proxy.identity_chips(view) if joint else None  # type: ignore[attr-defined]
    batch = [central_chip(out), chips] + ([] if id_chips is None else [id_chips])
    emb, taps = net.features(torch.cat(batch))
    n_chips = k + chips.shape[0]  # rows of the loop's own chips; the proxy's follow
    taps_plain = {name: v[:k] for name, v in taps.items()}
    if id_chips is not None:
        logit = proxy.logit_with_identity(  # type: ignore[attr-defined]
            src, view, emb[n_chips:], {name: v[n_chips:] for name, v in taps.items()})
    elif hasattr(proxy, "logit_with_features"):
        if cfg.eot.proxy:
            rows = torch.arange(k, device=emb.device) * cfg.eot.samples + k
            v_emb, v_taps = emb[rows], {name: v[rows] for name, v in taps.items()}
        else:
            v_emb, v_taps = emb[:k], taps_plain
        logit = proxy.logit_with_features(src, view, v_emb, v_taps)
    elif hasattr(proxy, "logit"):
        logit = proxy.logit(src, view)  # type: ignore[attr-defined]
    else:
        p = proxy(src, view).clamp(1e-6, 1 - 1e-6)
        logit = torch.log(p) - torch.log1p(-p)
    return Pass(view, chips, emb[k:n_chips], taps_plain, logit)


def joint_pass_ok(proxy: ScoreAProxy, network: torch.nn.Module | None) -> bool:
    """Whether the proxy's identity chips may join the CFRU batch: only with the dlib
    network itself (a stand-in ``network`` must not stand in for the proxy's CFRU)."""
    return network is None and hasattr(proxy, "identity_chips")


def run_deid_batch(
    sources: Sequence[DeidSource],
    proxy: ScoreAProxy,
    config: DeidConfig | None = None,
    *,
    on_iteration: Callable[[IterationRecord, Callable[[], DeidState]], None] | None = None,
    on_rung: Callable[[Rung], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: DeidState | None = None,
    device: torch.device | str | None = None,
    network: torch.nn.Module | None = None,
    init_params: torch.Tensor | None = None,
    init_base: torch.Tensor | None = None,
) -> list[DeidResult]:
    """De-identify a batch of faces (independent jobs sharing network passes).

    ``on_iteration(record, checkpoint)`` is called for every record; ``checkpoint()`` returns
    the :class:`DeidState` as of that record (call it only when you mean to persist: it copies
    tensors). Resuming from a checkpoint re-runs nothing already recorded. ``should_stop`` is
    polled once per iteration (cancel). Faces that stop leave the batch; the rest go on.
    ``on_rung(rung)`` is called for each ladder rung just before ``on_iteration`` of the
    record that crossed it (so both can be stored together); a resumed run does not hand out
    a rung crossed before its checkpoint.
    ``network`` replaces the differentiable CFRU (default: the dlib ResNet port; anything with
    its ``features(chips) -> (Θ0, taps)``), e.g. a small stand-in in tests.
    ``init_params`` (N, P) starts the parameters there instead of at the identity (e.g. a
    generator's prediction: the hybrid method); record 0 then scores that image.
    ``init_base`` (N, 3, H, W) float [0, 255] renders the parameters on that image instead of
    the source (the hybrid from the generator's output image): the parameters start at the
    identity, so record 0 scores that image and the loop has its whole range, unsaturated,
    on top of it. Scores are always against the source; a checkpoint keeps the base.
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
    kw: dict[str, Any]
    if cfg.parameterisation == "pixels":
        kw = {"eps": cfg.pixels_eps}
    elif cfg.parameterisation == "disguise":
        if any(s.donor is None for s in sources):
            raise ValueError("the disguise parameterisation needs a donor for every source")
        kw = {"ranges": cfg.disguise(), "sources": [s.context for s in sources],
              "donors": [s.donor for s in sources]}
    else:
        kw = {"ranges": StyleRanges(**dict(cfg.style_ranges))}
    param: Parameterisation = build_parameterisation(cfg.parameterisation, size, **kw).to(device)
    net = network if network is not None else get_dlib_resnet(device)
    ensemble = cfru_mod.build_ensemble(cfg.ensemble)

    src_ctx = _to_tensor([s.context for s in sources], device)
    # Changes go through each face's change mask: context pixels outside the photo (black in
    # the crop) and the feathered border would be lost on saving, so they are not scored.
    masks = [s.change_mask(cfg.blend) for s in sources]
    mask = torch.from_numpy(
        np.stack([np.ones((size, size), np.float32) if m is None else m for m in masks])
    ).to(device)[:, None]
    src_chips_u8 = np.stack([s.chip for s in sources])
    with torch.no_grad():
        src_emb, src_taps = net.features(central_chip(src_ctx))
    scorer = _Scorer(ensemble, src_chips_u8, src_emb)
    # Naturalness: the loss aims inside LFW's colour range (inset), a record counts as
    # natural inside the range itself; both widened to the source's own value.
    src_colour = face_colour_torch(src_ctx)
    nat_lo, nat_hi = natural_bounds(src_colour, cfg.loss.natural_inset)
    gate_lo, gate_hi = natural_bounds(src_colour)
    if init_params is not None and init_base is not None:
        raise ValueError("start from parameters or from a base image, not both")
    if init_base is not None and tuple(init_base.shape) != tuple(src_ctx.shape):
        raise ValueError(
            f"init_base must be {tuple(src_ctx.shape)}, got {tuple(init_base.shape)}")
    # The base travels with a checkpoint when it is not the source (evolve, the hybrid).
    keep_base = cfg.mode == "evolve" or init_base is not None or (
        resume is not None and resume.base is not None)
    final_ens = cfru_mod.build_ensemble(FINAL_ENSEMBLE) if cfg.confirm_saved else None

    gen = torch.Generator().manual_seed(cfg.seed)
    kick: torch.Tensor | None = None  # the start noise (``cfg.start_noise``)
    if resume is not None:
        _check_resume(resume, cfg, n)
        theta = resume.params.to(device).clone().requires_grad_(True)
        base = resume.base.to(device).float() if resume.base is not None else src_ctx
        gen.set_state(resume.rng)
        history = [list(h) for h in resume.history]
        best = [dict(b) for b in resume.best]
        best_images = resume.best_images.clone()
        done = list(resume.done)
        crossed = [set(c) for c in resume.crossed] or [set() for _ in range(n)]
        start = resume.iteration
    else:
        theta = (
            param.init_params(n, device)
            if init_params is None
            else init_params.detach().to(device, torch.float32).clone()
        ).requires_grad_(True)
        if init_params is None and cfg.start_noise > 0:
            # Added to θ at the first step (iteration 0 stays the source itself); its own
            # generator, so the EOT draws are those of a loop without it.
            kick_gen = torch.Generator().manual_seed(cfg.seed + 1)
            kick = (torch.randn(theta.shape, generator=kick_gen) * cfg.start_noise).to(device)
        base = src_ctx if init_base is None else init_base.to(device, torch.float32)
        history = [[] for _ in range(n)]
        best = [{"objective": math.inf, "iteration": -1, "score_a": 1.0, "score_b": 0.0,
                 "margin_ok": False}] * n
        best = [dict(b) for b in best]
        best_images = src_ctx.round().to(torch.uint8).cpu()
        done = [None] * n
        crossed = [set() for _ in range(n)]
        start = 0
    opt = torch.optim.Adam([theta], lr=cfg.learning_rate())
    if resume is not None:
        opt.load_state_dict(resume.optimizer)
    records: list[list[IterationRecord]] = [[] for _ in range(n)]
    ladders: list[list[Rung]] = [[] for _ in range(n)]
    thresholds = sorted((float(t) for t in cfg.ladder), reverse=True)
    samples = cfg.eot.samples
    last_seconds = [0.0]
    it = start

    prep = param.prepare(base)

    def apply(b: torch.Tensor, th: torch.Tensor, sel: list[int] | slice) -> torch.Tensor:
        """The rendered change, through each face's change mask."""
        rendered = param.render(b, th, None if prep is None else prep[sel])
        return torch.lerp(b, rendered, mask[sel])

    joint = joint_pass_ok(proxy, network)
    src_views: dict[tuple[int, ...], torch.Tensor] = {}

    def forward(
        idx: list[int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, LossTerms, torch.Tensor]:
        # Every face active (batch 1 always): the tensors themselves, no gathered copies.
        sel: list[int] | slice = slice(None) if len(idx) == n else idx
        th = theta[sel]
        # A stable tensor per active set, so a proxy can cache its source-side encoding.
        key = tuple(idx)
        src = src_views.get(key)
        if src is None:
            src = src_views[key] = src_ctx[sel]
        out = straight_round(apply(base[sel], th, sel))
        ps = network_pass(out, src, proxy, net, cfg, gen, joint=joint)
        colour = face_colour_torch(out)
        terms = deid_loss(
            src_emb[sel],
            {name: v[sel] for name, v in src_taps.items()},
            ps.emb,
            ps.taps_plain,
            ps.logit,
            param.prior(th),
            cfg.loss,
            param.margin(th),
            natural_excess(colour, nat_lo[sel], nat_hi[sel]),
        )
        return out, ps.chips, ps.emb, torch.sigmoid(ps.logit.detach()), terms, colour.detach()

    def checkpoint_fn(iteration: int) -> Callable[[], DeidState]:
        def make() -> DeidState:
            return DeidState(
                iteration=iteration,
                params=theta.detach().cpu().clone(),
                optimizer=_cpu_state(opt.state_dict()),
                base=base.round().to(torch.uint8).cpu() if keep_base else None,
                history=[list(h) for h in history],
                best=[dict(b) for b in best],
                best_images=best_images.clone(),
                done=list(done),
                rng=gen.get_state(),
                config=cfg.to_dict(),
                crossed=[sorted(c, reverse=True) for c in crossed],
            )

        return make

    while True:
        idx = [i for i in range(n) if done[i] is None]
        if not idx:
            break
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out, chips, emb, p_same, terms, colour = forward(idx)
        # Outside the range itself (not the loss's inset one): stored with each record.
        # λnatural = 0 switches naturalness off as a term and as a condition.
        outside = natural_excess(colour, gate_lo[idx], gate_hi[idx])
        natural = (outside <= 0.0 if cfg.loss.lambda_natural > 0
                   else torch.ones(len(idx), dtype=torch.bool))
        scores = scorer.score(idx, samples, chips, emb)
        step_rows: list[int] = []
        pending: list[tuple[int, IterationRecord, list[Rung]]] = []
        cancelled = bool(should_stop and should_stop())
        for j, i in enumerate(idx):
            a = float(p_same[j])
            bs = [s.score for s in scores[j]]
            b, b_min = float(np.mean(bs)), float(np.min(bs))
            # The human side: the parameterisation's margin (disguise: the donor share) and
            # a natural face colour. A record that misses either is never a success, and
            # never preferred to one that keeps both.
            margin_kept = terms.margin is None or float(terms.margin[j].detach()) <= 1e-9
            natural_ok = bool(natural[j])
            margin_ok = margin_kept and natural_ok
            success = a <= cfg.tau_a and b_min >= cfg.tau_b and margin_ok
            confirmed = None
            a_conf: float | None = None
            if success and cfg.eot.confirm_samples > 0:
                a_conf, b_conf = _confirm(out[j : j + 1], src_ctx[i : i + 1], i, net, scorer,
                                          proxy, cfg, gen)
                b_min = min(b_min, b_conf)
                confirmed = success = b_conf >= cfg.tau_b and (
                    a_conf is None or a_conf <= cfg.tau_a)
            saved: tuple[float, float] | None = None
            if success and final_ens is not None and sources[i].photo is not None:
                views = cfg.eot.confirm_samples if cfg.eot.confirm_score_a else 0
                saved = score_as_saved(out[j], sources[i], src_ctx[i : i + 1], proxy, final_ens,
                                       blend=cfg.blend, eot=cfg.eot, gen=gen, samples=views)
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
                loss={**terms.row(j), "natural_outside": round(float(outside[j]), 4)},
                objective=g,
                success=success,
                confirmed=confirmed,
                change=param.describe(theta[i : i + 1]),
                seconds=last_seconds[0],
                confirm_score_a=a_conf,
                saved_score_a=None if saved is None else saved[0],
                saved_score_b=None if saved is None else saved[1],
            )
            had_margin = bool(best[i].get("margin_ok", True))
            if (margin_ok and not had_margin) or (margin_ok == had_margin and (
                    g < best[i]["objective"] or (success and best[i]["objective"] > 0))):
                # A success reports its confirmed score-A (the expectation over views of
                # the saved photo), not the one view that made it a candidate.
                a_best = a
                if success and saved is not None:
                    a_best = saved[0]
                elif success and a_conf is not None:
                    a_best = a_conf
                best[i] = {"objective": g, "iteration": it, "score_a": a_best, "score_b": b_min,
                           "margin_ok": margin_ok, "margin_kept": margin_kept,
                           "natural": natural_ok}
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
            # A rung goes to people: never an iterate whose face colour is not a photograph's.
            rungs = (_rungs(rec, out[j], sources[i], thresholds, crossed[i], cfg.blend)
                     if it > 0 and natural_ok else [])
            pending.append((i, rec, rungs))
        if step_rows:
            keep = torch.tensor(step_rows, device=terms.total.device)
            terms.total.index_select(0, keep).sum().backward()
            _finite_grad(theta)
            if kick is not None and it == 0:
                with torch.no_grad():
                    theta.add_(kick)
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
        for i, rec, rungs in pending:
            records[i].append(rec)
            ladders[i].extend(rungs)
            if on_rung is not None:
                for rung in rungs:
                    on_rung(rung)
            if on_iteration is not None:
                on_iteration(rec, checkpoint_fn(it))

    total = time.perf_counter() - t_start
    results = []
    for i, s in enumerate(sources):
        ctx = best_images[i].permute(1, 2, 0).numpy().copy()
        photo = s.composite_output(ctx, cfg.blend)
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
                ladder=ladders[i],
                margin_kept=bool(best[i].get("margin_kept", best[i].get("margin_ok", True))),
                natural_kept=bool(best[i].get("natural", True)),
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


def _rungs(
    rec: IterationRecord,
    out: torch.Tensor,
    source: DeidSource,
    thresholds: list[float],
    crossed: set[float],
    blend: str = "rectangle",
) -> list[Rung]:
    """The rungs this record crosses for the first time (marked crossed); reads ``out``."""
    new = [t for t in thresholds if t not in crossed and rec.score_a < t]
    if not new:
        return []
    crossed.update(new)
    ctx = out.detach().round().to(torch.uint8).cpu().permute(1, 2, 0).numpy().copy()
    photo = source.composite_output(ctx, blend)
    return [
        Rung(face=rec.face, threshold=t, iteration=rec.iteration, score_a=rec.score_a,
             score_b=rec.score_b, context=ctx, photo=photo)
        for t in new
    ]


@torch.no_grad()
def _confirm(
    out: torch.Tensor,
    src: torch.Tensor,
    face: int,
    net: torch.nn.Module,
    scorer: _Scorer,
    proxy: ScoreAProxy,
    cfg: DeidConfig,
    gen: torch.Generator,
) -> tuple[float | None, float]:
    """(score-A, score-B) of one output over fresh EOT transforms plus the plain output:
    score-B the worst of the chips; score-A the mean P(same) of the views (the expectation
    the loop descends; None when ``eot.confirm_score_a`` is off, and then the chips are drawn
    as before it existed)."""
    k = cfg.eot.confirm_samples
    if cfg.eot.confirm_score_a:
        views, chips = eot_contexts(out, cfg.eot, gen, samples=k)
        a: float | None = mean_p_same(proxy, src, [out, *views.split(1)])
    else:
        a, chips = None, eot_chips(out, cfg.eot, gen, samples=k)
    chips = torch.cat([central_chip(out), chips])
    emb = net(chips)
    scores = scorer.score([face], k + 1, chips, emb)[0]
    return a, float(min(s.score for s in scores))


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
    # Keys newer than some checkpoints: compared only where the checkpoint has them.
    for key in ("disguise_ranges", "blend"):
        if key in state.config and state.config[key] != getattr(cfg, key):
            raise ValueError(f"resume state was made with {key}={state.config[key]!r}")
