"""Simulated observers: functions that look at two images as a rater sees them and say how
likely a person relying on certain cues is to answer "same person".

The protocol (:data:`Observer`)::

    observe(source, output, rng) -> float   # P(same) in [0, 1]

``source`` and ``output`` are HxWx3 uint8 RGB arrays, the images exactly as the rater page
shows them; ``rng`` is a ``numpy.random.Generator`` for an observer that perceives with
noise. An observer sees pixels only: it must not use the human proxy, the recogniser
networks (CFRUs) or any score the platform computes (an import contract in
``pyproject.toml`` keeps the shipped ones honest).

Observers are named by a dotted path ``package.module:callable`` (:func:`load_observer`),
so one written outside the project plugs in without code changes; the shipped ones also
have short names (:data:`SHIPPED`). Pure package: no Django import.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import numpy as np

Observer = Callable[[np.ndarray, np.ndarray, np.random.Generator], float]

# Short name -> dotted path; each is named after the cues it uses.
SHIPPED: dict[str, str] = {
    "external_features": "ratings.observers.external_features:observe",
    "inner_face_band": "ratings.observers.inner_face_band:observe",
}


class ObserverError(ValueError):
    """An observer path that cannot be loaded, or an observer that breaks the protocol."""


def load_observer(path: str) -> Observer:
    """The observer named by ``path``: a shipped short name (:data:`SHIPPED`) or a dotted
    path ``package.module:callable`` (``package.module.callable`` is accepted too). Raises
    :class:`ObserverError` naming the path when it cannot be imported or is not a function
    of (source, output, rng)."""
    if not isinstance(path, str) or not path.strip():
        raise ObserverError(f"observer path must be 'package.module:callable', got {path!r}")
    spec = SHIPPED.get(path.strip(), path.strip())
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    else:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr or not all(p.isidentifier() for p in module_name.split(".")):
        raise ObserverError(f"observer {path!r}: expected 'package.module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ObserverError(f"observer {path!r}: cannot import module {module_name!r}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ObserverError(
                f"observer {path!r}: module {module_name!r} has no attribute {attr!r}"
            ) from None
    if not callable(obj):
        raise ObserverError(f"observer {path!r}: {attr!r} is not callable")
    try:
        inspect.signature(obj).bind(None, None, None)
    except TypeError:
        raise ObserverError(
            f"observer {path!r}: {attr!r} must take (source, output, rng)"
        ) from None
    except ValueError:  # builtins without a signature: trust them, checked per call
        pass
    return obj


def judge(observer: Observer, source: np.ndarray, output: np.ndarray,
          rng: np.random.Generator) -> float:
    """Call ``observer`` and check what it says: a finite float in [0, 1], else
    :class:`ObserverError` (a broken plug-in must not write nonsense judgments)."""
    p = observer(source, output, rng)
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise ObserverError(f"observer {observer!r} returned {p!r}, not a probability") from None
    if not np.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ObserverError(f"observer {observer!r} returned {value!r}, outside [0, 1]")
    return value


def observer_judge(observer: Observer, seed: int = 0) -> Callable[..., np.ndarray]:
    """The observer as a perceptual-battery judge (:mod:`models_app.vision.battery`):
    ``score(sources, outputs) -> P(same)`` per pair, each checked by :func:`judge`."""
    rng = np.random.default_rng(seed)

    def score(sources, outputs) -> np.ndarray:
        return np.array([judge(observer, s, o, rng) for s, o in zip(sources, outputs, strict=True)])

    return score
