"""One error shape for the whole API: ``{"errors": [{"field", "code", "detail"}]}``.

Services raise :class:`deidplatform.errors.AppError`; this handler gives each code its one
declared status (``deidplatform.errors.status_for``)."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .errors import AppError


def _flatten(detail: Any, field: str | None = None) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = key if field is None else f"{field}.{key}"
            out.extend(_flatten(value, None if key == "non_field_errors" else name))
    elif isinstance(detail, list):
        for item in detail:
            out.extend(_flatten(item, field))
    else:
        out.append(
            {
                "field": field or "non_field_errors",
                "code": str(getattr(detail, "code", "invalid")),
                "detail": str(detail),
            }
        )
    return out


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, AppError):
        return Response(exc.body(), status=exc.status)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ValidationError):
        response.data = {"errors": _flatten(exc.detail)}
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else ""
        code = getattr(getattr(exc, "detail", None), "code", None) or getattr(
            exc, "default_code", "error"
        )
        response.data = {"errors": [{"field": "non_field_errors", "code": str(code), "detail": str(detail)}]}
    return response
