"""Rejections of the rating flow: each code with its one HTTP status (deidplatform.errors).

The DRF views answer them through the shared exception handler; the hot path never
answers a rejection itself (it hands every unusual case to those views), so a code keeps
its status on both paths.
"""

from __future__ import annotations

from deidplatform.errors import NOT_FOUND, AppError, error_code

__all__ = [
    "ALREADY_JUDGED", "BLOCKED", "CONSENT_REQUIRED", "EXPIRED", "NOT_A_RATER", "NOT_FOUND",
    "NO_IDENTITY", "NOT_THIS_BROWSER", "RatingError",
]

NO_IDENTITY = error_code("no_identity", 400)
NOT_A_RATER = error_code("not_a_rater", 403)
BLOCKED = error_code("blocked", 403)
# The participant id is bound to another browser (ratings/binding.py).
NOT_THIS_BROWSER = error_code("not_this_browser", 403)
CONSENT_REQUIRED = error_code("consent_required", 403)
EXPIRED = error_code("expired", 409)
ALREADY_JUDGED = error_code("already_judged", 409)


class RatingError(AppError):
    """An AppError from the rating services (its status comes from the code)."""
