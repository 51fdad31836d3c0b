"""A simulated crowd that rates through the real rater site, over HTTP, as browsers do.

Each simulated rater is one ``requests.Session`` (its cookie jar is the browser): it opens
the external-participant link (``/rate/<slug>/?PROLIFIC_PID=SIM-...``), keeps the binding
and session cookies the server sets, agrees to the consent form, then loops on the rater
JSON API (next -> fetch both signed images -> answer -> submit) until the server says it
is finished, blocked or out of work, or the time limit passes. Gold and attention pairs are
just pairs to it: it qualifies or fails by its answers. No Django import: the server alone
decides what a judgment counts for (ratings.models.Rater.save marks the raters simulated).
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import requests
from PIL import Image

from ..observers import Observer, judge
from .profiles import TYPES, Answer, RaterType, assign_types

log = logging.getLogger("ratings.simulation")

SIM_PREFIX = "SIM-"  # must equal ratings.models.SIMULATED_ID_PREFIX (a test checks)
_CONSENT_FORM = re.compile(r'<form[^>]+action="([^"]*/consent)"')


@dataclass
class CrowdConfig:
    base_url: str
    slug: str
    raters: int
    mix: dict[str, float]
    seed: int = 0
    max_seconds: float = 600.0
    time_scale: float = 1.0  # real sleep = simulated response time x this
    min_response_ms: int = 0  # the campaign's; careful raters never answer faster
    study_id: str = "SIM-STUDY"
    concurrency: int = 8
    patience_s: float = 10.0  # give up after this long without work
    poll_s: float = 0.5
    run_id: str = ""  # part of every external id, so reruns make new raters
    sign: Callable[[str], str] | None = None  # entry-link signature, when the campaign asks


@dataclass
class RaterReport:
    external_id: str
    kind: str
    judgments: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    end: str = ""  # finished | blocked | no_work | closed | time | error: ...
    seconds: float = 0.0
    server_errors: int = 0  # 5xx answers retried (the server's trouble, not the rater's)


@dataclass
class CrowdReport:
    raters: list[RaterReport]
    judgments: int
    seconds: float
    judgments_per_s: float
    ends: dict[str, int]
    server_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SimulatedBrowser:
    """One rater's browser: cookies, CSRF header, Retry-After on 429."""

    RETRIES_5XX = 4  # a 5xx (e.g. a deadlock the server gave up on) is retried: both calls are idempotent

    def __init__(self, base_url: str, deadline: float) -> None:
        self.base = base_url.rstrip("/")
        self.http = requests.Session()
        self.deadline = deadline
        self.server_errors = 0

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = path if path.startswith("http") else self.base + path
        failures = 0
        while True:
            if time.monotonic() > self.deadline:
                raise _Stop("time")
            r = self.http.request(method, url, timeout=30, **kwargs)
            if r.status_code >= 500 and failures < self.RETRIES_5XX:
                failures += 1
                self.server_errors += 1
                time.sleep(0.2 * 2 ** failures)
                continue
            if r.status_code != 429:
                return r
            wait = float(r.headers.get("Retry-After", "1") or 1)
            time.sleep(min(wait, max(0.0, self.deadline - time.monotonic())))

    def csrf_headers(self) -> dict[str, str]:
        token = self.http.cookies.get("csrftoken", "")
        return {"X-CSRFToken": token, "Referer": self.base + "/"}

    def post_json(self, path: str, body: dict[str, Any] | None = None) -> requests.Response:
        return self.request("POST", path, json=body or {}, headers=self.csrf_headers())

    def image(self, path: str) -> np.ndarray | None:
        """The image as served (HxWx3 uint8 RGB), or None when the server refuses it."""
        r = self.request("GET", path)
        if r.status_code != 200:
            return None
        with Image.open(io.BytesIO(r.content)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _error_code(r: requests.Response) -> str:
    try:
        return str(r.json()["errors"][0]["code"])
    except (ValueError, KeyError, IndexError, TypeError):
        return f"http {r.status_code}"


def run_rater(cfg: CrowdConfig, index: int, kind: RaterType, observer: Observer,
              deadline: float) -> RaterReport:
    """One simulated rater from entry to its end; never raises (the end says why)."""
    rng = np.random.default_rng([cfg.seed, index])
    external_id = f"{SIM_PREFIX}{cfg.run_id}{index:04d}-{kind.name.replace('_', '')}"
    report = RaterReport(external_id, kind.name)
    started = time.monotonic()
    browser = SimulatedBrowser(cfg.base_url, deadline)
    kinds: Counter[str] = Counter()
    try:
        _enter(browser, cfg, external_id)
        body = _next(browser, cfg)
        idle_since: float | None = None
        while True:
            status = body.get("status")
            items = body.get("assignments") or []
            if status == "ok" and items:
                idle_since = None
                item = items[0]
                answer = _answer(browser, kind, observer, item, report.judgments, rng, cfg)
                if answer is None:  # the hold went stale: ask again
                    body = _next(browser, cfg)
                    continue
                time.sleep(answer.response_ms / 1000.0 * cfg.time_scale)
                r = browser.post_json(
                    f"/api/ratings/rate/{cfg.slug}/assignments/{item['id']}/judgment",
                    {"same": answer.same, "confidence": answer.confidence,
                     "response_ms": answer.response_ms},
                )
                if r.status_code in (200, 201):
                    out = r.json()
                    report.judgments += int(out.get("status") == "recorded")
                    kinds[item.get("phase", "work")] += 1
                    if out.get("rater_status") == "blocked":
                        raise _Stop("blocked")
                    body = out.get("next") or _next(browser, cfg)
                elif r.status_code in (404, 409):  # expired or reclaimed meanwhile
                    body = _next(browser, cfg)
                else:
                    raise _Stop(_error_code(r))
            elif status in ("finished", "closed"):
                raise _Stop(status)
            elif status in ("no_work", "qualifying_wait", "ok"):
                # Others hold the rest; a block elsewhere may free slots: wait a while.
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > cfg.patience_s:
                    raise _Stop("no_work")
                time.sleep(cfg.poll_s)
                body = _next(browser, cfg)
            else:
                raise _Stop(f"status {status}")
    except _Stop as stop:
        report.end = stop.reason
    except (requests.RequestException, ValueError, KeyError) as exc:
        report.end = f"error: {type(exc).__name__}: {exc}"[:200]
        log.warning("simulated rater %s: %s", external_id, report.end)
    report.by_kind = dict(kinds)
    report.server_errors = browser.server_errors
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _enter(browser: SimulatedBrowser, cfg: CrowdConfig, external_id: str) -> None:
    """Open the study link (keeps the binding cookie), then consent when asked."""
    params = {"PROLIFIC_PID": external_id, "STUDY_ID": cfg.study_id,
              "SESSION_ID": f"{external_id}-S"}
    if cfg.sign is not None:
        params["sig"] = cfg.sign(external_id)
    r = browser.request("GET", f"/rate/{cfg.slug}/", params=params)
    if r.status_code != 200:
        raise _Stop(f"entry refused: http {r.status_code}")
    match = _CONSENT_FORM.search(r.text)
    if match:
        token = browser.http.cookies.get("csrftoken", "")
        r = browser.request("POST", match.group(1), data={"csrfmiddlewaretoken": token},
                            headers={"Referer": r.url})
        if r.status_code != 200:
            raise _Stop(f"consent refused: http {r.status_code}")


def _next(browser: SimulatedBrowser, cfg: CrowdConfig) -> dict[str, Any]:
    r = browser.post_json(f"/api/ratings/rate/{cfg.slug}/next")
    if r.status_code != 200:
        raise _Stop(_error_code(r))
    return r.json()


def _answer(browser: SimulatedBrowser, kind: RaterType, observer: Observer,
            item: dict[str, Any], n_done: int, rng: np.random.Generator,
            cfg: CrowdConfig) -> Answer | None:
    p_same = None
    if kind.looks:
        left, right = browser.image(item["left_url"]), browser.image(item["right_url"])
        if left is None or right is None:
            return None
        p_same = judge(observer, left, right, rng)
    return kind.answer(p_same, n_done, rng, cfg.min_response_ms)


def run_crowd(cfg: CrowdConfig, observer: Observer) -> CrowdReport:
    """Run ``cfg.raters`` simulated raters, at most ``cfg.concurrency`` at a time."""
    types = assign_types(cfg.mix, cfg.raters)
    order = np.random.default_rng(cfg.seed).permutation(len(types))
    started = time.monotonic()
    deadline = started + cfg.max_seconds
    lock = threading.Lock()
    done: list[RaterReport] = []

    def one(i: int) -> None:
        report = run_rater(cfg, i, TYPES[types[order[i]]], observer, deadline)
        with lock:
            done.append(report)

    with ThreadPoolExecutor(max_workers=max(1, cfg.concurrency),
                            thread_name_prefix="sim-rater") as pool:
        list(pool.map(one, range(len(types))))
    seconds = time.monotonic() - started
    done.sort(key=lambda r: r.external_id)
    total = sum(r.judgments for r in done)
    return CrowdReport(
        raters=done, judgments=total, seconds=round(seconds, 3),
        judgments_per_s=round(total / seconds, 2) if seconds > 0 else 0.0,
        ends=dict(Counter(r.end.split(":")[0] for r in done)),
        server_errors=sum(r.server_errors for r in done),
    )
