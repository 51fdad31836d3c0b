"""The JSON stored beside a human proxy's weights: its architecture and its registry facts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from models_app.vision import dlib_resnet
from models_app.vision.chips import CONTEXT_SIZE

COLOURS = ("luminance", "rgb")


@dataclass
class ProxyConfig:
    """Architecture of a :class:`~.network.HumanProxy`; stored as JSON with the weights."""

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
    # What the appearance branch sees of colour: "luminance" (BT.601 luma on all three
    # channels; people ignore hue that keeps luminance, so a recolouring earns nothing) or
    # "rgb" (the first versions; a stored config without this key is one of those).
    colour: str = "luminance"
    # The appearance branch sees the crop averaged with its mirror image: people ignore
    # mirroring, so which side the hair is parted on earns nothing (False: first versions).
    mirror_symmetric: bool = True

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"colour must be one of {COLOURS}, got {self.colour!r}")

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
        keys = ("taps", "pool", "hist_bins", "lowpass", "colour", "mirror_symmetric")
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
