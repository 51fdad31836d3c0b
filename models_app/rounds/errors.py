"""Error codes of the rounds domain, each with its one HTTP status."""

from __future__ import annotations

from deidplatform.errors import error_code

NO_PROMOTED_PROXY = error_code("no_promoted_proxy", 409)
NO_FACES = error_code("no_faces", 409)
ROUND_BUSY = error_code("round_busy", 409)
NOT_CANCELLABLE = error_code("not_cancellable", 409)
