"""One error shape for the whole API: ``{"errors": [{"field", "code", "detail"}]}``."""

from __future__ import annotations

from typing import Any

from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class FieldError(APIException):
    """A 4xx naming the offending field, raised by views that call services."""

    status_code = status.HTTP_400_BAD_REQUEST

    def __init__(self, field: str, code: str, detail: str, status_code: int = 400) -> None:
        super().__init__(detail=detail, code=code)
        self.field = field
        self.code_name = code
        self.status_code = status_code


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
    if isinstance(exc, FieldError):
        return Response(
            {"errors": [{"field": exc.field, "code": exc.code_name, "detail": str(exc.detail)}]},
            status=exc.status_code,
        )
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
