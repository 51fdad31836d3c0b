"""OpenAPI post-processing: every operation documents the error answers it can give.

drf-spectacular lists only the success codes the views annotate; the API also answers
400 (bad input), 401 (a failed basic-auth login), 403 (no permission), 404, 413 (an
oversized body), 429 (rate limits) and 503 (broker or database down), all in the one error
shape of ``deidplatform.api``. Views that annotate a code themselves keep their text.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "code": {"type": "string"},
                    "detail": {"type": "string"},
                },
                "required": ["field", "code", "detail"],
            },
        },
    },
    "required": ["errors"],
    "additionalProperties": True,  # e.g. ingest's "status" and "reason"
}

_ERRORS = {
    "400": "invalid input (the field is named)",
    "401": "basic-auth credentials were refused",
    "403": "not signed in, or no permission for this action",
    "404": "no such object",
    "405": "method not allowed",
    "413": "the request body is over the size limit",
    "429": "too many requests",
    "503": "the broker or the database is unavailable; retry",
}
_SAFE = {"get", "head", "options", "delete"}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict:
    """A drf-spectacular ``POSTPROCESSING_HOOKS`` entry (see the module docstring)."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("Error", ERROR_SCHEMA)
    ref = {"$ref": "#/components/schemas/Error"}
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for code, text in _ERRORS.items():
                if code == "413" and method in _SAFE:
                    continue
                entry = responses.setdefault(code, {"description": text})
                entry.setdefault("content", {"application/json": {"schema": ref}})
    return result
