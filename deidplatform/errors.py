"""Domain errors: services raise :class:`AppError` with a code, never an HTTP error.

Each domain declares its codes in its own ``errors`` module with :func:`error_code`, which
gives every code exactly one HTTP status. The one DRF exception handler
(``deidplatform.api.exception_handler``) and the raw-SQL rating path both look the status
up here, so the same rejection answers with the same status everywhere.

No Django or DRF import: pure modules and management commands may raise these too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_STATUS: dict[str, int] = {}

NON_FIELD = "non_field_errors"


def error_code(code: str, status: int) -> str:
    """Declare ``code`` with its HTTP status and return it (use as a module constant)."""
    known = _STATUS.setdefault(code, status)
    if known != status:
        raise RuntimeError(f"error code {code!r} declared with {known} and {status}")
    return code


def status_for(code: str) -> int:
    """The one HTTP status of ``code``; 400 for a code no domain declared."""
    return _STATUS.get(code, 400)


def declared_codes() -> dict[str, int]:
    return dict(_STATUS)


# Codes every domain uses.
INVALID = error_code("invalid", 400)
NOT_FOUND = error_code("not_found", 404)
CONFLICT = error_code("conflict", 409)


class AppError(Exception):
    """A rejection a caller can show: a stable ``code``, the ``field`` it concerns, a
    human ``detail``, and optional ``extra`` keys for the JSON body."""

    def __init__(
        self,
        code: str,
        detail: str,
        field: str = NON_FIELD,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code, self.detail, self.field = code, detail, field
        self.extra = dict(extra or {})

    @property
    def status(self) -> int:
        return status_for(self.code)

    def body(self) -> dict[str, Any]:
        return {**self.extra, "errors": [{"field": self.field, "code": self.code, "detail": self.detail}]}

    def __repr__(self) -> str:
        return f"AppError({self.code!r}, field={self.field!r})"
