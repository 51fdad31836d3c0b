"""One error shape for the whole API: ``{"errors": [{"field", "code", "detail"}]}``.

Services raise :class:`deidplatform.errors.AppError`; this handler gives each code its one
declared status (``deidplatform.errors.status_for``)."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import OperationalError as DatabaseError
from kombu.exceptions import OperationalError as BrokerError
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .celery import BROKER_UNAVAILABLE
from .errors import AppError, error_code

# A statement that ran past DB_STATEMENT_TIMEOUT_MS, or a database that went away: retryable.
DATABASE_UNAVAILABLE = error_code("database_unavailable", 503)
# Django refuses these bodies while DRF parses them; unhandled they became an HTML 400.
REQUEST_TOO_LARGE = error_code("request_too_large", 413)
TOO_MANY_FIELDS = error_code("too_many_fields", 400)


log = logging.getLogger(__name__)


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


def _view_name(context: dict) -> str:
    view = context.get("view")
    return type(view).__name__ if view is not None else "?"


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, AppError):
        return Response(exc.body(), status=exc.status)
    if isinstance(exc, RequestDataTooBig):
        exc = AppError(REQUEST_TOO_LARGE, "The request body is over the size limit.")
        return Response(exc.body(), status=exc.status)
    if isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        exc = AppError(TOO_MANY_FIELDS, str(exc))
        return Response(exc.body(), status=exc.status)
    # Outages answer a clean, retryable 503 (logged here, no traceback in the body).
    if isinstance(exc, BrokerError):
        log.warning("broker error in %s: %s", _view_name(context), exc)
        exc = AppError(BROKER_UNAVAILABLE, "The task queue is unreachable. Try again shortly.")
        return Response(exc.body(), status=exc.status, headers={"Retry-After": "5"})
    if isinstance(exc, DatabaseError):
        log.warning("database error in %s: %s", _view_name(context), exc)
        exc = AppError(DATABASE_UNAVAILABLE, "The database is busy or unreachable. Try again shortly.")
        return Response(exc.body(), status=exc.status, headers={"Retry-After": "5"})
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
