"""The JSON stored beside a human proxy's weights: its architecture and its registry facts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from models_app.vision import dlib_resnet
from models_app.vision.chips import CONTEXT_SIZE

COLOURS = ("luminance", "rgb")


@dataclass
class ProxyConfig:
    """Architecture of a :class:`~.network.HumanProxy`; stored as JSON with the weights."""

    # The CFRU's multi-scale taps compared besides Θ0 (cosines and relative distances of
    # their pooled vectors). None by default: on LFW they add nothing to the dlib distance
    # (BENCHMARKS.md, human proxy: 98.75 % vs 98.80 %), and they are what a 4-grey-level
    # attack moves while Θ0, and with it score-B, stays put (perceptual battery section:
    # `pixels` at ε = 4). Versions stored with taps keep them.
    taps: tuple[str, ...] = ()
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
    # "and" (default): P(same) = sigmoid(identity logit) x sigmoid(appearance logit), so
    # appearance can veto a face the recogniser still matches (what de-identification
    # makes); "gated": identity logit + softplus(gate(identity)) x appearance logit, whose
    # gate, learnt on natural pairs, shuts appearance out where the match is clear (the
    # default until 2026-12-03); "mlp": one MLP over all pair features (overfits ~5k pairs).
    fusion: str = "and"
    # What the appearance branch sees of colour: "luminance" (BT.601 luma on all three
    # channels; people ignore hue that keeps luminance, so a recolouring earns nothing) or
    # "rgb" (the first versions; a stored config without this key is one of those).
    colour: str = "luminance"
    # The appearance branch sees the crop averaged with its mirror image: people ignore
    # mirroring, so which side the hair is parted on earns nothing (False: first versions).
    mirror_symmetric: bool = True
    # What the identity branch's CFRU sees: "luminance" (as the appearance branch: a hue
    # change earns nothing) or "rgb" (the photo's own chip, score-B's evidence). Stored
    # versions without this key saw what their appearance branch saw (``colour``). With
    # the taps gone both resist the ε = 4 attack (BENCHMARKS.md); luminance keeps hue
    # invariance exact.
    identity_colour: str = "luminance"
    # Gaussian low-pass (σ in pixels of the 150 recognition chip; 0: none) before the
    # identity branch's CFRU: people resolve identity in 8-16 cycles per face width
    # (Näsänen 1999), the face is ~100 px wide in the chip, and σ = 1 keeps ~60 % of 16
    # cycles while removing most of a few grey levels of pixel noise. Off by default: with
    # the taps kept it did not stop the attack (1 of 8 faces, BENCHMARKS.md), and without
    # them it is not needed.
    identity_blur: float = 0.0
    # Band-passed luminance maps (1-16 cycles per face width; inner face, outline,
    # surroundings) compared by correlation as appearance pair features
    # (:mod:`.structure`): spatial structure a few hundred judgments can weigh, which the
    # pooled CNN input cannot resolve above ~12 c/fw. Stored versions without this key
    # have none.
    structure: bool = True

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"colour must be one of {COLOURS}, got {self.colour!r}")
        if self.identity_colour not in COLOURS:
            raise ValueError(
                f"identity_colour must be one of {COLOURS}, got {self.identity_colour!r}"
            )
        v = self.identity_blur
        if not (isinstance(v, int | float) and 0.0 <= v <= 8.0):
            raise ValueError(f"identity_blur must be in [0, 8] px, got {v!r}")

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
        keys = ("taps", "pool", "hist_bins", "lowpass", "colour", "mirror_symmetric",
                "identity_colour", "identity_blur", "structure")
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
