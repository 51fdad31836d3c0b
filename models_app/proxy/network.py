"""The human proxy network: P(a person says the two faces are the same person) = score-A.

Siamese over the two images' context crops (``faces.context_crop``: 300x300, dlib alignment,
padding 1.0, so hair, ears, clothes and background show), with two branches:

* identity — the FROZEN dlib-torch CFRU (``dlib_resnet``) on the central 150x150 window of
  each context crop (the recognition chip, cut by slicing so the gradient reaches the image;
  luminance or RGB, optionally low-passed: :meth:`HumanProxy.identity_chip`): Θ0 compared
  by the dlib distance and cosine, plus, for the configured ``taps`` (none by default: an
  imperceptible attack moves them while Θ0 stays), per-tap cosines and relative distances
  of the global-average-pooled taps (optionally also |Δ| and products of the normalised
  Θ0: ``identity_vectors``);
* appearance — trainable, on the context crop average-pooled to 75x75 (low frequencies):
  :class:`~.appearance.AppearanceEncoder`.

An appearance head turns the appearance pair features into a logit of its own (trained with
an auxiliary loss, calibrated separately: ``branch="appearance"``). The fused logit (default
``fusion="gated"``) is ``identity(id) + softplus(gate(id)) * appearance``, with ``id`` the
scalar identity pair features: appearance evidence enters through one non-negative channel
whose weight depends on how clear the face evidence is. Platt scaling
``sigmoid(a * logit + b)`` (:mod:`.calibration`) makes it a calibrated P(same).

Everything is differentiable w.r.t. both input images (the de-identification loop descends
score-A w.r.t. its output image). Per-image work splits into :meth:`identity_features` (frozen,
cacheable) and :meth:`appearance_input` (a fixed pooling), so training runs on an
:class:`~.data.ImageBank` and gives the same numbers as :meth:`forward` on images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models_app.vision import dlib_resnet
from models_app.vision.battery import LUMA
from models_app.vision.chips import CONTEXT_SIZE, central_chip
from models_app.vision.filters import gaussian_blur

from .appearance import AppearanceEncoder
from .config import ProxyConfig, ProxyMeta
from .data import ImageBank, ImageInputs, context_to_tensor
from .structure import StructureMaps

BRANCHES = ("full", "appearance")


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Row norms (N, 1) with a finite gradient at zero (identical images: the loop's start)."""
    return torch.sqrt((x * x).sum(dim=1, keepdim=True) + 1e-12)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / _norm(x)


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
        self.structure = StructureMaps() if cfg.structure else None
        n_struct_pair = self.structure.n_pair if self.structure else 0
        # An image's descriptors: the appearance encoder's, then the structure maps.
        self.appearance_descriptor_dim = n_stats + n_hist + n_low
        self.descriptor_dim = self.appearance_descriptor_dim + (
            self.structure.dim if self.structure else 0
        )
        r = self.appearance.n_regions
        # Fixed-size pair features (before the learned appearance embedding).
        n_vec = 2 * dlib_resnet.EMBEDDING_DIM if cfg.identity_vectors else 0
        self.n_identity_pair = n_vec + 3 + 2 * len(cfg.taps)
        self.n_descriptor_pair = n_stats + r + n_low + 2 + n_struct_pair
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
        if cfg.fusion in ("gated", "and"):
            self.id_head = mlp(self.n_identity_pair)
            self.id_linear = nn.Linear(self.n_identity_pair, 1)
        if cfg.fusion == "gated":
            # logit = identity evidence + gate(identity) * appearance evidence, gate >= 0:
            # appearance enters through one channel (it cannot overfit the head), weighs more
            # where the face is ambiguous, and a closer appearance never lowers P(same).
            self.gate = nn.Linear(self.n_identity_pair, 1)
            with torch.no_grad():
                self.gate.weight.zero_()
                self.gate.bias.fill_(-1.0)  # softplus(-1) ~ 0.31: start identity-led
        elif cfg.fusion == "and":
            # P(same) = P_identity x P_appearance: both must say "same". Natural pairs never
            # show a face the recogniser matches that people call different, so the gate
            # of "gated" learns to ignore appearance exactly where de-identified outputs
            # live (a clear identity match); here appearance can always veto, and judgments
            # of outputs teach it when.
            pass
        elif cfg.fusion == "mlp":
            self.fused_head = mlp(n_all)
            # A linear path beside the MLP: the dlib distance alone is already a strong rule.
            self.fused_linear = nn.Linear(n_all, 1)
        else:
            raise ValueError(f"fusion must be 'gated', 'and' or 'mlp', got {cfg.fusion!r}")
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
        cfru = dlib_resnet.get_dlib_resnet(contexts.device, contexts.dtype)
        return self.identity_from_features(*cfru.features(self.identity_chip(contexts), taps=True))

    def identity_chip(self, contexts: torch.Tensor) -> torch.Tensor:
        """(N, 3, 150, 150): the central recognition chip as the identity branch's CFRU sees
        it (``identity_colour``, then the ``identity_blur`` low-pass)."""
        cfg = self.config
        seen = contexts if cfg.identity_colour == "rgb" else self._luminance(contexts)
        chip = central_chip(seen)
        return gaussian_blur(chip, cfg.identity_blur) if cfg.identity_blur > 0 else chip

    @property
    def identity_on_plain_chip(self) -> bool:
        """True when the identity features are the CFRU's on the plain RGB central chip (a
        caller that already ran the CFRU there may pass its features on)."""
        return self.config.identity_colour == "rgb" and self.config.identity_blur == 0

    def identity_from_features(
        self, emb: torch.Tensor, taps: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        """(N, identity_dim) from a CFRU pass already made on the central chips (Θ0 and the
        taps as ``DlibResNet.features`` returns them): Θ0 and this config's pooled taps."""
        return torch.cat([emb, *(dlib_resnet.pool_tap(taps[t]) for t in self.config.taps)], dim=1)

    def appearance_input(self, contexts: torch.Tensor) -> torch.Tensor:
        """(N, 3, 75, 75): the context crop as seen (:meth:`as_seen`), average-pooled and,
        by default, averaged with its mirror image (the appearance branch's input)."""
        self._check_contexts(contexts)
        small = F.avg_pool2d(self.as_seen(contexts), self.config.pool)
        if self.config.mirror_symmetric:
            small = (small + small.flip(-1)) / 2
        return small

    def as_seen(self, contexts: torch.Tensor) -> torch.Tensor:
        """The crops as both branches see them: luminance on all three channels unless the
        config says "rgb" (people ignore hue that keeps luminance; the CFRU alone does not)."""
        if self.config.colour != "luminance":
            return contexts
        return self._luminance(contexts)

    @staticmethod
    def _luminance(contexts: torch.Tensor) -> torch.Tensor:
        luma = contexts.new_tensor(LUMA).view(1, 3, 1, 1)
        return (contexts * luma).sum(dim=1, keepdim=True).repeat(1, 3, 1, 1)

    def image_inputs(self, contexts: torch.Tensor, identity: bool = True) -> ImageInputs:
        """Per-image inputs from float (N, 3, 300, 300) context crops (differentiable).
        ``identity=False`` fills zeros instead of running the CFRU (appearance branch only)."""
        small = self.appearance_input(contexts)
        if identity:
            ident = self.identity_features(contexts)
        else:
            ident = contexts.new_zeros(contexts.shape[0], self.config.identity_dim)
        return ImageInputs(ident, small, self.image_descriptors(contexts, small))

    def image_descriptors(self, contexts: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
        """(N, descriptor_dim): the appearance encoder's fixed descriptors of ``small`` (the
        :meth:`appearance_input` of ``contexts``), then the structure maps of the contexts'
        luminance when the config has them. Differentiable."""
        desc = self.appearance.descriptors(small)
        if self.structure is None:
            return desc
        return torch.cat([desc, self.structure.maps(self._luminance(contexts)[:, :1])], dim=1)

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
        end = self.appearance_descriptor_dim
        dlow = (da[:, n_stats + n_hist : end] - db[:, n_stats + n_hist : end]).abs()
        rms = torch.sqrt(dlow.pow(2).mean(dim=1, keepdim=True) + 1e-12)
        cols = [dstats, inter, dlow, rms, dstats.mean(dim=1, keepdim=True)]
        if self.structure is not None:
            cols.append(self.structure.pair_features(da[:, end:], db[:, end:]))
        return torch.cat(cols, dim=1)

    def _pair_features(self, a: ImageInputs, b: ImageInputs) -> torch.Tensor:
        """The hand-made pair features, unscaled: identity pair features, then descriptors'."""
        idp = self._identity_pair(a.identity, b.identity)
        return torch.cat([idp, self._descriptor_pair(a.descriptors, b.descriptors)], dim=1)

    def _scaled(self, a: ImageInputs, b: ImageInputs) -> tuple[torch.Tensor, torch.Tensor]:
        """The standardised pair features, split into (identity, descriptor) parts."""
        scaled = (self._pair_features(a, b) - self.feat_mean) / self.feat_std
        return scaled[:, : self.n_identity_pair], scaled[:, self.n_identity_pair :]

    def logits_from_inputs(
        self, a: ImageInputs, b: ImageInputs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Uncalibrated (fused logit, appearance-only logit), each (N,). Symmetric in a, b."""
        idp, hand = self._scaled(a, b)
        ga, gb = self.appearance(a.small), self.appearance(b.small)
        app = torch.cat([(ga - gb).abs(), ga * gb, hand], dim=1)
        app_logit = self.app_head(app).squeeze(1)
        if self.config.fusion == "gated":
            fused = self._identity_logit(idp) + F.softplus(self.gate(idp)).squeeze(1) * app_logit
        elif self.config.fusion == "and":
            fused = _and_logit(self._identity_logit(idp), app_logit)
        else:
            both = torch.cat([idp, app], dim=1)
            fused = self.fused_head(both).squeeze(1) + self.fused_linear(both).squeeze(1)
        return fused, app_logit

    def _identity_logit(self, idp: torch.Tensor) -> torch.Tensor:
        """The identity path's logit (N,) from the scaled identity pair features ("gated"
        and "and" fusions)."""
        return self.id_head(idp).squeeze(1) + self.id_linear(idp).squeeze(1)

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
        if self.config.fusion not in ("gated", "and") or len(ia) < 2:
            return
        with torch.no_grad():
            idp, _ = self._scaled(bank.rows(ia), bank.rows(ib))
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
            rows.append(self._pair_features(a, b))
        x = torch.cat(rows)
        self.feat_mean.copy_(x.mean(dim=0))
        if len(x) > 1:
            self.feat_std.copy_(x.std(dim=0).clamp_min(1e-4))


def _and_logit(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logit(sigmoid(x) * sigmoid(y)), computed in log space (stable for large |x|, |y|)."""
    lp = (F.logsigmoid(x) + F.logsigmoid(y)).clamp_max(-1e-7)
    return lp - torch.log(-torch.expm1(lp))


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
