"""dlib's ResNet face recogniser (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

Pure computation (no Django import):

* :class:`DlibResNet`, an ``nn.Module`` that reproduces dlib's forward pass (within ~1e-6 of
  ``compute_face_descriptor``) and is differentiable w.r.t. the input; its weights come from
  the file through :func:`.dlib_dat.read_dlib_resnet`;
* multi-scale taps: :meth:`DlibResNet.features` returns Θ0 (the 128-d embedding) and the named
  feature maps Θ1..Θk that formula A compares.

Inputs are aligned 150x150 RGB chips as ``dlib.get_face_chip(size=150, padding=0.25)`` makes
them (see ``faces.detect_and_align``), as floats in [0, 255], NCHW.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .chips import CHIP_SIZE
from .dlib_dat import EMBEDDING_DIM, LEVELS, DatFormatError, DlibResNetWeights, read_dlib_resnet

# dlib's loss_metric distance threshold: same person when ||a - b|| < 0.6.
DLIB_DISTANCE_THRESHOLD = 0.6

TAP_NAMES: tuple[str, ...] = ("stem", "level1", "level2", "level3", "level4", "level5", "pooled")
TAP_SHAPES: dict[str, tuple[int, ...]] = {
    "stem": (32, 35, 35),
    "level1": (32, 35, 35),
    "level2": (64, 17, 17),
    "level3": (128, 8, 8),
    "level4": (256, 4, 4),
    "level5": (256, 2, 2),
    "pooled": (256,),
}


def pool_tap(tap: torch.Tensor) -> torch.Tensor:
    """A tap as one vector per chip: feature maps (N,C,H,W) are averaged over space, the
    already pooled (N,C) tap is returned as it is."""
    return tap if tap.dim() == 2 else tap.mean(dim=(2, 3))


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: sum over the larger shape, the smaller tensor zero-filled at the end."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class _Block(nn.Module):
    """relu(add_prev(affine(con(relu(affine(con(x))))), shortcut(x))), affines folded."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_prev(y, shortcut))


class DlibResNet(nn.Module):
    """dlib_face_recognition_resnet_model_v1 as a differentiable torch module.

    Input: (N, 3, 150, 150) float RGB in [0, 255] (aligned chips). Output: (N, 128), not
    unit length, directly comparable with dlib's descriptors (Euclidean distance, 0.6).
    Parameters are frozen (``requires_grad=False``): gradients flow to the input only.
    """

    def __init__(self, weights: DlibResNetWeights | None = None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        cin = 32
        levels = []
        for li, (n, blocks) in enumerate(LEVELS):
            levels.append(
                nn.Sequential(
                    *[_Block(cin if b == 0 else n, n, li > 0 and b == 0) for b in range(blocks)]
                )
            )
            cin = n
        self.levels = nn.ModuleList(levels)
        self.fc = nn.Linear(cin, EMBEDDING_DIM, bias=False)
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.distance_threshold = DLIB_DISTANCE_THRESHOLD
        if weights is not None:
            self.load_dlib_weights(weights)
        self.requires_grad_(False)

    @torch.no_grad()
    def load_dlib_weights(self, weights: DlibResNetWeights) -> None:
        convs = [self.stem] + [c for lvl in self.levels for b in lvl for c in (b.conv1, b.conv2)]
        if len(convs) != len(weights.convs) or len(weights.affines) != len(convs):
            raise DatFormatError("weights do not fit the architecture")
        for conv, (w, b), (gamma, beta) in zip(convs, weights.convs, weights.affines, strict=True):
            # Fold the (already batch-norm-folded) affine into the conv: one op less per layer.
            # Done in float64 so the folded weights round once.
            g = gamma.astype(np.float64)
            wf = w.astype(np.float64) * g[:, None, None, None]
            bf = b.astype(np.float64) * g + beta.astype(np.float64)
            conv.weight.copy_(torch.from_numpy(wf))
            conv.bias.copy_(torch.from_numpy(bf))
        assert weights.fc is not None
        self.fc.weight.copy_(torch.from_numpy(weights.fc))
        self.mean.copy_(torch.tensor(weights.channel_means).view(1, 3, 1, 1))
        self.distance_threshold = float(weights.distance_threshold)

    def normalise(self, chips: torch.Tensor) -> torch.Tensor:
        # dlib's input layer: (pixel - channel mean) / 256, RGB order.
        return (chips - self.mean) / 256.0

    def features(
        self, chips: torch.Tensor, taps: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Θ0 (N,128) and the named taps (see ``TAP_NAMES``/``TAP_SHAPES``) in one pass."""
        if chips.dim() != 4 or chips.shape[1:] != (3, CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"expected (N, 3, 150, 150) chips, got {tuple(chips.shape)}")
        out: dict[str, torch.Tensor] = {}
        x = F.max_pool2d(F.relu(self.stem(self.normalise(chips))), 3, 2)
        if taps:
            out["stem"] = x
        for i, level in enumerate(self.levels):
            x = level(x)
            if taps:
                out[f"level{i + 1}"] = x
        pooled = x.mean(dim=(2, 3))
        if taps:
            out["pooled"] = pooled
        return self.fc(pooled), out

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        return self.features(chips, taps=False)[0]


def load_dlib_resnet(path: str | Path | None = None) -> DlibResNet:
    """A new module with the weights read from ``path`` (default: the installed package)."""
    return DlibResNet(read_dlib_resnet(path)).eval()


_cache_lock = threading.Lock()
_weights_cache: list[DlibResNetWeights] = []
_module_cache: dict[tuple[str, torch.dtype], DlibResNet] = {}


def get_dlib_resnet(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> DlibResNet:
    """A shared, frozen, eval-mode module per (device, dtype); the file is parsed once."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:  # "cuda" and "cuda:0" share one copy
        dev = torch.device("cuda", torch.cuda.current_device())
    key = (str(dev), dtype)
    with _cache_lock:
        model = _module_cache.get(key)
        if model is None:
            if not _weights_cache:
                _weights_cache.append(read_dlib_resnet())
            model = DlibResNet(_weights_cache[0]).to(device=dev, dtype=dtype).eval()
            _module_cache[key] = model
    return model


def chips_to_tensor(
    chips: np.ndarray | list[np.ndarray],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 chips (N,150,150,3) or (150,150,3) RGB -> float (N,3,150,150) in [0, 255]."""
    arr = np.asarray(chips)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(f"expected (N, 150, 150, 3) RGB chips, got {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(device=device)
    return t.permute(0, 3, 1, 2).to(dtype).contiguous()


def embed_with_taps(
    chips: torch.Tensor, model: DlibResNet | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Θ0 embedding and named taps Θ1..Θk for (N,3,150,150) float chips in [0,255].

    Differentiable w.r.t. ``chips``; uses the shared module on the chips' device and dtype
    unless ``model`` is given. This is the entry point for formula A.
    """
    if model is None:
        model = get_dlib_resnet(chips.device, chips.dtype)
    return model.features(chips, taps=True)
