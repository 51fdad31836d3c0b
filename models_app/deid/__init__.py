"""The de-identification engine (issue 6; patent claims 1-4 and 11-16): pure computation.

Tensors and numpy arrays in, tensors, arrays and numbers out; no Django import anywhere in
this package, so the Celery task and the API are thin layers over :func:`.loop.run_deid`.

* :mod:`.params` — what is optimised: ``style`` (parameterised, perceptible transforms) and
  ``pixels`` (a free residual, the baseline);
* :mod:`.loss` — formula A plus the score-A term and the image prior;
* :mod:`.eot` — expectation over transformations (shifts, crops, JPEG) for score-B;
* :mod:`.composite` — the inverse of the context-crop alignment, to paste the result back;
* :mod:`.metrics` — SSIM and mean absolute pixel change;
* :mod:`.loop` — the loop, its job config, iteration records, stop rules and resume state.
"""

from __future__ import annotations


class DeidConfigError(ValueError):
    """An invalid job parameter; ``field`` names it so the API can answer 4xx naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


__all__ = ["DeidConfigError"]
