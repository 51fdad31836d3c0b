"""Helpers shared by the test modules: where the shared data is, the skip when it is
absent, and one polling loop for work done by another process."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("DEID_SHARED_DATA", REPO.parent / "shared" / "data"))
LFW_ROOT = SHARED_DATA / "lfw"
LFW_DIR = LFW_ROOT / "lfw-deepfunneled"
LFW_PAIRS = LFW_ROOT / "pairs.txt"
ATT_DIR = SHARED_DATA / "att_faces"

T = TypeVar("T")


def require_lfw() -> Path:
    """The LFW image folder, or skip the test saying the shared data is absent."""
    if not LFW_DIR.is_dir():
        pytest.skip(f"LFW data not found at {LFW_DIR} (../shared/data is absent)")
    return LFW_DIR


def require_lfw_pairs() -> Path:
    """LFW's official pairs.txt, or skip the test saying the shared data is absent."""
    if not LFW_PAIRS.is_file():
        pytest.skip(f"LFW pairs.txt not found at {LFW_PAIRS} (../shared/data is absent)")
    return LFW_PAIRS


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 60, interval: float = 0.3,
    what: str = "the condition",
) -> T:
    """Call ``probe`` until it returns something truthy and return that; fail the test with
    ``what`` after ``timeout`` seconds (work done by a worker or another process)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
