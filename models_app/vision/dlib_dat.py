"""Reader of dlib's serialised ResNet face recogniser (``dlib_face_recognition_resnet_model_v1.dat``).

Written from the format itself (no dlib call): it checks every wrapper version and layer type
against the one architecture it knows and refuses anything else with :class:`DatFormatError`.
Pure Python and numpy (no torch): :mod:`.dlib_resnet` builds the torch module from what it
returns.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .chips import CHIP_SIZE

MODEL_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
EMBEDDING_DIM = 128

# Residual levels from the input outwards: (filters, blocks). The first block of every level
# but the first downsamples (3x3 stride-2 conv, 2x2 average-pooled shortcut).
LEVELS: tuple[tuple[int, int], ...] = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))


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

