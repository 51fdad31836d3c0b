"""The de-identification engine (issue 6; patent claims 1-4 and 11-16): pure computation.

Tensors and numpy arrays in, tensors, arrays and numbers out; no Django import anywhere in
this package, so the Celery task and the API are thin layers over :func:`run_deid`. The names
below are the package's front door; the modules:

* :mod:`.config` — :class:`DeidConfig` (every job parameter) and its validation;
* :mod:`.errors` — :class:`DeidConfigError`, naming the parameter;
* :mod:`.state` — the source face, iteration records, results and the resume state;
* :mod:`.loop` — the loop itself and its stop rules (:func:`run_deid`, :func:`run_deid_batch`);
* :mod:`.confirm` — scores of the output as it will be judged (:func:`score_saved_output`);
* :mod:`.score_a` — the score-A protocol and its adapters around the human proxy;
* :mod:`.params` — what is optimised: ``style`` (parameterised, perceptible transforms) and
  ``pixels`` (a free residual, the baseline);
* :mod:`.loss` — formula A plus the score-A term and the image prior;
* :mod:`.eot` — expectation over transformations (shifts, crops, JPEG) for score-B;
* :mod:`.composite` — the inverse of the context-crop alignment, to paste the result back;
* :mod:`.metrics` — SSIM and mean absolute pixel change.
"""

from __future__ import annotations

from .config import DeidConfig
from .confirm import FinalScore, score_saved_output
from .errors import DeidConfigError
from .loop import (
    STOP_CANCELLED,
    STOP_CONVERGED,
    STOP_MAX_ITERATIONS,
    STOP_REASONS,
    STOP_SUCCESS,
    run_deid,
    run_deid_batch,
)
from .state import DeidResult, DeidSource, DeidState, IterationRecord, Rung, prepare_source

__all__ = [
    "STOP_CANCELLED",
    "STOP_CONVERGED",
    "STOP_MAX_ITERATIONS",
    "STOP_REASONS",
    "STOP_SUCCESS",
    "DeidConfig",
    "DeidConfigError",
    "DeidResult",
    "DeidSource",
    "DeidState",
    "FinalScore",
    "IterationRecord",
    "Rung",
    "prepare_source",
    "run_deid",
    "run_deid_batch",
    "score_saved_output",
]
