"""The same rater scenarios through the SQL hot path and through the Python reference path,
compared on the database state they leave (rater counters, pair counts, assignment
states, judgments), not only on the answers.

Each scenario plays a fixed script against two identical campaigns, one per path, with
attention and gold rates of 0 or 1 so that both paths must make the same choices (deid
pairs are chosen fullest first, then by id; known pairs at random, so those are compared
per kind).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone

from ratings import hotpath, services
from ratings.models import Assignment, Campaign, Pair, Rater

from .factories import add_pairs, make_campaign, make_images

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the hot path is PostgreSQL only"),
    pytest.mark.django_db,
    pytest.mark.rating_paths(),  # each test runs both paths itself and compares them
]

RATER_FIELDS = ("judgments_count", "gold_count", "gold_correct", "attention_count",
                "attention_failed", "too_fast_count", "qualified", "blocked", "blocked_reason",
                "slots_released")

Answer = Callable[[Pair], bool]


def kind(pair: Pair) -> str:
    """Gold pairs are drawn at random from both gold kinds: compare them as one kind."""
    return "gold" if pair.kind in Pair.GOLD_KINDS else pair.kind


def right(pair: Pair) -> bool:
    return True if pair.expected_same is None else pair.expected_same


def wrong(pair: Pair) -> bool:
    return not right(pair)


class Play:
    """One run of a script: a campaign, its raters' browser sessions, and a log of every
    answer with what does not depend on the path (no ids, no times)."""

    def __init__(self, pairs: dict[str, int], raters: tuple[str, ...], **campaign: Any) -> None:
        self.campaign = make_campaign(**campaign)
        images = make_images(6)
        for kind, n in pairs.items():
            add_pairs(self.campaign, n, kind=kind, images=images)
        self.clients: dict[str, Client] = {}
        self.holds: dict[str, list[str]] = {}
        self.log: list[tuple] = []
        for name in raters:
            self.clients[name] = self._enter(name)
            self.holds[name] = []

    def _enter(self, name: str) -> Client:
        client = Client(enforce_csrf_checks=True)
        client.get(f"/rate/{self.campaign.slug}/",
                   {"PROLIFIC_PID": name, "STUDY_ID": "S", "SESSION_ID": "X"})
        Rater.objects.filter(campaign=self.campaign, external_id=name).update(
            consented_at=timezone.now())
        assert client.get(f"/rate/{self.campaign.slug}/").status_code == 200
        return client

    def _post(self, name: str, url: str, body: dict | None = None) -> Any:
        client = self.clients[name]
        return client.post(url, data=json.dumps(body or {}), content_type="application/json",
                           HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)

    def _take(self, name: str, nxt: dict | None) -> tuple:
        if nxt is None:
            return (None,)
        self.holds[name] = [a["id"] for a in nxt["assignments"]]
        return nxt["status"], [a["phase"] for a in nxt["assignments"]], nxt["progress"]

    def next(self, name: str) -> int:
        r = self._post(name, f"/api/ratings/rate/{self.campaign.slug}/next")
        body = r.json()
        if r.status_code == 200:
            self.log.append(("next", name, 200, self._take(name, body)))
        else:
            self.log.append(("next", name, r.status_code, body["errors"][0]["code"]))
        return r.status_code

    def submit(self, name: str, which: int = 0, answer: Answer = right,
               response_ms: int = 1500, confidence: int = 3) -> int:
        public_id = self.holds[name][which]
        pair = Assignment.objects.select_related("pair").get(public_id=public_id).pair
        r = self._post(name, f"/api/ratings/rate/{self.campaign.slug}/assignments/"
                       f"{public_id}/judgment",
                       {"same": answer(pair), "confidence": confidence,
                        "response_ms": response_ms})
        body = r.json()
        if r.status_code in (200, 201):
            self.log.append(("submit", name, kind(pair), r.status_code, body["status"],
                             body["rater_status"], body["progress"],
                             self._take(name, body["next"])))
            if body["next"] is None:
                self.holds[name] = []
        else:
            self.log.append(("submit", name, kind(pair), r.status_code,
                             body["errors"][0]["code"]))
        return r.status_code

    def work(self, name: str, answer: Answer = right, limit: int = 40) -> None:
        """Answer the first hold until there is none (ask once first)."""
        self.next(name)
        for _ in range(limit):
            if not self.holds[name]:
                return
            self.submit(name, 0, answer)
        raise AssertionError("script did not finish")

    def expire(self, name: str, which: int) -> None:
        Assignment.objects.filter(public_id=self.holds[name][which]).update(
            expires=timezone.now() - timedelta(seconds=1))

    def rater(self, name: str) -> Rater:
        return Rater.objects.get(campaign=self.campaign, external_id=name)

    def state(self) -> dict[str, Any]:
        """The database state the run left, with nothing that differs between two runs."""
        pairs = list(Pair.objects.filter(campaign=self.campaign).order_by("pk"))
        index = {p.pk: i for i, p in enumerate(pairs)}

        def where(pair: Pair) -> Any:  # deid pairs by position; known ones by kind only
            return index[pair.pk] if pair.kind == Pair.Kind.DEID else None

        return {
            "raters": {r.external_id: {f: getattr(r, f) for f in RATER_FIELDS}
                       for r in Rater.objects.filter(campaign=self.campaign)},
            "taken": [(p.kind, where(p), p.taken) for p in pairs],
            "assignments": Counter(
                (a.rater.external_id, kind(a.pair), where(a.pair), a.phase, a.state)
                for a in Assignment.objects.filter(campaign=self.campaign)
                .select_related("rater", "pair")),
            "judgments": Counter(
                (j.rater.external_id, kind(j.pair), where(j.pair),
                 j.same if j.correct is None else None, j.confidence, j.correct, j.too_fast)
                for j in self.campaign.judgments.select_related("rater", "pair")),
            "labels_pending": Campaign.objects.get(pk=self.campaign.pk).labels_pending,
        }


def both_paths(monkeypatch, script: Callable[[Play], None], pairs: dict[str, int],
               raters: tuple[str, ...] = ("ALICE",), **campaign: Any) -> Play:
    """Run ``script`` once per path; assert same log and same state; return the hot run."""
    outcomes: list[str] = []
    real_call = hotpath.call

    def spy(*args: Any, **kwargs: Any) -> dict:
        out = real_call(*args, **kwargs)
        outcomes.append(out["outcome"])
        return out

    monkeypatch.setattr(hotpath, "call", spy)
    runs = {}
    for path in ("hot", "reference"):
        outcomes.clear()
        with override_settings(RATINGS_HOT_PATH=path == "hot"):
            play = Play(pairs, raters, **campaign)
            script(play)
        runs[path] = (play, play.log, play.state(), Counter(outcomes))
    hot, ref = runs["hot"], runs["reference"]
    assert hot[1] == ref[1], "the two paths answered differently"
    assert hot[2] == ref[2], "the two paths left different database states"
    assert hot[3]["ok"] > 0, f"the hot path never answered itself: {hot[3]}"
    assert not ref[3], "the reference run called the function"
    return hot[0]


def deid(n: int) -> dict[str, int]:
    return {Pair.Kind.DEID: n}


def test_rates_zero_two_raters_fill_every_pair_k_times(monkeypatch):
    def script(p: Play) -> None:
        p.work("ALICE")
        p.next("BOB")
        p.submit("BOB", 0, response_ms=100)  # too fast: flagged, not blocked
        p.work("BOB", wrong)

    play = both_paths(monkeypatch, script, deid(5), ("ALICE", "BOB"),
                      judgments_per_pair=2, attention_rate=0.0, gold_rate=0.0)
    state = play.state()
    assert [t for _, _, t in state["taken"]] == [2] * 5
    assert state["raters"]["BOB"]["too_fast_count"] == 1
    assert play.log[-1][-1][0] == "finished"


def test_attention_rate_one_passed_then_deid(monkeypatch):
    def script(p: Play) -> None:
        p.work("ALICE")

    play = both_paths(monkeypatch, script, {Pair.Kind.ATTENTION: 2, **deid(3)},
                      judgments_per_pair=1, attention_rate=1.0, gold_rate=0.0)
    kinds = [e[2] for e in play.log if e[0] == "submit"]
    assert kinds == ["attention", "attention", "deid", "deid", "deid"]
    alice = play.state()["raters"]["ALICE"]
    assert (alice["attention_count"], alice["attention_failed"], alice["blocked"]) == (2, 0, False)


def test_attention_rate_one_failed_blocks_and_frees_slots(monkeypatch):
    def script(p: Play) -> None:
        p.next("ALICE")
        p.submit("ALICE", 0, wrong)  # identical images called different
        p.next("ALICE")
        p.work("BOB")

    play = both_paths(monkeypatch, script, {Pair.Kind.ATTENTION: 1, **deid(3)},
                      ("ALICE", "BOB"), judgments_per_pair=1, attention_rate=1.0,
                      attention_failures_allowed=0)
    state = play.state()
    alice = state["raters"]["ALICE"]
    assert alice["blocked"] and alice["blocked_reason"] == "attention" and alice["slots_released"]
    assert ("next", "ALICE", 403, "blocked") in play.log
    # ALICE's second hold (a deid pair) was given back, so BOB judged every deid pair.
    assert sum(n for (who, k, _, _, st), n in state["assignments"].items()
               if (who, k, st) == ("ALICE", "deid", "expired")) == 1
    assert [t for k, _, t in state["taken"] if k == "deid"] == [1, 1, 1]


def test_gold_rate_one_accuracy_below_pass_mark_blocks(monkeypatch):
    def script(p: Play) -> None:
        answers = iter([right, wrong, wrong])
        p.work("ALICE", lambda pair: next(answers)(pair))  # 1/1, 1/2, 1/3 < 0.5
        p.work("BOB")

    play = both_paths(monkeypatch, script,
                      {Pair.Kind.GOLD_SAME: 2, Pair.Kind.GOLD_DIFFERENT: 2, **deid(2)},
                      ("ALICE", "BOB"), judgments_per_pair=1, gold_rate=1.0, pass_mark=0.5)
    state = play.state()
    alice, bob = state["raters"]["ALICE"], state["raters"]["BOB"]
    assert (alice["gold_count"], alice["gold_correct"], alice["blocked_reason"]) == (
        3, 1, "gold_accuracy")
    assert (bob["gold_count"], bob["gold_correct"], bob["judgments_count"]) == (4, 4, 6)


def test_qualification_then_hot_path_and_a_failed_qualification(monkeypatch):
    def script(p: Play) -> None:
        p.work("ALICE")  # qualifies on the Python path, then works on the hot path
        p.work("BOB", wrong)

    play = both_paths(monkeypatch, script, {Pair.Kind.GOLD_SAME: 2, **deid(3)},
                      ("ALICE", "BOB"), judgments_per_pair=1, qualification_size=2,
                      gold_rate=0.0, attention_rate=0.0, pass_mark=1.0)
    state = play.state()
    assert state["raters"]["ALICE"]["qualified"] and state["raters"]["ALICE"]["judgments_count"] == 5
    assert state["raters"]["BOB"]["blocked_reason"] == "qualification"
    assert state["assignments"][("ALICE", "gold", None, "qualification", "submitted")] == 2


def test_quota_finishes_the_rater(monkeypatch):
    def script(p: Play) -> None:
        p.work("ALICE")
        p.next("ALICE")
        p.work("BOB")

    play = both_paths(monkeypatch, script, deid(6), ("ALICE", "BOB"),
                      judgments_per_pair=2, rater_quota=3)
    state = play.state()
    assert state["raters"]["ALICE"]["judgments_count"] == 3
    assert state["raters"]["BOB"]["judgments_count"] == 3
    assert play.log[-1][-1][0] == "finished"
    assert ("next", "ALICE", 200, ("finished", [], play.log[-1][6])) in play.log


def test_hold_expiry_own_overdue_hold_and_late_answer(monkeypatch):
    def script(p: Play) -> None:
        p.next("ALICE")
        p.expire("ALICE", 1)  # the preloaded pair times out
        p.submit("ALICE", 0)  # recorded; the overdue hold is expired and replaced
        p.expire("ALICE", 0)
        p.submit("ALICE", 0)  # too late: 409, reclaimed on the spot
        p.work("ALICE")

    play = both_paths(monkeypatch, script, deid(4), judgments_per_pair=1, hold_timeout_s=60)
    state = play.state()
    assert ("submit", "ALICE", "deid", 409, "expired") in play.log
    assert sum(n for key, n in state["assignments"].items() if key[-1] == "expired") == 2
    assert state["raters"]["ALICE"]["judgments_count"] == 4
    assert [t for _, _, t in state["taken"]] == [1, 1, 1, 1]


def test_retry_is_idempotent_and_a_different_answer_conflicts(monkeypatch):
    def script(p: Play) -> None:
        p.next("ALICE")
        first = p.holds["ALICE"][0]
        p.submit("ALICE", 0)
        p.holds["ALICE"].insert(0, first)
        p.submit("ALICE", 0)  # the retried POST: 200 duplicate, nothing written
        p.holds["ALICE"].insert(0, first)
        p.submit("ALICE", 0, wrong)  # same assignment, other answer: 409
        p.work("ALICE")

    play = both_paths(monkeypatch, script, deid(3), judgments_per_pair=1)
    statuses = [e[3:5] for e in play.log if e[0] == "submit"][:3]
    assert statuses == [(201, "recorded"), (200, "duplicate"), (409, "already_judged")]
    state = play.state()
    assert state["raters"]["ALICE"]["judgments_count"] == 3
    assert sum(state["judgments"].values()) == 3


def test_blocked_rater_is_refused_and_their_slots_go_to_others(monkeypatch):
    def script(p: Play) -> None:
        p.next("ALICE")
        p.submit("ALICE", 0)
        services.block_rater(p.rater("ALICE").pk)
        p.next("ALICE")
        p.submit("ALICE", 0)  # the hold ALICE still has on screen
        p.work("BOB")

    play = both_paths(monkeypatch, script, deid(3), ("ALICE", "BOB"), judgments_per_pair=1)
    assert ("next", "ALICE", 403, "blocked") in play.log
    assert ("submit", "ALICE", "deid", 403, "blocked") in play.log
    state = play.state()
    assert state["raters"]["ALICE"]["slots_released"]
    assert state["raters"]["BOB"]["judgments_count"] == 3  # ALICE's judged pair too
    assert [t for _, _, t in state["taken"]] == [1, 1, 1]


def test_completion_code_needs_the_minimum_of_real_pairs(monkeypatch):
    """Issue 14: known-answer pairs alone never end a session as "finished". A quota that
    the gold pairs reach does not stop BOB before his real pair; ALICE, left with gold
    pairs only (BOB took the one real pair), is told "no_work", not "finished"."""

    def script(p: Play) -> None:
        p.work("BOB")
        p.work("ALICE")
        p.next("ALICE")

    play = both_paths(monkeypatch, script,
                      {Pair.Kind.GOLD_SAME: 1, Pair.Kind.GOLD_DIFFERENT: 1, **deid(1)},
                      ("ALICE", "BOB"), judgments_per_pair=1, gold_rate=1.0, rater_quota=2,
                      min_work_pairs=5)
    submits = {name: [e for e in play.log if e[0] == "submit" and e[1] == name]
               for name in ("ALICE", "BOB")}
    assert [e[2] for e in submits["BOB"]] == ["gold", "gold", "deid"]
    assert submits["BOB"][-1][-1][0] == "finished"
    assert submits["BOB"][-1][6]["work_done"] == submits["BOB"][-1][6]["work_min"] == 1
    assert [e[2] for e in submits["ALICE"]] == ["gold", "gold"]
    assert submits["ALICE"][-1][-1][0] == "no_work"
    assert play.log[-1][3][0] == "no_work"
