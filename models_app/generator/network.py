"""The generator network (model 571 of FIG. 5): a small CNN that maps the source's context
crop to the parameters of the engine's parameterisation, rendered by that parameterisation.

Predicting the parameters, not pixels, keeps the outputs as natural as the loop's (the same
bounded, perceptible transforms) and makes the parameterisation a plug: whichever one the
job configures (``style`` by default) is built by name, and the network's head has its
parameter count. The head starts at zero, so an untrained generator is the identity — the
same start as the loop's (``theta = 0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models_app.deid.config import DeidConfig
from models_app.deid.params import (
    PARAMETERISATIONS,
    Parameterisation,
    StyleRanges,
    build_parameterisation,
)

# A parameterisation with more parameters than this is per-pixel (``pixels``): a linear head
# onto it would be a network of its own (use an image-to-image generator for that).
MAX_HEAD_PARAMS = 20000


class GeneratorConfigError(ValueError):
    """A generator setting is invalid; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class GeneratorConfig:
    """The network's shape and the parameterisation it predicts (with that
    parameterisation's settings, which fix what a parameter means)."""

    parameterisation: str = "style"
    style_ranges: Mapping[str, Any] = field(default_factory=dict)
    pixels_eps: float = 12.0
    input_size: int = 64  # the context crop is seen at this resolution
    width: int = 32  # channels of the first stage (doubled per stage, 4 stages)
    context_size: int = 300

    def validate(self) -> None:
        if self.parameterisation not in PARAMETERISATIONS:
            raise GeneratorConfigError(
                "parameterisation",
                f"unknown {self.parameterisation!r}; one of {sorted(PARAMETERISATIONS)}",
            )
        if not (isinstance(self.input_size, int) and 16 <= self.input_size <= 300):
            raise GeneratorConfigError("input_size", "must be an integer in [16, 300]")
        if not (isinstance(self.width, int) and 4 <= self.width <= 256):
            raise GeneratorConfigError("width", "must be an integer in [4, 256]")
        try:
            StyleRanges(**dict(self.style_ranges))
        except TypeError as exc:
            raise GeneratorConfigError("style_ranges", str(exc)) from None

    @classmethod
    def for_deid(cls, cfg: DeidConfig, **kw: Any) -> GeneratorConfig:
        """The generator of a job configuration's parameterisation (and its settings)."""
        return cls(
            parameterisation=cfg.parameterisation,
            style_ranges=dict(cfg.style_ranges),
            pixels_eps=cfg.pixels_eps,
            **kw,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["style_ranges"] = dict(self.style_ranges)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> GeneratorConfig:
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise GeneratorConfigError(unknown[0], "unknown generator setting")
        return cls(**d)


def build_plug(cfg: GeneratorConfig) -> Parameterisation:
    """The parameterisation the generator predicts, built as the loop builds it."""
    if cfg.parameterisation == "pixels":
        kw: dict[str, Any] = {"eps": cfg.pixels_eps}
    elif cfg.parameterisation == "style":
        kw = {"ranges": StyleRanges(**dict(cfg.style_ranges))}
    else:  # another plug: its defaults
        kw = {}
    try:
        return build_parameterisation(cfg.parameterisation, cfg.context_size, **kw)
    except TypeError as exc:  # a plug that needs per-face inputs (e.g. donors)
        raise GeneratorConfigError(
            "parameterisation",
            f"{cfg.parameterisation!r} cannot be predicted by the parameter generator: {exc}",
        ) from None


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
    )


class ParamGenerator(nn.Module):
    """``generator(context) -> theta``; :meth:`render` applies theta with the plug.

    Only the encoder and head are weights (``weights()``); the parameterisation is rebuilt
    from the config (its buffers are fixed patterns and masks, not learned)."""

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = config or GeneratorConfig()
        self.config.validate()
        self.plug = build_plug(self.config)
        n = self.plug.n_params
        if n > MAX_HEAD_PARAMS:
            raise GeneratorConfigError(
                "parameterisation",
                f"{self.config.parameterisation!r} has {n} parameters per face; the parameter "
                f"generator predicts at most {MAX_HEAD_PARAMS}",
            )
        w = self.config.width
        self.encoder = nn.Sequential(
            _stage(3, w), _stage(w, 2 * w), _stage(2 * w, 4 * w), _stage(4 * w, 4 * w)
        )
        self.head = nn.Linear(4 * w, n)
        # Zero head: theta = 0 is the identity, the loop's own start.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def n_params(self) -> int:
        return self.plug.n_params

    def weights(self) -> dict[str, torch.Tensor]:
        """The learned tensors (encoder and head), by name."""
        return {
            k: v for k, v in self.state_dict().items() if k.startswith(("encoder.", "head."))
        }

    def load_weights(self, tensors: Mapping[str, torch.Tensor]) -> None:
        missing = set(self.weights()) - set(tensors)
        extra = set(tensors) - set(self.weights())
        if missing or extra:
            raise ValueError(f"weights do not fit: missing {sorted(missing)[:3]}, "
                             f"unexpected {sorted(extra)[:3]}")
        self.load_state_dict(dict(tensors), strict=False)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) float in [0,255] -> theta (N,P)."""
        x = context / 127.5 - 1.0
        s = self.config.input_size
        if x.shape[-1] != s or x.shape[-2] != s:
            x = F.interpolate(x, size=(s, s), mode="bilinear", antialias=True,
                              align_corners=False)
        return self.head(self.encoder(x).mean(dim=(2, 3)))

    def render(
        self, context: torch.Tensor, theta: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The output image (N,3,H,W) float [0,255]; changes only through ``mask``
        (N,1,H,W) where given (the loop's change mask: what survives compositing)."""
        out = self.plug.render(context, theta)
        return out if mask is None else torch.lerp(context, out, mask)
