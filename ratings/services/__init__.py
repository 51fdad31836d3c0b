"""Writes for the rating flow (reads are in ``ratings.selectors``). Each public function
is one transaction; the flow is ratings/ASSIGNMENT.md.

Modules: ``raters`` (creation, consent, blocks), ``assignment`` (holds: next, expiry,
reclaim), ``submission`` (record + QC), ``pairs``, ``labels``. The names below are the
public API; callers outside ratings/ import them from here.
"""

from __future__ import annotations

from ..errors import RatingError
from .assignment import (
    DEFAULT_HOLDS,
    NextResult,
    next_assignments,
    reclaim_expired_holds,
)
from .labels import mark_labels_pending, recompute_labels
from .pairs import create_pairs
from .raters import (
    block_rater,
    finish_session,
    get_or_create_rater,
    record_consent,
    record_declined,
    release_blocked_rater,
    unblock_rater,
)
from .submission import SubmitResult, submit_judgment

__all__ = [
    "DEFAULT_HOLDS",
    "NextResult",
    "RatingError",
    "SubmitResult",
    "block_rater",
    "create_pairs",
    "finish_session",
    "get_or_create_rater",
    "mark_labels_pending",
    "next_assignments",
    "recompute_labels",
    "reclaim_expired_holds",
    "record_consent",
    "record_declined",
    "release_blocked_rater",
    "submit_judgment",
    "unblock_rater",
]
