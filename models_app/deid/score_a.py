"""Score-A for the loop: the small :class:`ScoreAProxy` protocol the loop sees, the human
proxy (``models_app.proxy``) behind it, and a stand-in for tests.

:class:`HumanProxyScorer` wraps :class:`models_app.proxy.network.HumanProxy` and saves two of
its three network passes per iteration: the source side is encoded once (it never changes),
and the output side reuses the CFRU pass the loop already makes on the output chip for formula
A (``logit_with_features``) — the proxy's identity branch is the same frozen dlib ResNet on
the same central chip, so the numbers are those of ``model(src, out)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from models_app.proxy.data import ImageInputs


class ScoreAProxy(Protocol):
    """The human proxy as the loop sees it: two context crops (N,3,300,300) float in [0,255]
    (source, output) -> P(a person says "same") (N,), differentiable w.r.t. the output.

    Optional: ``logit(src, out)`` (log-odds; used for the gradient, which P loses when it
    saturates) and ``logit_with_features(src, out, emb, taps)`` (reuses the loop's CFRU pass
    on the output's plain chip), and ``identity_chips(out)`` with
    ``logit_with_identity(src, out, emb, taps)`` (the loop adds the identity branch's own
    chips to its CFRU batch); :class:`HumanProxyScorer` has all of them."""

    def __call__(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor: ...


class _LogitScorer:
    """P(same) is the sigmoid of the scorer's calibrated log-odds."""

    def logit(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(src, out))


class HumanProxyScorer(_LogitScorer):
    """``scorer(src, out)`` -> P(same); ``logit``/``logit_with_features`` -> its log-odds."""

    def __init__(self, model: Any, branch: str = "full") -> None:
        self.model = model.eval().requires_grad_(False)
        self.branch = branch
        # The source's encoding, cached for the tensor object it came from (a strong reference:
        # a freed tensor's address can be reused by the next job's source, so an address-based
        # key could silently score against another face).
        self._src_tensor: torch.Tensor | None = None
        self._src_version = -1
        self._src: Any = None

    def _source_inputs(self, src: torch.Tensor) -> Any:
        if src is not self._src_tensor or src._version != self._src_version:
            with torch.no_grad():
                self._src = self.model.image_inputs(src, self.branch == "full")
            self._src_tensor, self._src_version = src, src._version
        return self._src

    def _logit(self, a: Any, b: Any) -> torch.Tensor:
        fused, app = self.model.logits_from_inputs(a, b)
        return self.model.calibrate_logit(fused if self.branch == "full" else app, self.branch)

    def logit(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Calibrated log-odds of "same" (N,): sigmoid of it is P(same). The loop descends
        this, not P, because P saturates at 1.0 in float32 for clear matches (zero gradient)."""
        b = self.model.image_inputs(out, self.branch == "full")
        return self._logit(self._source_inputs(src), b)

    def logit_with_features(
        self,
        src: torch.Tensor,
        out: torch.Tensor,
        emb: torch.Tensor,
        taps: Mapping[str, torch.Tensor],
    ) -> torch.Tensor:
        """:meth:`logit` with the output's CFRU features (Θ0 and taps of its plain central
        chip) given, as ``DlibResNet.features`` returns them. A proxy whose identity branch
        sees another chip (luminance, low-passed) needs its own CFRU pass (the given
        features are the plain RGB chip's)."""
        if not self.model.identity_on_plain_chip:
            return self.logit(src, out)
        return self.logit_with_identity(src, out, emb, taps)

    def identity_chips(self, out: torch.Tensor) -> torch.Tensor | None:
        """(N, 3, 150, 150): the chips of ``out`` the identity branch runs the dlib CFRU on,
        when they are not the plain RGB central chip (None then): a caller that runs the
        CFRU anyway adds them to its own batch and passes the features to
        :meth:`logit_with_identity`, one batched pass instead of two."""
        m = self.model
        return None if m.identity_on_plain_chip else m.identity_chip(out)

    def logit_with_identity(
        self,
        src: torch.Tensor,
        out: torch.Tensor,
        emb: torch.Tensor,
        taps: Mapping[str, torch.Tensor],
    ) -> torch.Tensor:
        """:meth:`logit` with the dlib CFRU's features of the identity branch's own chips
        (:meth:`identity_chips`, or the plain central chip when that is None) given."""
        m = self.model
        small = m.appearance_input(out)
        b = ImageInputs(m.identity_from_features(emb, taps), small, m.image_descriptors(out, small))
        return self._logit(self._source_inputs(src), b)


class AppearanceStandIn:
    """A tiny differentiable stand-in proxy for tests: P(same) falls as the low-frequency
    appearance (8x8 colour layout) of the two crops drifts apart. Not a model of people."""

    def __init__(self, scale: float = 6.0, offset: float = 3.0) -> None:
        self.scale = scale
        self.offset = offset

    def __call__(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        a = F.adaptive_avg_pool2d(src, 8)
        b = F.adaptive_avg_pool2d(out, 8)
        rms = ((a - b).pow(2).mean(dim=(1, 2, 3)) + 1e-6).sqrt()  # eps: finite grad at 0
        return torch.sigmoid(self.offset - rms / self.scale)


class EnsembleScorer(_LogitScorer):
    """Several proxies as one: the mean of their calibrated log-odds. Changes that lower it
    must fool every member, so they are less specific to one network's quirks (the held-out
    proxy of the benchmark is the check)."""

    def __init__(self, scorers: list[HumanProxyScorer]) -> None:
        if not scorers:
            raise ValueError("an ensemble needs at least one proxy")
        self.scorers = scorers

    def logit(self, src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.stack([s.logit(src, out) for s in self.scorers]).mean(0)

    def logit_with_features(
        self,
        src: torch.Tensor,
        out: torch.Tensor,
        emb: torch.Tensor,
        taps: Mapping[str, torch.Tensor],
    ) -> torch.Tensor:
        return torch.stack(
            [s.logit_with_features(src, out, emb, taps) for s in self.scorers]
        ).mean(0)

    def identity_chips(self, out: torch.Tensor) -> torch.Tensor | None:
        """Every member's identity chips, member after member (None if any member reads the
        plain chip: :meth:`logit_with_features` serves those)."""
        chips = [s.identity_chips(out) for s in self.scorers]
        if any(c is None for c in chips):
            return None
        return torch.cat(chips)  # type: ignore[arg-type]

    def logit_with_identity(
        self,
        src: torch.Tensor,
        out: torch.Tensor,
        emb: torch.Tensor,
        taps: Mapping[str, torch.Tensor],
    ) -> torch.Tensor:
        k = out.shape[0]
        return torch.stack([
            s.logit_with_identity(src, out, emb[i * k:(i + 1) * k],
                                  {n: v[i * k:(i + 1) * k] for n, v in taps.items()})
            for i, s in enumerate(self.scorers)
        ]).mean(0)
