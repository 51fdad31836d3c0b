"""The human proxy network: P(a person says the two faces are the same person) = score-A.

Siamese over the two images' context crops (``faces.context_crop``: 300x300, dlib alignment,
padding 1.0, so hair, ears, clothes and background show), with two branches:

* identity — the FROZEN dlib-torch CFRU (``dlib_resnet``) on the central 150x150 window of
  each context crop (the recognition chip, cut by slicing so the gradient reaches the image):
  Θ0 and the global-average-pooled multi-scale taps, compared by the dlib distance, the
  cosine of Θ0 and per-tap cosines and relative distances (optionally also |Δ| and products
  of the normalised Θ0: ``identity_vectors``);
* appearance — trainable, on the context crop average-pooled to 75x75 (low frequencies):
  a small CNN plus hand-made differentiable descriptors (per-region colour means, standard
  deviations and soft histograms for face centre, hair band, sides, clothes and background
  ring; a 5x5 low-pass image).

An appearance head turns the appearance pair features into a logit of its own (trained with
an auxiliary loss, calibrated separately: ``branch="appearance"``). The fused logit (default
``fusion="gated"``) is ``identity(id) + softplus(gate(id)) * appearance``, with ``id`` the
scalar identity pair features: appearance evidence enters through one non-negative channel
whose weight depends on how clear the face evidence is. Platt scaling
``sigmoid(a * logit + b)``, fitted on a validation split, makes it a calibrated P(same).

Everything is differentiable w.r.t. both input images (the de-identification loop descends
score-A w.r.t. its output image). Per-image work splits into :meth:`identity_features` (frozen,
cacheable) and :meth:`appearance_input` (a fixed pooling), so training runs on an
:class:`~.data.ImageBank` and gives the same numbers as :meth:`forward` on images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models_app.vision import dlib_resnet

from .data import ImageBank, context_to_tensor

CONTEXT_SIZE = 300
CHIP_SIZE = dlib_resnet.CHIP_SIZE
CHIP_OFFSET = (CONTEXT_SIZE - CHIP_SIZE) // 2
BRANCHES = ("full", "appearance")

# Regions of the context crop, (top, bottom, left, right) in 300x300 pixels. With padding 1.0
# the landmark template's unit square (eyes, nose, mouth) maps to [100, 200] in both axes.
REGIONS: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    "face": ((100, 200, 100, 200),),
    "hair": ((30, 100, 80, 220),),
    "sides": ((100, 220, 50, 100), (100, 220, 200, 250)),
    "clothes": ((240, 300, 50, 250),),
    "background": ((0, 30, 0, 300), (30, 200, 0, 50), (30, 200, 250, 300)),
}


@dataclass
class ProxyConfig:
    """Architecture of a :class:`HumanProxy`; stored as JSON with the weights."""

    taps: tuple[str, ...] = dlib_resnet.TAP_NAMES
    pool: int = 4  # context crop -> 75x75 for the appearance branch
    cnn_channels: tuple[int, ...] = (16, 32, 64, 64)
    appearance_dim: int = 64
    hist_bins: int = 6
    lowpass: int = 5
    hidden: int = 64
    dropout: float = 0.2
    # |Δ| and products of the normalised Θ0 as head inputs (a learned metric) besides the
    # scalar distances; off by default: on ~5k LFW pairs it overfits the dlib distance.
    identity_vectors: bool = False
    # "gated": identity logit + softplus(gate(identity)) x appearance logit (default);
    # "mlp": one MLP over all pair features (more capacity, overfits ~5k pairs).
    fusion: str = "gated"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ProxyConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown proxy config keys {sorted(unknown)}")
        d = dict(d)
        for k in ("taps", "cnn_channels"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def bank_signature(self) -> dict:
        """The fields an :class:`~.data.ImageBank` depends on (cache key for banks)."""
        keys = ("taps", "pool", "hist_bins", "lowpass")
        return {k: v for k, v in self.to_dict().items() if k in keys}

    @property
    def small_size(self) -> int:
        return CONTEXT_SIZE // self.pool

    @property
    def identity_dim(self) -> int:
        return dlib_resnet.EMBEDDING_DIM + sum(dlib_resnet.TAP_SHAPES[t][0] for t in self.taps)


@dataclass
class ProxyMeta:
    """What the registry shows about a version; JSON with the weights (free-form ``extra``)."""

    prior: bool = False  # trained on natural pairs only, before any human judgment
    description: str = ""
    trained_on: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


def _region_masks(size: int, pool: int) -> torch.Tensor:
    """(R, size, size) masks, each summing to 1 (means are weighted sums)."""
    masks = torch.zeros(len(REGIONS), size, size, dtype=torch.float64)
    for r, boxes in enumerate(REGIONS.values()):
        for t, b, lft, rgt in boxes:
            masks[r, t // pool : b // pool, lft // pool : rgt // pool] = 1.0
    return (masks / masks.sum(dim=(1, 2), keepdim=True)).float()


def _opponent(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0,1] -> (luminance, red-green, yellow-blue), roughly in [0,1] each."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    return torch.stack(
        [(r + g + b) / 3.0, (r - g) / 2.0 + 0.5, (r + g - 2.0 * b) / 4.0 + 0.5], dim=1
    )


class ImageInputs(NamedTuple):
    """Per-image inputs of the pair head (rows of an :class:`~.data.ImageBank`).

    ``identity`` (N, identity_dim): frozen CFRU features; ``small`` (N, 3, 75, 75): the
    pooled context crop (the CNN's input); ``descriptors`` (N, descriptor_dim): the fixed
    colour/low-pass descriptors. None has parameters, so all three can be cached.
    """

    identity: torch.Tensor
    small: torch.Tensor
    descriptors: torch.Tensor


class AppearanceEncoder(nn.Module):
    """Trainable CNN embedding + fixed descriptors of the 75x75 pooled context crop."""

    def __init__(self, cfg: ProxyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        cin, size = 3, cfg.small_size
        for i, c in enumerate(cfg.cnn_channels):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(cin, c, k, stride=2, padding=k // 2), nn.ReLU()]
            cin, size = c, (size + 2 * (k // 2) - k) // 2 + 1
        self.cnn = nn.Sequential(*layers)
        # Flatten, not global pooling: where a colour is (hair vs clothes) matters.
        self.embed = nn.Linear(cin * size * size, cfg.appearance_dim)
        masks = _region_masks(cfg.small_size, cfg.pool)
        self.register_buffer("masks", masks.flatten(1).T.contiguous())  # (s*s, R)
        centres = (torch.arange(cfg.hist_bins, dtype=torch.float32) + 0.5) / cfg.hist_bins
        self.register_buffer("bin_centres", centres)

    @property
    def n_regions(self) -> int:
        return self.masks.shape[1]

    def descriptor_split(self) -> tuple[int, int, int]:
        """Sizes of (region stats, region histograms, low-pass image) in a descriptor."""
        r = self.n_regions
        return 6 * r, 3 * self.cfg.hist_bins * r, 3 * self.cfg.lowpass**2

    def forward(self, small: torch.Tensor) -> torch.Tensor:
        """(N, appearance_dim) learned embedding."""
        return self.embed(self.cnn((small / 255.0 - 0.5) / 0.25).flatten(1))

    def descriptors(self, small: torch.Tensor) -> torch.Tensor:
        """(N, descriptor_dim): per-region colour mean/std and soft histograms (opponent
        colours), and the low-pass image. Fixed (no parameters), differentiable."""
        n, bins = small.shape[0], self.cfg.hist_bins
        x = small / 255.0
        opp = _opponent(x).flatten(2)  # (N, 3, s*s)
        m = self.masks
        mean = opp @ m  # (N, 3, R): masks sum to 1, so a matmul is a weighted mean
        var = (opp * opp) @ m - mean**2
        std = torch.sqrt(var.clamp_min(0.0) + 1e-6)
        # Soft histograms: Gaussian votes one bin wide, normalised per pixel.
        d = (opp.unsqueeze(2) - self.bin_centres.view(1, 1, -1, 1)) * bins  # (N, 3, B, s*s)
        votes = torch.exp(-0.5 * d * d)
        votes = votes / votes.sum(dim=2, keepdim=True).clamp_min(1e-12)
        hist = votes.flatten(1, 2) @ m  # (N, 3*B, R)
        low = F.adaptive_avg_pool2d(x, self.cfg.lowpass)
        return torch.cat(
            [mean.flatten(1), std.flatten(1), hist.transpose(1, 2).flatten(1), low.flatten(1)],
            dim=1,
        ).reshape(n, -1)


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Row norms (N, 1) with a finite gradient at zero (identical images: the loop's start)."""
    return torch.sqrt((x * x).sum(dim=1, keepdim=True) + 1e-12)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt((x * x).sum(dim=1, keepdim=True) + 1e-12)


class HumanProxy(nn.Module):
    """Calibrated P(same) for pairs of context crops; see the module docstring.

    ``model(src, out)`` takes float (N, 3, 300, 300) RGB in [0, 255] and returns (N,) in
    (0, 1). The frozen CFRU is shared (``dlib_resnet.get_dlib_resnet``), not part of the
    state dict, and follows the input's device and dtype.
    """

    def __init__(self, config: ProxyConfig | None = None, meta: ProxyMeta | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ProxyConfig()
        self.meta = meta or ProxyMeta()
        unknown = [t for t in cfg.taps if t not in dlib_resnet.TAP_NAMES]
        if unknown:
            raise ValueError(f"unknown CFRU taps {unknown}")
        if CONTEXT_SIZE % cfg.pool:
            raise ValueError(f"pool {cfg.pool} does not divide {CONTEXT_SIZE}")
        self.appearance = AppearanceEncoder(cfg)
        n_stats, n_hist, n_low = self.appearance.descriptor_split()
        self.descriptor_dim = n_stats + n_hist + n_low
        r = self.appearance.n_regions
        # Fixed-size pair features (before the learned appearance embedding).
        n_vec = 2 * dlib_resnet.EMBEDDING_DIM if cfg.identity_vectors else 0
        self.n_identity_pair = n_vec + 3 + 2 * len(cfg.taps)
        self.n_descriptor_pair = n_stats + r + n_low + 2
        n_scaled = self.n_identity_pair + self.n_descriptor_pair
        # Standardisation of the hand-made pair features, fitted on training data.
        self.register_buffer("feat_mean", torch.zeros(n_scaled))
        self.register_buffer("feat_std", torch.ones(n_scaled))
        n_app = 2 * cfg.appearance_dim + self.n_descriptor_pair
        n_all = self.n_identity_pair + n_app  # inputs of the "mlp" fusion

        def mlp(n_in: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Linear(n_in, cfg.hidden),
                nn.ReLU(),
                nn.Dropout(cfg.dropout),
                nn.Linear(cfg.hidden, 1),
            )

        self.app_head = mlp(n_app)
        if cfg.fusion == "gated":
            # logit = identity evidence + gate(identity) * appearance evidence, gate >= 0:
            # appearance enters through one channel (it cannot overfit the head), weighs more
            # where the face is ambiguous, and a closer appearance never lowers P(same).
            self.id_head = mlp(self.n_identity_pair)
            self.id_linear = nn.Linear(self.n_identity_pair, 1)
            self.gate = nn.Linear(self.n_identity_pair, 1)
            with torch.no_grad():
                self.gate.weight.zero_()
                self.gate.bias.fill_(-1.0)  # softplus(-1) ~ 0.31: start identity-led
        elif cfg.fusion == "mlp":
            self.fused_head = mlp(n_all)
            # A linear path beside the MLP: the dlib distance alone is already a strong rule.
            self.fused_linear = nn.Linear(n_all, 1)
        else:
            raise ValueError(f"fusion must be 'gated' or 'mlp', got {cfg.fusion!r}")
        # Platt scaling, rows (full, appearance): P = sigmoid(a * logit + b).
        self.register_buffer("calibration", torch.tensor([[1.0, 0.0], [1.0, 0.0]]))

    @property
    def prior(self) -> bool:
        """True for a bootstrap version trained on natural pairs only."""
        return bool(self.meta.prior)

    # ---- per image -------------------------------------------------------------------------

    @staticmethod
    def _check_contexts(x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, CONTEXT_SIZE, CONTEXT_SIZE):
            raise ValueError(f"expected (N, 3, 300, 300) context crops, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError("context crops must be float tensors in [0, 255]")

    def identity_features(self, contexts: torch.Tensor) -> torch.Tensor:
        """(N, identity_dim): raw Θ0 and the pooled taps of the central recognition chip.

        Frozen (no parameters of this model); differentiable w.r.t. ``contexts``.
        """
        self._check_contexts(contexts)
        o = CHIP_OFFSET
        chips = contexts[:, :, o : o + CHIP_SIZE, o : o + CHIP_SIZE]
        cfru = dlib_resnet.get_dlib_resnet(contexts.device, contexts.dtype)
        emb, taps = cfru.features(chips, taps=True)
        pooled = [
            taps[t] if taps[t].dim() == 2 else taps[t].mean(dim=(2, 3)) for t in self.config.taps
        ]
        return torch.cat([emb, *pooled], dim=1)

    def appearance_input(self, contexts: torch.Tensor) -> torch.Tensor:
        """(N, 3, 75, 75): the context crop average-pooled (the appearance branch's input)."""
        self._check_contexts(contexts)
        return F.avg_pool2d(contexts, self.config.pool)

    def image_inputs(self, contexts: torch.Tensor, identity: bool = True) -> ImageInputs:
        """Per-image inputs from float (N, 3, 300, 300) context crops (differentiable).
        ``identity=False`` fills zeros instead of running the CFRU (appearance branch only)."""
        small = self.appearance_input(contexts)
        if identity:
            ident = self.identity_features(contexts)
        else:
            ident = contexts.new_zeros(contexts.shape[0], self.config.identity_dim)
        return ImageInputs(ident, small, self.appearance.descriptors(small))

    @torch.no_grad()
    def encode_images(
        self,
        contexts: np.ndarray | torch.Tensor | Sequence[np.ndarray],
        keys: Sequence[str],
        batch_size: int = 64,
    ) -> ImageBank:
        """An :class:`ImageBank` for these images. ``contexts``: uint8 (M, 300, 300, 3) RGB
        (an array, a memmap or a list) or a float (M, 3, 300, 300) tensor in [0, 255]."""
        if len(contexts) != len(keys):
            raise ValueError(f"{len(contexts)} images but {len(keys)} keys")
        rows: list[ImageInputs] = []
        for i in range(0, len(keys), batch_size):
            chunk = contexts[i : i + batch_size]
            x = chunk if isinstance(chunk, torch.Tensor) else context_to_tensor(np.stack(chunk))
            rows.append(self.image_inputs(x.to(self.calibration.device, self.calibration.dtype)))
        if not rows:
            raise ValueError("no images to encode")
        return ImageBank(list(keys), *(torch.cat(parts) for parts in zip(*rows, strict=True)))

    # ---- per pair --------------------------------------------------------------------------

    def _identity_pair(self, fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        d = dlib_resnet.EMBEDDING_DIM
        ea, eb = fa[:, :d], fb[:, :d]
        na, nb = _unit(ea), _unit(eb)
        dist = _norm(ea - eb)
        cos = (na * nb).sum(dim=1, keepdim=True)
        cols = [(na - nb).abs(), na * nb] if self.config.identity_vectors else []
        cols += [dist, dist**2, cos]
        start = d
        for t in self.config.taps:
            n = dlib_resnet.TAP_SHAPES[t][0]
            ta, tb = fa[:, start : start + n], fb[:, start : start + n]
            start += n
            cols.append((_unit(ta) * _unit(tb)).sum(dim=1, keepdim=True))
            norms = _norm(ta) + _norm(tb) + 1e-6
            cols.append(_norm(ta - tb) / norms)
        return torch.cat(cols, dim=1)

    def _descriptor_pair(self, da: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
        n_stats, n_hist, _ = self.appearance.descriptor_split()
        r, bins = self.appearance.n_regions, self.config.hist_bins
        dstats = (da[:, :n_stats] - db[:, :n_stats]).abs()
        ha = da[:, n_stats : n_stats + n_hist].reshape(-1, r, 3, bins)
        hb = db[:, n_stats : n_stats + n_hist].reshape(-1, r, 3, bins)
        # Histogram intersection per region (1 = same colour distribution), channel mean.
        inter = torch.minimum(ha, hb).sum(dim=3).mean(dim=2)
        dlow = (da[:, n_stats + n_hist :] - db[:, n_stats + n_hist :]).abs()
        rms = torch.sqrt(dlow.pow(2).mean(dim=1, keepdim=True) + 1e-12)
        return torch.cat([dstats, inter, dlow, rms, dstats.mean(dim=1, keepdim=True)], dim=1)

    def _scaled(self, idp: torch.Tensor, hand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scaled = (torch.cat([idp, hand], dim=1) - self.feat_mean) / self.feat_std
        return scaled[:, : self.n_identity_pair], scaled[:, self.n_identity_pair :]

    def logits_from_inputs(
        self, a: ImageInputs, b: ImageInputs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Uncalibrated (fused logit, appearance-only logit), each (N,). Symmetric in a, b."""
        idp, hand = self._scaled(
            self._identity_pair(a.identity, b.identity),
            self._descriptor_pair(a.descriptors, b.descriptors),
        )
        ga, gb = self.appearance(a.small), self.appearance(b.small)
        app = torch.cat([(ga - gb).abs(), ga * gb, hand], dim=1)
        app_logit = self.app_head(app).squeeze(1)
        if self.config.fusion == "gated":
            ident = self.id_head(idp).squeeze(1) + self.id_linear(idp).squeeze(1)
            fused = ident + F.softplus(self.gate(idp)).squeeze(1) * app_logit
        else:
            both = torch.cat([idp, app], dim=1)
            fused = self.fused_head(both).squeeze(1) + self.fused_linear(both).squeeze(1)
        return fused, app_logit

    def calibrate_logit(self, logit: torch.Tensor, branch: str = "full") -> torch.Tensor:
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
        a, b = self.calibration[BRANCHES.index(branch)]
        return a * logit + b

    def score_inputs(self, a: ImageInputs, b: ImageInputs, branch: str = "full") -> torch.Tensor:
        """Calibrated P(same) (N,) from per-image inputs."""
        fused, app = self.logits_from_inputs(a, b)
        return torch.sigmoid(self.calibrate_logit(fused if branch == "full" else app, branch))

    def forward(self, src: torch.Tensor, out: torch.Tensor, branch: str = "full") -> torch.Tensor:
        """P(same) (N,) for float (N, 3, 300, 300) context crops in [0, 255]; ``branch``
        "full" (the proxy) or "appearance" (the appearance branch alone; skips the CFRU)."""
        if src.shape != out.shape:
            raise ValueError(f"src and out shapes differ: {tuple(src.shape)} vs {tuple(out.shape)}")
        if branch not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, got {branch!r}")
        ident = branch == "full"
        return self.score_inputs(
            self.image_inputs(src, ident), self.image_inputs(out, ident), branch
        )

    @torch.no_grad()
    def score_bank(
        self,
        bank: ImageBank,
        ia: torch.Tensor,
        ib: torch.Tensor,
        branch: str = "full",
        batch_size: int = 512,
        logits: bool = False,
    ) -> torch.Tensor:
        """P(same) (or the uncalibrated logits) for index pairs into ``bank``. Call
        ``model.eval()`` first (dropout)."""
        out = []
        for i in range(0, len(ia), batch_size):
            a, b = bank.rows(ia[i : i + batch_size]), bank.rows(ib[i : i + batch_size])
            if logits:
                fused, app = self.logits_from_inputs(a, b)
                out.append(fused if branch == "full" else app)
            else:
                out.append(self.score_inputs(a, b, branch))
        return torch.cat(out) if out else torch.zeros(0)

    def init_identity_rule(
        self,
        bank: ImageBank,
        ia: torch.Tensor,
        ib: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        l2: float = 1e-3,
    ) -> None:
        """Start the gated fusion's identity path at the best linear rule on the (scaled)
        identity pair features (logistic regression on the training pairs), so training
        refines the dlib-distance rule instead of climbing to it at Adam's pace."""
        if self.config.fusion != "gated" or len(ia) < 2:
            return
        with torch.no_grad():
            a, b = bank.rows(ia), bank.rows(ib)
            idp, _ = self._scaled(
                self._identity_pair(a.identity, b.identity),
                self._descriptor_pair(a.descriptors, b.descriptors),
            )
        theta = _fit_logistic(idp, y, w, l2)
        with torch.no_grad():
            self.id_linear.weight.copy_(theta[:-1].view(1, -1))
            self.id_linear.bias.fill_(float(theta[-1]))

    @torch.no_grad()
    def fit_feature_scaling(self, bank: ImageBank, ia: torch.Tensor, ib: torch.Tensor) -> None:
        """Standardise the hand-made pair features with statistics of these (training) pairs."""
        rows = []
        for i in range(0, len(ia), 1024):
            a, b = bank.rows(ia[i : i + 1024]), bank.rows(ib[i : i + 1024])
            idp = self._identity_pair(a.identity, b.identity)
            rows.append(torch.cat([idp, self._descriptor_pair(a.descriptors, b.descriptors)], 1))
        x = torch.cat(rows)
        self.feat_mean.copy_(x.mean(dim=0))
        if len(x) > 1:
            self.feat_std.copy_(x.std(dim=0).clamp_min(1e-4))


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, l2: float) -> torch.Tensor:
    """Weighted (soft-target) logistic regression by L-BFGS; returns [weights..., bias]."""
    x, y, w = x.detach().double(), y.detach().double(), w.detach().double()
    theta = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = x @ theta[:-1] + theta[-1]
        bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        loss = (w * bce).sum() / w.sum() + l2 * (theta[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return theta.detach()


def fit_platt(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[float, float]:
    """Platt scaling (a, b) minimising weighted cross-entropy of sigmoid(a*logit + b).

    Soft targets are fine. ``a`` is kept positive (a calibration must not flip the ranking).
    """
    z = logits.detach().double()
    y = targets.detach().double()
    w = torch.ones_like(z) if weights is None else weights.detach().double()
    if len(z) < 2 or float(w.sum()) <= 0:
        return 1.0, 0.0
    log_a = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_a, b], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (
            w * F.binary_cross_entropy_with_logits(log_a.exp() * z + b, y, reduction="none")
        ).sum() / w.sum()
        loss.backward()
        return loss

    opt.step(closure)
    a, bb = float(log_a.detach().exp()), float(b.detach())
    if not (math.isfinite(a) and math.isfinite(bb)):
        return 1.0, 0.0
    return a, bb
