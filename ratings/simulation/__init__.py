"""A simulated crowd of raters that rates through the real site over HTTP (issue 11, item
5): rater types (:mod:`.profiles`) answer from a simulated observer (ratings.observers),
each through its own browser-like session (:mod:`.crowd`). Django-free; run it with
``manage.py simulate_crowd``."""

from __future__ import annotations

from .crowd import SIM_PREFIX, CrowdConfig, CrowdReport, RaterReport, run_crowd
from .profiles import TYPES, RaterType, assign_types, parse_mix

__all__ = [
    "SIM_PREFIX", "TYPES", "CrowdConfig", "CrowdReport", "RaterReport", "RaterType",
    "assign_types", "parse_mix", "run_crowd",
]
