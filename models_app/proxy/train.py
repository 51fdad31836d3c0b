"""Training the human proxy: a pure function the Celery task calls.

``train_proxy(bank, pairs, config)`` splits the pairs by subject (or takes a given split),
trains on soft targets with per-pair weights, each update on the weighted loss aggregated over
a batch of pairs (claim 8), and stops by the rules of claims 7, 9 and 10: the monitored
validation score reaches a target, it stops improving by more than ``min_delta`` for
``patience`` epochs (plateau), or a maximum of epochs or of images processed is reached.
It restores the best epoch, fits Platt scaling on the validation split, and returns the model,
per-epoch metrics, the stop reason and the split (subject ids) as data.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from . import TooFewPairsError
from .calibration import fit_platt
from .config import ProxyConfig, ProxyMeta
from .data import ImageBank, PairTable, SubjectSplit, check_pairs, split_by_subject
from .metrics import evaluate_probs, json_safe, reliability
from .network import HumanProxy

STOP_REASONS = ("target_reached", "plateau", "max_epochs", "max_images", "cancelled")
# Monitored value -> True when higher is better.
MONITORS = {"val_loss": False, "val_brier": False, "val_auc": True, "val_accuracy": True}


@dataclass
class StopRules:
    """When to stop (claims 7, 9, 10). ``target``: stop once ``monitor`` is at least as good
    as this; ``patience``/``min_delta``: plateau; ``max_epochs``/``max_images``: budgets
    (images = 2 per pair per update)."""

    monitor: str = "val_loss"
    target: float | None = None
    patience: int = 5
    min_delta: float = 1e-4
    max_epochs: int = 30
    max_images: int | None = None

    def __post_init__(self) -> None:
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {sorted(MONITORS)}, got {self.monitor!r}")
        if self.max_epochs < 1 or self.patience < 1:
            raise ValueError("max_epochs and patience must be >= 1")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError("max_images must be >= 1")


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (JSON-ready through :meth:`to_dict`)."""

    seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-3
    appearance_loss_weight: float = 0.5  # auxiliary loss of the appearance-only head
    natural_weight: float = 1.0  # multiplies the weights of natural pairs
    flip: bool = True  # random horizontal flips of the appearance input
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    min_pairs: int = 20
    min_val_pairs: int = 4
    calibrate: bool = True
    stop: StopRules = field(default_factory=StopRules)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        stop = StopRules(**d.pop("stop", {}))
        return cls(stop=stop, **d)


@dataclass
class TrainResult:
    """What a run produced. ``to_dict`` is everything but the model, JSON-ready."""

    model: HumanProxy
    history: list[dict]
    stop_reason: str
    best_epoch: int
    split: SubjectSplit
    n_pairs: dict[str, int]
    calibration: dict
    val_metrics: dict
    test_metrics: dict | None
    images_processed: int
    seconds: float
    config: dict

    def to_dict(self) -> dict:
        """JSON-ready (NaN -> None, since PostgreSQL's jsonb has no NaN)."""
        d = {k: v for k, v in self.__dict__.items() if k != "model"}
        d["split"] = self.split.to_dict()
        return json_safe(d)


def _batch_loss(
    model: HumanProxy,
    bank: ImageBank,
    a: torch.Tensor,
    b: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    cfg: TrainConfig,
    gen: torch.Generator | None,
) -> torch.Tensor:
    ra, rb = bank.rows(a), bank.rows(b)
    if gen is not None:  # flip each CNN input independently: mirroring does not change who it is
        fa = torch.rand(len(a), generator=gen) < 0.5
        fb = torch.rand(len(b), generator=gen) < 0.5
        ra = ra._replace(small=torch.where(fa.view(-1, 1, 1, 1), ra.small.flip(3), ra.small))
        rb = rb._replace(small=torch.where(fb.view(-1, 1, 1, 1), rb.small.flip(3), rb.small))
    fused, app = model.logits_from_inputs(ra, rb)
    # Claim 8: one update per batch, on the weighted loss aggregated over its pairs.
    wsum = w.sum().clamp_min(1e-12)
    loss = (w * F.binary_cross_entropy_with_logits(fused, y, reduction="none")).sum() / wsum
    if cfg.appearance_loss_weight > 0:
        aux = (w * F.binary_cross_entropy_with_logits(app, y, reduction="none")).sum() / wsum
        loss = loss + cfg.appearance_loss_weight * aux
    return loss


def _tensors(bank: ImageBank, pairs: PairTable, natural_weight: float):
    ia, ib = bank.indices(pairs)
    y = torch.tensor(pairs.targets(), dtype=bank.identity.dtype)
    w = torch.tensor(
        [p.weight * (natural_weight if p.natural else 1.0) for p in pairs],
        dtype=bank.identity.dtype,
    )
    return ia, ib, y, w


def _evaluate(model: HumanProxy, bank: ImageBank, t, calibrated: bool) -> dict:
    ia, ib, y, w = t
    out = {}
    for branch in ("full", "appearance"):
        z = model.score_bank(bank, ia, ib, branch=branch, logits=True)
        if calibrated:
            z = model.calibrate_logit(z, branch)
        z = z.double()
        p = torch.sigmoid(z).numpy()
        m = evaluate_probs(p, y.double().numpy(), w.double().numpy(), scores=z.numpy())
        out[branch] = m
    return out


def train_proxy(
    bank: ImageBank,
    pairs: PairTable,
    config: TrainConfig | None = None,
    *,
    split: SubjectSplit | None = None,
    init: HumanProxy | None = None,
    model_config: ProxyConfig | None = None,
    meta: ProxyMeta | None = None,
    on_epoch: Callable[[dict], bool | None] | None = None,
) -> TrainResult:
    """Train a proxy on ``pairs`` (human-labelled and/or natural) whose images are in ``bank``.

    * ``split``: subject ids per part; default :func:`split_by_subject` with the config's
      fractions and seed. Pairs straddling parts are dropped (counted in ``n_pairs``).
    * ``init``: warm start from a parent version (its weights and feature scaling are
      copied; the parent is not modified). Otherwise a new model from ``model_config``.
    * ``meta``: stored with the model. Default: a new :class:`ProxyMeta` whose ``prior`` is
      True exactly when no human-labelled pair (``natural=False``) is in the training part.
    * ``on_epoch(record)`` is called after every epoch with the JSON-ready record; returning
      ``False`` stops the run (``stop_reason == "cancelled"``).

    Raises :class:`TooFewPairsError` (no/too few pairs, empty split part) and
    :class:`SingleSubjectError` (one subject only). Deterministic for a given seed (the
    global torch RNG is forked, so the caller's RNG state is untouched).
    """
    cfg = config or TrainConfig()
    check_pairs(pairs, cfg.min_pairs)
    if split is None:
        split = split_by_subject(pairs, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    else:
        parts = [set(split.train), set(split.val), set(split.test)]
        if parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]:
            raise ValueError("the given split is not disjoint by subject")
    parts = split.apply(pairs)
    n_pairs = {k: len(v) for k, v in parts.items()}
    if n_pairs["train"] == 0:
        raise TooFewPairsError(f"no training pairs after the subject split ({n_pairs})")
    if n_pairs["val"] < cfg.min_val_pairs:
        raise TooFewPairsError(
            f"{n_pairs['val']} validation pairs after the subject split; at least "
            f"{cfg.min_val_pairs} are needed ({n_pairs})"
        )
    t0 = time.time()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if meta is None:  # a prior is what never saw a human judgment
            meta = ProxyMeta(prior=not any(not p.natural for p in parts["train"]))
        if init is not None:
            model = copy.deepcopy(init)
            model.meta = meta
        else:
            model = HumanProxy(model_config, meta)
        model = model.to(bank.identity.dtype)
        check_bank(model, bank)
        train_t = _tensors(bank, parts["train"], cfg.natural_weight)
        val_t = _tensors(bank, parts["val"], cfg.natural_weight)
        if init is None:
            model.fit_feature_scaling(bank, train_t[0], train_t[1])
            model.init_identity_rule(bank, *train_t)
        result = _fit(model, bank, train_t, val_t, cfg, on_epoch)
        history, stop_reason, best_epoch, images = result

        model.eval()
        if cfg.calibrate:
            ia, ib, y, w = val_t
            for r, branch in enumerate(("full", "appearance")):
                z = model.score_bank(bank, ia, ib, branch=branch, logits=True)
                a, b = fit_platt(z, y, w)
                model.calibration[r] = torch.tensor([a, b], dtype=model.calibration.dtype)
        calibration = dict(zip(("full", "appearance"), model.calibration.tolist(), strict=True))
        val_metrics = _evaluate(model, bank, val_t, calibrated=True)
        ia, ib, y, w = val_t
        pv = model.score_bank(bank, ia, ib).double().numpy()
        val_metrics["reliability"] = reliability(
            pv, y.double().numpy(), w.double().numpy()
        ).to_dict()
        test_metrics = None
        if n_pairs["test"]:
            test_metrics = _evaluate(
                model, bank, _tensors(bank, parts["test"], cfg.natural_weight), calibrated=True
            )
    model.meta.trained_on = {
        **model.meta.trained_on,
        "n_pairs": n_pairs,
        "n_natural": sum(p.natural for p in parts["train"]),
        "n_human": sum(not p.natural for p in parts["train"]),
        "seed": cfg.seed,
        "stop_reason": stop_reason,
        "best_epoch": best_epoch,
    }
    model.meta.metrics = json_safe(
        {"val": val_metrics["full"], "val_appearance": val_metrics["appearance"]}
    )
    return TrainResult(
        model=model,
        history=history,
        stop_reason=stop_reason,
        best_epoch=best_epoch,
        split=split,
        n_pairs=n_pairs,
        calibration=calibration,
        val_metrics=val_metrics,
        test_metrics=test_metrics,
        images_processed=images,
        seconds=time.time() - t0,
        config=cfg.to_dict(),
    )


def check_bank(model: HumanProxy, bank: ImageBank) -> None:
    """The bank must have been built for this model's config (same taps, pooling, bins)."""
    s = model.config.small_size
    want = (model.config.identity_dim, (3, s, s), model.descriptor_dim)
    got = (bank.identity.shape[1], tuple(bank.small.shape[1:]), bank.descriptors.shape[1])
    if got != want:
        raise ValueError(
            f"the image bank does not fit the model config: (identity dim, crop shape, "
            f"descriptor dim) {got}, expected {want}; rebuild it with model.encode_images"
        )


def evaluate_proxy(
    model: HumanProxy, bank: ImageBank, pairs: PairTable, branch: str = "full"
) -> dict:
    """Calibrated metrics of ``model`` on ``pairs`` (e.g. held-out human labels for the
    promotion gate): AUC, accuracy, Brier vs the majority, Brier/log loss vs score-A, ECE,
    the reliability table, and the per-pair probabilities and calibrated log-odds keyed by
    ``pair_id`` (``probs``, ``logits``)."""
    was_training = model.training
    model.eval()
    try:
        ia, ib = bank.indices(pairs)
        z = model.score_bank(bank, ia, ib, branch=branch, logits=True)
        z = model.calibrate_logit(z, branch).double()
    finally:
        model.train(was_training)
    p, z = torch.sigmoid(z).numpy(), z.numpy()
    t, w = pairs.targets(), pairs.weights()
    out = evaluate_probs(p, t, w, scores=z)  # AUC ranks by log-odds: no ties at P = 1.0
    out["reliability"] = reliability(p, t, w).to_dict()
    keys = [q.pair_id or f"{q.a}|{q.b}" for q in pairs]
    out["probs"] = {k: float(v) for k, v in zip(keys, p, strict=True)}
    out["logits"] = {k: float(v) for k, v in zip(keys, z, strict=True)}
    return json_safe(out)


def _better(a: float, b: float, higher: bool, min_delta: float) -> bool:
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b + min_delta if higher else a < b - min_delta


def _fit(model, bank, train_t, val_t, cfg: TrainConfig, on_epoch):
    stop = cfg.stop
    higher = MONITORS[stop.monitor]
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    ia, ib, y, w = train_t
    n = len(ia)
    history: list[dict] = []
    best_value, best_epoch, best_state = float("nan"), 0, copy.deepcopy(model.state_dict())
    wait, images, reason = 0, 0, "max_epochs"
    for epoch in range(1, stop.max_epochs + 1):
        te = time.time()
        model.train()
        order = torch.randperm(n, generator=gen)
        total, wtotal, budget_hit = 0.0, 0.0, False
        for s in range(0, n, cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            loss = _batch_loss(
                model, bank, ia[idx], ib[idx], y[idx], w[idx], cfg, gen if cfg.flip else None
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bw = float(w[idx].sum())
            total += float(loss.detach()) * bw
            wtotal += bw
            images += 2 * len(idx)
            if stop.max_images is not None and images >= stop.max_images:
                budget_hit = True
                break
        model.eval()
        ev = _evaluate(model, bank, val_t, calibrated=False)
        with torch.no_grad():
            z = model.score_bank(bank, val_t[0], val_t[1], logits=True)
            vw = val_t[3]
            val_loss = float(
                (vw * F.binary_cross_entropy_with_logits(z, val_t[2], reduction="none")).sum()
                / vw.sum().clamp_min(1e-12)
            )
        record = {
            "epoch": epoch,
            "train_loss": total / max(wtotal, 1e-12),
            "val_loss": val_loss,
            "val_auc": ev["full"]["auc"],
            "val_accuracy": ev["full"]["accuracy"],
            "val_brier": ev["full"]["brier"],
            "val_appearance_auc": ev["appearance"]["auc"],
            "val_appearance_accuracy": ev["appearance"]["accuracy"],
            "images_processed": images,
            "seconds": time.time() - te,
        }
        value = record[stop.monitor]
        improved = _better(value, best_value, higher, stop.min_delta)
        record["improved"] = improved
        if improved:
            best_value, best_epoch, wait = value, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            wait += 1
        history.append(record)
        if on_epoch is not None and on_epoch(dict(record)) is False:
            reason = "cancelled"
            break
        if stop.target is not None and not math.isnan(value):
            if (value >= stop.target) if higher else (value <= stop.target):
                reason = "target_reached"
                break
        if budget_hit:
            reason = "max_images"
            break
        if wait >= stop.patience:
            reason = "plateau"
            break
    else:
        reason = "max_epochs"
    if best_epoch == 0:  # nothing ever improved (e.g. NaN monitor): keep the last weights
        best_epoch = len(history)
    else:
        model.load_state_dict(best_state)
    return history, reason, best_epoch, images


__all__ = [
    "StopRules",
    "TrainConfig",
    "TrainResult",
    "train_proxy",
    "evaluate_proxy",
    "check_bank",
    "STOP_REASONS",
]
