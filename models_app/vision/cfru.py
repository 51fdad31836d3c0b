"""CFRUs (computerised face recognition units) and score-B over an ensemble of them.

A CFRU embeds aligned face chips (150x150 RGB uint8, as ``faces.detect_and_align`` makes
them) and turns the distance between two embeddings into a calibrated similarity in [0, 1]
and a match decision at an LFW-calibrated threshold. Score-B (patent, paragraph 40) aggregates
the CFRUs of an ensemble: the mean calibrated similarity, or the fraction of CFRUs that match
(also min and product). The ensemble and the aggregation are chosen per job, by name, through
:func:`build_ensemble`.

Registered: ``dlib_resnet_v1`` (dlib's runtime) and ``torch_dlib_resnet_v1`` (the PyTorch
port), exactly dlib's descriptor; ``..._flip`` variants average it with the mirror image's
(99.05 % on LFW against 98.83 %, see BENCHMARKS.md).

Pure computation: no Django import.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import dlib_resnet
from .chips import CHIP_SIZE
from .dlib_dat import EMBEDDING_DIM, MODEL_FILENAME, default_model_path

CALIBRATION_PATH = Path(__file__).with_name("calibration.json")
# Used only when calibration.json has no entry for a CFRU: dlib's own threshold, and a slope
# of the order LFW gives for this network (the benchmark writes the fitted one).
FALLBACK_THRESHOLD = dlib_resnet.DLIB_DISTANCE_THRESHOLD
FALLBACK_SCALE = 15.0

# Plain: exactly dlib's descriptor of the chip. _flip: mean with the mirror image's.
DLIB_RUNTIME = "dlib_resnet_v1"
TORCH_PORT = "torch_dlib_resnet_v1"
DLIB_RUNTIME_FLIP = "dlib_resnet_v1_flip"
TORCH_PORT_FLIP = "torch_dlib_resnet_v1_flip"


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Distance -> similarity: ``sigmoid(scale * (threshold - distance))``.

    Centred on the match threshold, so ``similarity >= 0.5`` exactly when the CFRU matches.
    """

    threshold: float
    scale: float
    source: str = "fallback: dlib's fixed threshold, uncalibrated"

    def similarity(self, distance: np.ndarray | float) -> np.ndarray:
        z = self.scale * (self.threshold - np.asarray(distance, dtype=np.float64))
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # = sigmoid(z), without overflow warnings

    def matches(self, distance: np.ndarray | float) -> np.ndarray:
        return np.asarray(distance, dtype=np.float64) <= self.threshold


def load_calibrations(path: str | Path = CALIBRATION_PATH) -> dict[str, Calibration]:
    """Calibrations by CFRU name, as the LFW benchmark wrote them; {} when the file is absent."""
    path = Path(path)
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {
        name: Calibration(float(c["threshold"]), float(c["scale"]), str(c.get("source", "")))
        for name, c in raw.get("cfrus", {}).items()
    }


def calibration_for(name: str, path: str | Path = CALIBRATION_PATH) -> Calibration:
    cal = load_calibrations(path).get(name)
    return cal if cal is not None else Calibration(FALLBACK_THRESHOLD, FALLBACK_SCALE)


def fit_calibration(
    distances: np.ndarray, same: np.ndarray, threshold: float, source: str = ""
) -> Calibration:
    """Maximum-likelihood logistic slope around a fixed threshold (1-D Newton)."""
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(same, dtype=np.float64)
    x = threshold - d
    s = FALLBACK_SCALE
    for _ in range(100):
        p = 0.5 * (1.0 + np.tanh(0.5 * s * x))
        grad = np.sum((y - p) * x)
        hess = -np.sum(p * (1.0 - p) * x * x)
        if hess >= 0:
            break
        step = grad / hess
        s = max(s - step, 1e-3)
        if abs(step) < 1e-10 * max(1.0, abs(s)):
            break
    return Calibration(float(threshold), float(s), source)


def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The distance threshold with the highest accuracy (match when distance <= threshold).

    Candidates are the midpoints between consecutive distinct sorted distances; among equally
    good ones the median candidate is taken.
    """
    d = np.asarray(distances, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    order = np.argsort(d, kind="stable")
    ds, ys = d[order], y[order]
    n = len(ds)
    # Cut k: the k smallest distances are called "same".
    same_below = np.concatenate([[0], np.cumsum(ys)])
    diff_below = np.concatenate([[0], np.cumsum(~ys)])
    correct = same_below + (diff_below[-1] - diff_below)
    valid = np.concatenate([[True], ds[1:] > ds[:-1], [True]])
    cuts = np.flatnonzero(valid & (correct == correct[valid].max()))
    k = int(cuts[len(cuts) // 2])
    lo = ds[k - 1] if k > 0 else ds[0] - 1e-3
    hi = ds[k] if k < n else ds[-1] + 1e-3
    return float((lo + hi) / 2.0)


# --------------------------------------------------------------------------------------------
# The CFRU interface and the two implementations
# --------------------------------------------------------------------------------------------


def _as_chips(chips: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    arr = np.asarray(chips)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(f"expected aligned (N, 150, 150, 3) RGB chips, got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 chips, got {arr.dtype}")
    return np.ascontiguousarray(arr)


class CFRU(ABC):
    """One machine face recogniser.

    ``embed`` maps aligned chips (N,150,150,3) uint8 RGB to embeddings (N, D) float64;
    ``similarity``/``matches`` compare embeddings (row-wise, broadcasting) through the
    Euclidean distance and the CFRU's LFW calibration. With ``flip_average`` the embedding is
    the mean of the chip's and its mirror image's (test-time flip: +0.2 points on LFW).
    """

    name: str
    version: str
    calibration: Calibration
    runtime: str  # which engine computes ``embed_single`` (benchmarks cache by it)
    flip_average: bool = False

    @abstractmethod
    def embed_single(self, chips: np.ndarray) -> np.ndarray:
        """One pass of the recogniser over validated (N,150,150,3) uint8 chips."""

    def embed(self, chips: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        arr = _as_chips(chips)
        if not self.flip_average:
            return self.embed_single(arr)
        both = self.embed_single(np.concatenate([arr, np.ascontiguousarray(arr[:, :, ::-1])]))
        return (both[: len(arr)] + both[len(arr) :]) / 2.0

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.calibration.similarity(self.distance(a, b))

    def matches(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.calibration.matches(self.distance(a, b))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "flip_average": self.flip_average,
            **asdict(self.calibration),
        }


class DlibRuntimeCFRU(CFRU):
    """The reference CFRU: dlib's own ``face_recognition_model_v1`` (CPU, not differentiable)."""

    runtime = "dlib_runtime"

    def __init__(
        self,
        name: str = DLIB_RUNTIME,
        flip_average: bool = False,
        calibration: Calibration | None = None,
        batch_size: int = 32,
    ) -> None:
        import dlib

        self.name = name
        self.flip_average = flip_average
        self.version = (
            f"dlib {dlib.__version__}; {MODEL_FILENAME} (face_recognition_models)"
            + ("; flip-averaged" if flip_average else "")
        )
        self.calibration = calibration or calibration_for(name)
        self.batch_size = batch_size
        self._local = threading.local()  # dlib objects are not thread-safe

    def _model(self) -> Any:
        model = getattr(self._local, "model", None)
        if model is None:
            import dlib

            model = dlib.face_recognition_model_v1(str(default_model_path()))
            self._local.model = model
        return model

    def embed_single(self, chips: np.ndarray) -> np.ndarray:
        model = self._model()
        out = np.empty((len(chips), EMBEDDING_DIM), dtype=np.float64)
        for i in range(0, len(chips), self.batch_size):
            batch = [np.ascontiguousarray(c) for c in chips[i : i + self.batch_size]]
            out[i : i + len(batch)] = np.asarray(model.compute_face_descriptor(batch))
        return out


class TorchCFRU(CFRU):
    """The same network through the PyTorch port (:mod:`dlib_resnet`): any device, gradients."""

    runtime = "torch_port"

    def __init__(
        self,
        name: str = TORCH_PORT,
        flip_average: bool = False,
        calibration: Calibration | None = None,
        device: str | None = None,
        batch_size: int = 64,
    ) -> None:
        import torch

        self.name = name
        self.flip_average = flip_average
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.version = f"torch {torch.__version__}; {MODEL_FILENAME} port" + (
            "; flip-averaged" if flip_average else ""
        )
        self.calibration = calibration or calibration_for(name)
        self.batch_size = batch_size

    @property
    def module(self) -> dlib_resnet.DlibResNet:
        return dlib_resnet.get_dlib_resnet(self.device)

    def embed_single(self, chips: np.ndarray) -> np.ndarray:
        import torch

        model = self.module
        out = np.empty((len(chips), EMBEDDING_DIM), dtype=np.float64)
        with torch.inference_mode():
            for i in range(0, len(chips), self.batch_size):
                x = dlib_resnet.chips_to_tensor(chips[i : i + self.batch_size], self.device)
                out[i : i + len(x)] = model(x).double().cpu().numpy()
        return out


# --------------------------------------------------------------------------------------------
# Registry: jobs name their CFRUs
# --------------------------------------------------------------------------------------------

_factories: dict[str, Callable[[], CFRU]] = {}
_instances: dict[str, CFRU] = {}
_registry_lock = threading.Lock()


def register_cfru(name: str, factory: Callable[[], CFRU], replace: bool = False) -> None:
    """Make a CFRU available by name; ``factory`` is called once, on first use."""
    with _registry_lock:
        if name in _factories and not replace:
            raise ValueError(f"a CFRU named {name!r} is already registered")
        _factories[name] = factory
        _instances.pop(name, None)


def unregister_cfru(name: str) -> None:
    with _registry_lock:
        _factories.pop(name, None)
        _instances.pop(name, None)


def available_cfrus() -> list[str]:
    return sorted(_factories)


def get_cfru(name: str) -> CFRU:
    """The shared instance of the named CFRU (built on first use)."""
    with _registry_lock:
        if name not in _factories:
            raise ValueError(f"unknown CFRU {name!r}; available: {', '.join(sorted(_factories))}")
        cfru = _instances.get(name)
        if cfru is None:
            cfru = _factories[name]()
            _instances[name] = cfru
        return cfru


register_cfru(DLIB_RUNTIME, DlibRuntimeCFRU)
register_cfru(TORCH_PORT, TorchCFRU)
register_cfru(DLIB_RUNTIME_FLIP, lambda: DlibRuntimeCFRU(DLIB_RUNTIME_FLIP, flip_average=True))
register_cfru(TORCH_PORT_FLIP, lambda: TorchCFRU(TORCH_PORT_FLIP, flip_average=True))


# --------------------------------------------------------------------------------------------
# Score-B
# --------------------------------------------------------------------------------------------

# Each takes similarities and matches, shaped (n_cfrus, n_pairs), and returns (n_pairs,) in
# [0, 1]. Paragraph 40: "aggregated (e.g., sum, product, average ...)" or "based on how many
# of the CFRUs determined that the face ... is also represented".
Aggregation = Callable[[np.ndarray, np.ndarray], np.ndarray]
AGGREGATIONS: dict[str, Aggregation] = {
    "mean_similarity": lambda sim, match: sim.mean(axis=0),
    "fraction_matching": lambda sim, match: match.mean(axis=0),
    "min_similarity": lambda sim, match: sim.min(axis=0),
    "product_similarity": lambda sim, match: sim.prod(axis=0),
}
DEFAULT_AGGREGATION = "mean_similarity"
# The reference CFRU, flip-averaged: the variant that clears 99.0% on LFW (BENCHMARKS.md).
DEFAULT_CFRUS: tuple[str, ...] = (DLIB_RUNTIME_FLIP,)


@dataclass(frozen=True)
class CFRUResult:
    name: str
    version: str
    distance: float
    similarity: float
    matches: bool


@dataclass(frozen=True)
class ScoreB:
    """Score-B of one (source, output) pair and what each CFRU said."""

    score: float
    aggregation: str
    per_cfru: tuple[CFRUResult, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CFRUEnsemble:
    """A job's CFRUs and aggregation. Embeddings are dicts keyed by CFRU name, so a job can
    embed its source once and score every iteration's output against it."""

    def __init__(self, cfrus: Sequence[CFRU], aggregation: str = DEFAULT_AGGREGATION) -> None:
        if not cfrus:
            raise ValueError("a CFRU ensemble needs at least one CFRU")
        names = [c.name for c in cfrus]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate CFRUs in the ensemble: {names}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(
                f"unknown score-B aggregation {aggregation!r}; "
                f"available: {', '.join(sorted(AGGREGATIONS))}"
            )
        self.cfrus = tuple(cfrus)
        self.aggregation = aggregation

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cfrus)

    def spec(self) -> dict[str, Any]:
        """The job-level description this ensemble was (or could be) built from."""
        return {"cfrus": list(self.names), "aggregation": self.aggregation}

    def embed(self, chips: np.ndarray | Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        arr = _as_chips(chips)
        return {c.name: c.embed(arr) for c in self.cfrus}

    def score_embeddings(
        self, source: Mapping[str, np.ndarray], output: Mapping[str, np.ndarray]
    ) -> list[ScoreB]:
        """Score-B per pair; embeddings (N, D) or (D,) per CFRU, broadcast row-wise."""
        dists = np.stack(
            [np.atleast_1d(c.distance(source[c.name], output[c.name])) for c in self.cfrus]
        )
        dists = np.broadcast_to(dists, (len(self.cfrus), dists.shape[-1]))
        sims = np.stack(
            [c.calibration.similarity(d) for c, d in zip(self.cfrus, dists, strict=True)]
        )
        match = np.stack([c.calibration.matches(d) for c, d in zip(self.cfrus, dists, strict=True)])
        scores = AGGREGATIONS[self.aggregation](sims, match.astype(np.float64))
        return [
            ScoreB(
                score=float(scores[j]),
                aggregation=self.aggregation,
                per_cfru=tuple(
                    CFRUResult(
                        c.name, c.version, float(dists[i, j]), float(sims[i, j]), bool(match[i, j])
                    )
                    for i, c in enumerate(self.cfrus)
                ),
            )
            for j in range(dists.shape[1])
        ]

    def score_b(self, source_chip: np.ndarray, output_chip: np.ndarray) -> ScoreB:
        """Score-B of one pair of aligned chips."""
        return self.score_embeddings(self.embed(source_chip), self.embed(output_chip))[0]


def build_ensemble(spec: Mapping[str, Any] | None = None) -> CFRUEnsemble:
    """The ensemble a job asks for: ``{"cfrus": [names], "aggregation": name}``.

    Missing keys take the defaults (dlib's runtime, mean calibrated similarity).
    """
    spec = dict(spec or {})
    unknown = set(spec) - {"cfrus", "aggregation"}
    if unknown:
        raise ValueError(f"unknown keys in the CFRU ensemble spec: {sorted(unknown)}")
    names: Iterable[str] = spec.get("cfrus") or DEFAULT_CFRUS
    if isinstance(names, str):
        names = [names]
    return CFRUEnsemble(
        [get_cfru(n) for n in names], spec.get("aggregation") or DEFAULT_AGGREGATION
    )


def calibration_file_info() -> dict[str, Any]:
    """Metadata of the calibration file in use (for job records and the API)."""
    if not CALIBRATION_PATH.exists():
        return {"path": str(CALIBRATION_PATH), "present": False}
    raw = json.loads(CALIBRATION_PATH.read_text())
    return {"path": str(CALIBRATION_PATH), "present": True, **raw.get("meta", {})}
