"""Training the generator (claims 5-10, paragraphs 54-61, FIG. 5).

Each step de-identifies a batch of training faces in one forward pass, scores the outputs
as the loop does — formula A on the CFRU's features (Θ0 kept close, the style taps pushed
apart), the human proxy's score-A term (its log-odds pushed below ``a_target``: the margin
under τA), the identity guard and the parameterisation's prior — and updates the network
from the loss aggregated over the batch (the mean: claim 8, paragraph 59), not face by face.
(The human-side margin enters when the parameterisation has one: ``plug.margin``; the
naturalness term as in the loop.)

After every epoch the generator is scored on held-out faces (other subjects): score-A by the
proxy, score-B by the job's CFRU ensemble, and the objective
g = max(A − τA, 0) + max(τB − B, 0) (a function of both scores, 0 when both pass). Stop rules
(the reason is returned and stored):

* ``score_a_threshold`` — score-A of the held-out set reached τA, with score-B ≥ τB (claim
  7): by default its 90th percentile over the faces (``StopRules.score_a_quantile``; nine
  faces in ten at or under τA), not its mean — a mean under τA was met while one held-out
  face in five still failed (BENCHMARKS.md, issue 16); ``None`` restores the mean;
* ``score_b_threshold`` — held-out mean score-B fell below τB: the update would give up
  machine recognition, so the last weights that kept it are returned (claim 7);
* ``converged`` — g has not improved by more than ε over the last ``convergence_window``
  epochs: a minimum reached (claims 6, 9, 10; paragraphs 57, 60, 61);
* ``max_images`` — the number of processed training images reached its cap (claim 7);
* ``max_epochs``; ``cancelled`` — ``on_epoch`` returned False.

The returned weights are the best epoch's among the epochs whose score-B held: the highest
held-out success rate (both scores pass, face by face: what a job counts), then the lowest
g. Epoch 0 scores the untrained generator, which is the identity. The result's
``stop_detail`` says which statistic met which threshold.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from models_app.deid.config import DeidConfig
from models_app.deid.confirm import score_a_views
from models_app.deid.eot import straight_round, to_uint8
from models_app.deid.loop import joint_pass_ok, network_pass
from models_app.deid.loss import LossTerms, deid_loss
from models_app.deid.metrics import face_colour_torch, natural_bounds, natural_excess
from models_app.vision import cfru as cfru_mod
from models_app.vision.chips import central_chip

from .network import GeneratorConfig, ParamGenerator

STOP_SCORE_A = "score_a_threshold"
STOP_SCORE_B = "score_b_threshold"
STOP_CONVERGED = "converged"
STOP_MAX_IMAGES = "max_images"
STOP_MAX_EPOCHS = "max_epochs"
STOP_CANCELLED = "cancelled"
STOP_REASONS = (
    STOP_SCORE_A, STOP_SCORE_B, STOP_CONVERGED, STOP_MAX_IMAGES, STOP_MAX_EPOCHS, STOP_CANCELLED,
)
STATE_VERSION = 1


@dataclass(frozen=True)
class StopRules:
    max_epochs: int = 20
    max_images: int = 0  # 0: no cap
    convergence_window: int = 3
    convergence_eps: float = 0.005
    # ``score_a_threshold``: this quantile of the held-out faces' score-A must be <= τA
    # (0.9: nine faces in ten); None: the mean (the rule before issue 16's session 3).
    score_a_quantile: float | None = 0.9


@dataclass(frozen=True)
class GeneratorTrainConfig:
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0
    stop: StopRules = field(default_factory=StopRules)

    def validate(self) -> None:
        s = self.stop
        for name, v, lo in (("batch_size", self.batch_size, 1), ("stop.max_epochs", s.max_epochs, 1),
                            ("stop.max_images", s.max_images, 0),
                            ("stop.convergence_window", s.convergence_window, 1)):
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= lo):
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if not (isinstance(self.lr, int | float) and 0 < self.lr < 1):
            raise ValueError(f"lr must be in (0, 1), got {self.lr!r}")
        if not (isinstance(s.convergence_eps, int | float) and s.convergence_eps >= 0):
            raise ValueError("stop.convergence_eps must be >= 0")
        q = s.score_a_quantile
        if q is not None and not (isinstance(q, int | float) and not isinstance(q, bool)
                                  and 0 < q <= 1):
            raise ValueError(f"stop.score_a_quantile must be in (0, 1] or null, got {q!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> GeneratorTrainConfig:
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown training setting {unknown[0]!r}")
        if isinstance(d.get("stop"), Mapping):
            try:
                d["stop"] = StopRules(**d["stop"])
            except TypeError as exc:
                raise ValueError(f"stop: {exc}") from None
        cfg = cls(**d)
        cfg.validate()
        return cfg


@dataclass
class FaceSet:
    """Faces as the generator sees them: context crops (N,3,300,300) uint8 and, for faces
    with their photo, the change mask (N,1,300,300) float (None: every pixel counts)."""

    contexts: torch.Tensor
    masks: torch.Tensor | None = None

    @classmethod
    def from_arrays(
        cls, contexts: np.ndarray | Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None] | None = None,
    ) -> FaceSet:
        arr = np.stack([np.asarray(c, np.uint8) for c in contexts])
        ctx = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
        m = None
        if masks is not None and any(x is not None for x in masks):
            size = arr.shape[1]
            m = torch.from_numpy(np.stack([
                np.ones((size, size), np.float32) if x is None else np.asarray(x, np.float32)
                for x in masks
            ]))[:, None]
        return cls(ctx, m)

    def __len__(self) -> int:
        return self.contexts.shape[0]

    def take(self, idx: Sequence[int] | slice, device: torch.device) -> tuple[
        torch.Tensor, torch.Tensor | None
    ]:
        ctx = self.contexts[idx].to(device).float().contiguous()
        mask = None if self.masks is None else self.masks[idx].to(device)
        return ctx, mask


def score_a_statistic(quantile: float | None) -> str:
    """The name of the held-out score-A statistic the stop rule compares with τA."""
    return "mean" if quantile is None else f"p{round(100 * quantile):g}"


def objective(a: float, b: float, cfg: DeidConfig) -> float:
    return max(a - cfg.tau_a, 0.0) + max(cfg.tau_b - b, 0.0)


def batch_loss(
    model: ParamGenerator,
    ctx: torch.Tensor,
    mask: torch.Tensor | None,
    src_emb: torch.Tensor,
    src_taps: Mapping[str, torch.Tensor],
    proxy: Any,
    net: torch.nn.Module,
    cfg: DeidConfig,
    gen: torch.Generator,
    joint: bool = False,
) -> tuple[LossTerms, torch.Tensor]:
    """The engine's loss terms per face for one forward pass of the generator, and P(same);
    the same pass as one iteration of the loop (``deid.loop.network_pass``), with theta
    predicted. ``joint``: the proxy's identity chips join the CFRU batch
    (``deid.loop.joint_pass_ok``)."""
    theta = model(ctx)
    out = straight_round(model.render(ctx, theta, mask))
    ps = network_pass(out, ctx, proxy, net, cfg, gen, joint=joint)
    margin = model.plug.margin(theta) if hasattr(model.plug, "margin") else None
    lo, hi = natural_bounds(face_colour_torch(ctx), cfg.loss.natural_inset)
    terms = deid_loss(src_emb, src_taps, ps.emb, ps.taps_plain, ps.logit,
                      model.plug.prior(theta), cfg.loss, margin,
                      natural_excess(face_colour_torch(out), lo, hi))
    return terms, torch.sigmoid(ps.logit.detach())


class _ScoreB:
    """Score-B of outputs against sources with the job's ensemble (the torch port's
    embeddings from the network given; other CFRUs embed the uint8 chips)."""

    def __init__(self, cfg: DeidConfig, net: torch.nn.Module) -> None:
        self.ens = cfru_mod.build_ensemble(cfg.ensemble)
        self.net = net

    def embed(self, chips: torch.Tensor) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        u8 = None
        for c in self.ens.cfrus:
            if c.name == cfru_mod.TORCH_PORT:
                out[c.name] = self.net(chips).detach().double().cpu().numpy()
            else:
                u8 = to_uint8(chips) if u8 is None else u8
                out[c.name] = c.embed(u8)
        return out

    def scores(self, src_chips: torch.Tensor, out_chips: torch.Tensor) -> list[float]:
        return [s.score for s in self.ens.score_embeddings(self.embed(src_chips),
                                                           self.embed(out_chips))]


@torch.no_grad()
def evaluate_generator(
    model: ParamGenerator,
    faces: FaceSet,
    proxy: Any,
    net: torch.nn.Module,
    cfg: DeidConfig,
    *,
    batch: int = 16,
    device: torch.device | str = "cpu",
    quantiles: Sequence[float] = (0.5, 0.9),
) -> dict[str, Any]:
    """Held-out scores of one forward pass per face: score-A (the proxy's P(same) on the
    plain output), score-B (the job's ensemble on the central chip), success (both pass),
    and the objective g; means over the faces, score-A's ``quantiles`` (``score_a_p90``...),
    and the per-face lists."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    scorer = _ScoreB(cfg, net)
    a_all: list[float] = []
    b_all: list[float] = []
    # Score-A as a job confirms it: the mean over the output and fresh EOT views (the same
    # draws every epoch, so epochs compare on equal terms).
    views = cfg.eot.confirm_samples if cfg.eot.confirm_score_a else 0
    gen = torch.Generator().manual_seed(0)
    for i in range(0, len(faces), batch):
        ctx, mask = faces.take(slice(i, i + batch), device)
        out = model.render(ctx, model(ctx), mask).round()
        if views:
            a_all += [score_a_views(proxy, ctx[j : j + 1], out[j : j + 1], cfg.eot, gen, views)
                      for j in range(ctx.shape[0])]
        else:
            a_all += [float(x) for x in proxy(ctx, out)]
        b_all += scorer.scores(central_chip(ctx), central_chip(out))
    model.train(was_training)
    ok = [a <= cfg.tau_a and b >= cfg.tau_b for a, b in zip(a_all, b_all, strict=True)]
    g = [objective(a, b, cfg) for a, b in zip(a_all, b_all, strict=True)]
    n = len(a_all)
    return {
        "n": n,
        "score_a": float(np.mean(a_all)) if n else math.nan,
        **{f"score_a_{score_a_statistic(q)}": float(np.quantile(a_all, q)) if n else math.nan
           for q in quantiles},
        "score_b": float(np.mean(b_all)) if n else math.nan,
        "success_rate": float(np.mean(ok)) if n else math.nan,
        "objective": float(np.mean(g)) if n else math.nan,
        "per_face_score_a": a_all,
        "per_face_score_b": b_all,
    }


@dataclass
class GeneratorTrainState:
    """Everything needed to go on after a worker dies, as of the end of ``epoch``.
    ``to_bytes``: ``torch.save`` of tensors, lists and numbers only (loaded with
    ``weights_only=True``: nothing is unpickled as code)."""

    epoch: int
    images: int
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    best_weights: dict[str, torch.Tensor]
    best_epoch: int
    history: list[dict[str, Any]]
    rng: torch.Tensor
    config: dict[str, Any]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"version": STATE_VERSION, **asdict(self)}, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> GeneratorTrainState:
        try:
            raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated or foreign bytes, any error type
            raise ValueError(f"unreadable generator training state: {exc}") from None
        if not isinstance(raw, dict) or raw.pop("version", None) != STATE_VERSION:
            raise ValueError("not a generator training state of this version")
        return cls(**raw)


@dataclass
class GeneratorTrainResult:
    model: ParamGenerator
    stop_reason: str
    best_epoch: int
    held_out: dict[str, Any]  # the best epoch's held-out scores (means)
    history: list[dict[str, Any]]
    images: int  # training images processed
    epochs: int
    seconds: float  # this attempt's wall time
    resumed_from: int | None = None  # the checkpoint's epoch, when resumed
    # Which rule stopped it, on which held-out statistic and value (stored with the reason).
    stop_detail: dict[str, Any] = field(default_factory=dict)


def _cpu(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().clone()
    if isinstance(v, dict):
        return {k: _cpu(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_cpu(x) for x in v]
    return v


def _converged(g: list[float], window: int, eps: float) -> bool:
    if len(g) <= window:
        return False
    return min(g[-window:]) > min(g[:-window]) - eps


def _best_key(h: dict[str, Any]) -> tuple[float, float, int]:
    """Best epoch first: most held-out faces passing both scores, then the lowest g."""
    m = h["held_out"]
    return (-m.get("success_rate", 0.0), m["objective"], h["epoch"])


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not k.startswith("per_face")}


def train_generator(
    train: FaceSet,
    held_out: FaceSet,
    proxy: Any,
    deid_config: DeidConfig | None = None,
    config: GeneratorTrainConfig | None = None,
    generator_config: GeneratorConfig | None = None,
    *,
    network: torch.nn.Module | None = None,
    on_epoch: Callable[[dict[str, Any], Callable[[], GeneratorTrainState]], bool] | None = None,
    on_batch: Callable[[int], bool] | None = None,
    resume: GeneratorTrainState | None = None,
    device: torch.device | str = "cpu",
) -> GeneratorTrainResult:
    """Train a generator on ``train`` faces, scored on ``held_out`` faces after every epoch.

    ``on_epoch(record, checkpoint)`` is called after every epoch (0 included: the untrained
    generator); ``checkpoint()`` returns the state to resume from; returning False stops
    (``cancelled``), as does ``on_batch(images_so_far)`` returning False after a batch (a
    heartbeat between epochs). ``network`` replaces the dlib ResNet port (tests)."""
    from models_app.vision.dlib_resnet import get_dlib_resnet

    cfg = deid_config or DeidConfig()
    cfg.validate()
    tc = config or GeneratorTrainConfig()
    tc.validate()
    gcfg = generator_config or GeneratorConfig.for_deid(cfg)
    if gcfg.parameterisation != cfg.parameterisation:
        raise ValueError("the generator predicts another parameterisation than the config's")
    if len(train) == 0 or len(held_out) == 0:
        raise ValueError("training needs training faces and held-out faces")
    device = torch.device(device)
    t0 = time.perf_counter()
    torch.manual_seed(tc.seed)
    model = ParamGenerator(gcfg).to(device)
    net = network if network is not None else get_dlib_resnet(device)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("plug.")],
                           lr=tc.lr)
    gen = torch.Generator().manual_seed(tc.seed)
    state_config = {"deid": cfg.to_dict(), "train": tc.to_dict(), "generator": gcfg.to_dict()}

    # Source features once per training face (never change): Θ0 and the weighted taps.
    tap_names = [k for k, v in cfg.loss.lambda_taps.items()] or []
    src_emb, src_taps = [], {k: [] for k in tap_names}
    with torch.no_grad():
        for i in range(0, len(train), 16):
            ctx, _ = train.take(slice(i, i + 16), device)
            e, t = net.features(central_chip(ctx))
            src_emb.append(e.cpu())
            for k in tap_names:
                src_taps[k].append(t[k].cpu())
    emb_all = torch.cat(src_emb)
    taps_all = {k: torch.cat(v) for k, v in src_taps.items()}

    if resume is not None:
        if resume.config.get("generator") != gcfg.to_dict():
            raise ValueError("the checkpoint was made for another generator configuration")
        model.load_weights({k: v.to(device) for k, v in resume.weights.items()})
        opt.load_state_dict(resume.optimizer)
        gen.set_state(resume.rng)
        history = [dict(h) for h in resume.history]
        best_weights = {k: v.clone() for k, v in resume.best_weights.items()}
        best_epoch, epoch, images = resume.best_epoch, resume.epoch, resume.images
    else:
        history, best_weights, best_epoch, epoch, images = [], _cpu(model.weights()), 0, 0, 0

    def checkpoint() -> GeneratorTrainState:
        return GeneratorTrainState(
            epoch=epoch, images=images, weights=_cpu(model.weights()),
            optimizer=_cpu(opt.state_dict()), best_weights=best_weights, best_epoch=best_epoch,
            history=[dict(h) for h in history], rng=gen.get_state(), config=state_config,
        )

    q_stop = tc.stop.score_a_quantile
    a_stat = score_a_statistic(q_stop)
    a_key = "score_a" if q_stop is None else f"score_a_{a_stat}"
    quantiles = (0.5, 0.9) if q_stop is None else tuple(sorted({0.5, 0.9, float(q_stop)}))

    def score(train_stats: dict[str, float], seconds: float) -> bool:
        """Score the held-out faces, record the epoch, keep the best; False: stop asked."""
        nonlocal best_weights, best_epoch
        m = evaluate_generator(model, held_out, proxy, net, cfg, device=device,
                               quantiles=quantiles)
        record = {"epoch": epoch, "images": images, **train_stats,
                  "held_out": _summary(m), "seconds": round(seconds, 3)}
        history.append(record)
        eligible = [h for h in history if h["held_out"]["score_b"] >= cfg.tau_b]
        best = min(eligible, key=_best_key, default=None)
        if best is not None and best["epoch"] == epoch:
            best_weights, best_epoch = _cpu(model.weights()), epoch
        return on_epoch(record, checkpoint) if on_epoch is not None else True

    def stop_rule(capped: bool) -> str:
        """The stop rule the last scored epoch meets ('' for none)."""
        h = history[-1]["held_out"]
        if h["score_b"] < cfg.tau_b:
            return STOP_SCORE_B
        # A checkpoint from before the quantile rule has no quantile recorded: its mean.
        if h.get(a_key, h["score_a"]) <= cfg.tau_a:
            return STOP_SCORE_A
        if capped:
            return STOP_MAX_IMAGES
        g = [r["held_out"]["objective"] for r in history]
        if _converged(g, tc.stop.convergence_window, tc.stop.convergence_eps):
            return STOP_CONVERGED
        if epoch >= tc.stop.max_epochs:
            return STOP_MAX_EPOCHS
        return ""

    resumed_from = resume.epoch if resume is not None else None
    stop = ""
    if resume is None:
        if not score({}, time.perf_counter() - t0):
            stop = STOP_CANCELLED
    elif epoch > 0:
        # The checkpoint is taken before the epoch's stop rules ran: run them now.
        stop = stop_rule(bool(tc.stop.max_images and images >= tc.stop.max_images))
    model.train()
    while not stop:
        epoch += 1
        te = time.perf_counter()
        order = torch.randperm(len(train), generator=gen).tolist()
        losses, a_means, n_seen = [], [], 0
        capped = False
        for i in range(0, len(order), tc.batch_size):
            idx = order[i : i + tc.batch_size]
            ctx, mask = train.take(idx, device)
            terms, p_same = batch_loss(
                model, ctx, mask, emb_all[idx].to(device),
                {k: v[idx].to(device) for k, v in taps_all.items()}, proxy, net, cfg, gen,
                joint=joint_pass_ok(proxy, network),
            )
            loss = terms.total.mean()  # the batch's aggregated score (claim 8)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for p in model.parameters():
                if p.grad is not None:
                    torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
            opt.step()
            losses.append(float(loss.detach()))
            a_means.append(float(p_same.mean()))
            images += len(idx)
            n_seen += len(idx)
            if tc.stop.max_images and images >= tc.stop.max_images:
                capped = True
                break
            if on_batch is not None and not on_batch(images):
                stop = STOP_CANCELLED
                break
        if stop:
            break
        stats = {"train_loss": float(np.mean(losses)), "train_score_a": float(np.mean(a_means)),
                 "train_images": n_seen}
        if not score(stats, time.perf_counter() - te):
            stop = STOP_CANCELLED
            break
        stop = stop_rule(capped)
    model.load_weights({k: v.to(device) for k, v in best_weights.items()})
    model.eval()
    best = next(h for h in history if h["epoch"] == best_epoch)
    last = history[-1]["held_out"]
    detail: dict[str, Any] = {"rule": stop, "epoch": history[-1]["epoch"]}
    if stop == STOP_SCORE_A:
        detail.update(statistic=a_stat, value=last.get(a_key, last["score_a"]),
                      tau_a=cfg.tau_a)
    elif stop == STOP_SCORE_B:
        detail.update(statistic="mean", value=last["score_b"], tau_b=cfg.tau_b)
    elif stop == STOP_MAX_IMAGES:
        detail.update(images=images, max_images=tc.stop.max_images)
    return GeneratorTrainResult(
        model=model, stop_reason=stop, best_epoch=best_epoch, held_out=dict(best["held_out"]),
        history=history, images=images, epochs=epoch, seconds=time.perf_counter() - t0,
        resumed_from=resumed_from, stop_detail=detail,
    )
