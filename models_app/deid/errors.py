"""The engine's errors, apart so that ``config`` and ``loss`` both raise them without
importing each other."""

from __future__ import annotations


class DeidConfigError(ValueError):
    """An invalid job parameter; ``field`` names it so the API can answer 4xx naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
