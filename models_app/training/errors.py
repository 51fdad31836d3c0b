"""Error codes of the training domain (runs and the registry), each with its one HTTP status."""

from __future__ import annotations

from deidplatform.errors import error_code

RUN_IN_PROGRESS = error_code("run_in_progress", 409)
FAILED_GATE = error_code("failed_gate", 409)
NOTHING_PROMOTED = error_code("nothing_promoted", 409)
NO_PREVIOUS = error_code("no_previous", 409)
# A stored weights file that does not match its checksum: the server's data, not the request.
CORRUPT_MODEL = error_code("corrupt_model", 500)
NOT_CANCELLABLE = error_code("not_cancellable", 409)
