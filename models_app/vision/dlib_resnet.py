"""dlib's ResNet face recogniser (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

Three parts, all pure computation (no Django import):

* a reader for dlib's serialisation format, written from the format itself (no dlib call),
  that checks every wrapper version and layer type against the one architecture it knows and
  refuses anything else with :class:`DatFormatError`;
* :class:`DlibResNet`, an ``nn.Module`` that reproduces dlib's forward pass (within ~1e-6 of
  ``compute_face_descriptor``) and is differentiable w.r.t. the input;
* multi-scale taps: :meth:`DlibResNet.features` returns Θ0 (the 128-d embedding) and the named
  feature maps Θ1..Θk that formula A compares.

Inputs are aligned 150x150 RGB chips as ``dlib.get_face_chip(size=150, padding=0.25)`` makes
them (see ``faces.detect_and_align``), as floats in [0, 255], NCHW.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MODEL_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
CHIP_SIZE = 150
EMBEDDING_DIM = 128
# dlib's loss_metric distance threshold: same person when ||a - b|| < 0.6.
DLIB_DISTANCE_THRESHOLD = 0.6

# Residual levels from the input outwards: (filters, blocks). The first block of every level
# but the first downsamples (3x3 stride-2 conv, 2x2 average-pooled shortcut).
LEVELS: tuple[tuple[int, int], ...] = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))
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


class DatFormatError(ValueError):
    """The file is not dlib's ResNet face recognition model (or it is damaged)."""


def default_model_path() -> Path:
    """The weights shipped by the installed ``face_recognition_models`` package (CC0)."""
    # Located without importing the package: its __init__ pulls in the deprecated
    # pkg_resources just to build this path.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the face_recognition_models package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILENAME


# --------------------------------------------------------------------------------------------
# Low-level decoding of dlib's serialisation primitives.
# --------------------------------------------------------------------------------------------


class _Stream:
    def __init__(self, data: bytes, source: str) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def fail(self, what: str) -> DatFormatError:
        return DatFormatError(
            f"{self.source}: not dlib's ResNet face recognition model "
            f"({MODEL_FILENAME}): {what} (at byte {self.pos})"
        )

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(
                f"file truncated while reading {what} "
                f"(needs {n} bytes, {len(self.data) - self.pos} left)"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int_(self, what: str = "an integer") -> int:
        ctrl = self.take(1, what)[0]
        n = ctrl & 0x0F
        # Unused control bits set, or more than 8 bytes: not dlib's integer encoding.
        if ctrl & 0x70 or n > 8:
            raise self.fail(f"bad integer control byte 0x{ctrl:02x} while reading {what}")
        value = int.from_bytes(self.take(n, what), "little")
        return -value if ctrl & 0x80 else value

    def float_(self, what: str = "a float") -> float:
        mantissa = self.int_(what)
        exponent = self.int_(what)
        if exponent in (32000, 32001, 32002):
            return (float("inf"), float("-inf"), float("nan"))[exponent - 32000]
        return float(np.ldexp(float(mantissa), exponent))

    def str_(self, what: str = "a string", max_len: int = 64) -> str:
        n = self.int_(what)
        if not 0 <= n <= max_len:
            raise self.fail(f"implausible string length {n} while reading {what}")
        raw = bytes(self.take(n, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"non-ASCII bytes while reading {what}") from None

    def bool_(self, what: str = "a boolean") -> bool:
        c = self.take(1, what)[0]
        if c not in (0x30, 0x31):
            raise self.fail(f"bad boolean byte 0x{c:02x} while reading {what}")
        return c == 0x31

    def expect_int(self, expected: int, what: str) -> None:
        got = self.int_(what)
        if got != expected:
            raise self.fail(f"expected {what} = {expected}, found {got}")

    def expect_str(self, expected: str, what: str) -> None:
        got = self.str_(what)
        if got != expected:
            raise self.fail(f"expected {what} {expected!r}, found {got!r}")

    def tensor(self, what: str) -> np.ndarray:
        self.expect_int(2, f"tensor version of {what}")
        shape = tuple(self.int_(f"tensor shape of {what}") for _ in range(4))
        if any(d < 0 for d in shape):
            raise self.fail(f"negative tensor shape {shape} in {what}")
        count = math.prod(shape)
        raw = self.take(4 * count, f"tensor data of {what}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias_shape(self, what: str) -> tuple[int, int, int, int]:
        self.expect_int(1, f"alias tensor version of {what}")
        return tuple(self.int_(f"alias tensor shape of {what}") for _ in range(4))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# The architecture, as dlib serialises it.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """One ``add_layer`` the file must contain, from the input outwards."""

    kind: str  # con | affine | relu | max_pool | avg_pool | add_prev | fc
    channels: int = 0  # con/affine: filters; fc: outputs
    kernel: int = 0  # con: size; pools: window (0 = whole map)
    stride: int = 0
    padding: int = 0
    in_channels: int = 0  # con: input channels; fc: inputs


def _conv(cin: int, cout: int, k: int, stride: int) -> _Spec:
    # dlib's default padding: 0 for strided convs, k//2 otherwise.
    return _Spec("con", cout, k, stride, 0 if stride != 1 else k // 2, cin)


def _architecture() -> tuple[list[_Spec], list[str]]:
    """The add_layers from the input outwards, and the wrappers from the outside in.

    Wrappers: 'layer' (add_layer, version 2), 'tag' (tag/skip, version 1), 'input' (the
    innermost add_layer that also holds the input layer, version 3).
    """
    layers: list[_Spec] = [
        _conv(3, 32, 7, 2),
        _Spec("affine", 32),
        _Spec("relu"),
        _Spec("max_pool", 0, 3, 2, 0),
    ]
    wrappers_in_out: list[str] = ["input", "layer", "layer", "layer"]
    cin = 32
    for level, (n, blocks) in enumerate(LEVELS):
        for b in range(blocks):
            down = level > 0 and b == 0
            wrappers_in_out.append("tag")  # tag1 around the block's input
            layers += [
                _conv(cin, n, 3, 2 if down else 1),
                _Spec("affine", n),
                _Spec("relu"),
                _conv(n, n, 3, 1),
                _Spec("affine", n),
            ]
            wrappers_in_out += ["layer"] * 5
            if down:
                wrappers_in_out += ["tag", "tag", "layer"]  # tag2, skip1, avg_pool
                layers.append(_Spec("avg_pool", 0, 2, 2, 0))
            layers += [_Spec("add_prev"), _Spec("relu")]
            wrappers_in_out += ["layer", "layer"]
            cin = n
    layers += [_Spec("avg_pool", 0, 0, 1, 0), _Spec("fc", EMBEDDING_DIM, in_channels=cin)]
    wrappers_in_out += ["layer", "layer"]
    return layers, wrappers_in_out[::-1]


_LAYER_NAMES = {
    "con": "con_4",
    "affine": "affine_",
    "relu": "relu_",
    "max_pool": "max_pool_2",
    "avg_pool": "avg_pool_2",
    "add_prev": "add_prev_",
    "fc": "fc_2",
}


@dataclass
class DlibResNetWeights:
    """Everything read from the file, as numpy arrays in torch layout."""

    channel_means: tuple[float, float, float]
    loss_margin: float
    distance_threshold: float
    # Per con layer: (weight OIHW, bias O); per affine layer: (gamma, beta); fc: (out, in).
    convs: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    affines: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    fc: np.ndarray | None = None


def _read_trailer(s: _Stream, what: str) -> None:
    """Each add_layer ends with 3 flags and 3 (empty, in a saved net) tensors."""
    for i in range(3):
        s.bool_(f"flag {i} of {what}")
    for name in ("x_grad", "cached_output", "params_grad"):
        s.tensor(f"{name} of {what}")


def _read_pool(s: _Stream, spec: _Spec, what: str) -> None:
    k = spec.kernel
    got = [s.int_(f"{what} geometry") for _ in range(6)]
    want = [k, k, spec.stride, spec.stride, spec.padding, spec.padding]
    if got != want:
        raise s.fail(f"{what}: geometry {got}, expected {want}")


def _read_con(s: _Stream, spec: _Spec, what: str) -> tuple[np.ndarray, np.ndarray]:
    params = s.tensor(f"params of {what}")
    geometry = [s.int_(f"{what} geometry") for _ in range(7)]
    k, st, p = spec.kernel, spec.stride, spec.padding
    want = [spec.channels, k, k, st, st, p, p]
    if geometry != want:
        raise s.fail(f"{what}: (filters, nr, nc, strides, pads) {geometry}, expected {want}")
    fshape = s.alias_shape(f"filters of {what}")
    bshape = s.alias_shape(f"biases of {what}")
    if fshape != (spec.channels, spec.in_channels, k, k) or bshape != (1, spec.channels, 1, 1):
        raise s.fail(f"{what}: filter/bias shapes {fshape}/{bshape} do not fit the architecture")
    for m in ("lr", "wd", "bias lr", "bias wd"):
        s.float_(f"{m} multiplier of {what}")
    flat = params.reshape(-1)
    nw = int(np.prod(fshape))
    if flat.size != nw + spec.channels:
        raise s.fail(f"{what}: {flat.size} parameters, expected {nw + spec.channels}")
    return flat[:nw].reshape(fshape).copy(), flat[nw:].copy()


def _read_affine(s: _Stream, spec: _Spec, what: str) -> tuple[np.ndarray, np.ndarray]:
    params = s.tensor(f"params of {what}").reshape(-1)
    g = s.alias_shape(f"gamma of {what}")
    b = s.alias_shape(f"beta of {what}")
    s.int_(f"mode of {what}")
    c = spec.channels
    if params.size != 2 * c or g != (1, c, 1, 1) or b != (1, c, 1, 1):
        raise s.fail(f"{what}: {params.size} params / shapes {g} {b}, expected {c} channels")
    return params[:c].copy(), params[c:].copy()


def _read_fc(s: _Stream, spec: _Spec, what: str) -> np.ndarray:
    n_out = s.int_(f"outputs of {what}")
    n_in = s.int_(f"inputs of {what}")
    if (n_out, n_in) != (spec.channels, spec.in_channels):
        raise s.fail(f"{what}: {n_out} outputs/{n_in} inputs, expected {spec.channels}/256")
    params = s.tensor(f"params of {what}")
    w = s.alias_shape(f"weights of {what}")
    b = s.alias_shape(f"biases of {what}")
    if b != (0, 0, 0, 0) and b[0] * b[1] * b[2] * b[3] != 0:
        raise s.fail(f"{what}: has a bias {b}; dlib's model has none")
    s.int_(f"bias mode of {what}")
    for m in ("lr", "wd", "bias lr", "bias wd"):
        s.float_(f"{m} multiplier of {what}")
    if w != (n_in, n_out, 1, 1) or params.size != n_in * n_out:
        raise s.fail(f"{what}: weight shape {w}, {params.size} params, expected ({n_in},{n_out})")
    # Stored (input, output); torch's Linear wants (output, input).
    return params.reshape(n_in, n_out).T.copy()


def read_dlib_resnet(path: str | Path | None = None) -> DlibResNetWeights:
    """Parse the .dat file (pure Python) and check it against the architecture.

    Raises :class:`DatFormatError` with the reason for any other or damaged file.
    """
    path = Path(path) if path is not None else default_model_path()
    data = path.read_bytes()
    s = _Stream(data, str(path))
    if not data:
        raise s.fail("the file is empty")
    specs, wrappers = _architecture()

    s.expect_int(1, "add_loss_layer version")
    s.expect_str("loss_metric_2", "loss layer")
    margin = s.float_("loss margin")
    threshold = s.float_("loss distance threshold")
    for i, kind in enumerate(wrappers):
        want = {"layer": 2, "tag": 1, "input": 3}[kind]
        got = s.int_(f"wrapper version {i}")
        if got != want:
            raise s.fail(
                f"wrapper {i} (outside in) should be a {kind} with version {want}, found {got}"
            )

    s.expect_str("input_rgb_image_sized", "input layer")
    means = (s.float_("red mean"), s.float_("green mean"), s.float_("blue mean"))
    size = (s.int_("input rows"), s.int_("input columns"))
    if size != (CHIP_SIZE, CHIP_SIZE):
        raise s.fail(f"input size {size}, expected {CHIP_SIZE}x{CHIP_SIZE}")

    weights = DlibResNetWeights(means, margin, threshold)
    for i, spec in enumerate(specs):
        what = f"layer {i} ({_LAYER_NAMES[spec.kind]})"
        s.expect_str(_LAYER_NAMES[spec.kind], f"type of layer {i}")
        if spec.kind == "con":
            weights.convs.append(_read_con(s, spec, what))
        elif spec.kind == "affine":
            weights.affines.append(_read_affine(s, spec, what))
        elif spec.kind in ("max_pool", "avg_pool"):
            _read_pool(s, spec, what)
        elif spec.kind == "fc":
            weights.fc = _read_fc(s, spec, what)
        _read_trailer(s, what)
        if i == 0:
            s.int_("sample_expansion_factor")
    if s.pos != len(data):
        raise s.fail(f"{len(data) - s.pos} unexpected bytes after the last layer")
    return weights


# --------------------------------------------------------------------------------------------
# The torch module.
# --------------------------------------------------------------------------------------------


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
