"""Job parameters: the pure loop's ``DeidConfig`` is the one definition; this module turns
its errors into API errors that name the field. Defaults are documented on ``DeidConfig``
(models_app/deid/loop.py) and in the README."""

from __future__ import annotations

from typing import Any

from deidplatform.api import FieldError

from .deid import DeidConfigError
from .deid.loop import DeidConfig


def validated_params(data: dict[str, Any] | None) -> dict[str, Any]:
    """The full parameter set (defaults filled in) as JSON, or a 400 naming the field."""
    if data is not None and not isinstance(data, dict):
        raise FieldError("params", "invalid", "params must be a JSON object.")
    try:
        cfg = DeidConfig.from_dict(data or {})
        cfg.validate()
    except DeidConfigError as exc:
        raise FieldError(f"params.{_path(exc.field)}", "invalid", exc.message) from None
    except (TypeError, ValueError) as exc:
        raise FieldError("params", "invalid", str(exc)) from None
    return cfg.to_dict()


def _path(field: str) -> str:
    from .deid.loss import LossWeights

    return f"loss.{field}" if field in LossWeights.__dataclass_fields__ else field


def config_from_params(params: dict[str, Any]) -> DeidConfig:
    return DeidConfig.from_dict(params)
