"""Job parameters: the pure loop's ``DeidConfig`` is the one definition; this module turns
its errors into domain errors that name the field. Defaults are documented on ``DeidConfig``
(``models_app.deid``) and in the README."""

from __future__ import annotations

import json
from typing import Any

from deidplatform.errors import INVALID, AppError
from models_app.deid.config import DeidConfig
from models_app.deid.errors import DeidConfigError
from models_app.deid.loss import LossWeights

# How a job makes its output (issue 16): the iterative loop, one pass of the promoted
# generator, or the loop started from the generator's output.
METHOD_ITERATIVE, METHOD_GENERATOR, METHOD_HYBRID = "iterative", "generator", "hybrid"
METHODS = (METHOD_ITERATIVE, METHOD_GENERATOR, METHOD_HYBRID)
# Job-level keys beside the loop's DeidConfig: ``method`` (the client's), and
# ``generator_version`` (set by the service: the promoted generator the job uses).
JOB_KEYS = ("method", "generator_version")


def validated_params(data: dict[str, Any] | None) -> dict[str, Any]:
    """The full parameter set (defaults filled in) as JSON; ``invalid`` naming the field."""
    if data is not None and not isinstance(data, dict):
        raise AppError(INVALID, "params must be a JSON object.", field="params")
    data = dict(data or {})
    method = data.pop("method", METHOD_ITERATIVE)
    if method not in METHODS:
        raise AppError(INVALID, f"unknown method {method!r}; one of {list(METHODS)}.",
                       field="params.method")
    try:
        cfg = DeidConfig.from_dict(data)
        cfg.validate()
    except DeidConfigError as exc:
        raise AppError(INVALID, exc.message, field=f"params.{_path(exc.field)}") from None
    except (TypeError, ValueError) as exc:
        raise AppError(INVALID, str(exc), field="params") from None
    return {**cfg.to_dict(), "method": method}


def method_of(params: dict[str, Any]) -> str:
    """A job's method (jobs stored before methods existed are iterative)."""
    return params.get("method", METHOD_ITERATIVE)


def _path(field: str) -> str:
    return f"loss.{field}" if field in LossWeights.__dataclass_fields__ else field


def config_from_params(params: dict[str, Any]) -> DeidConfig:
    return DeidConfig.from_dict({k: v for k, v in params.items() if k not in JOB_KEYS})


def parse_params(raw: Any) -> dict[str, Any] | None:
    """``params`` as sent: a JSON object, or a JSON string (multipart forms send strings)."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        raise AppError(INVALID, "params is not valid JSON.", field="params") from None
