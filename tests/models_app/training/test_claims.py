"""The shared claim (``training.claims``) as each runner uses it: a run of the other kind is
never claimed, a proxy attempt starts over, a generator attempt keeps its history and start."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from models_app.models import TrainingRun
from models_app.training import claims, generator_runner, runner
from models_app.training.models import ModelKind


@pytest.mark.django_db
def test_a_run_of_the_other_kind_is_not_claimed():
    proxy = TrainingRun.objects.create()
    generator = TrainingRun.objects.create(kind=ModelKind.GENERATOR)
    assert generator_runner.claim_generator_run(str(proxy.pk)) is None
    assert runner.mark_running(str(generator.pk)) is None
    assert set(TrainingRun.objects.values_list("status", flat=True)) == {"queued"}


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [ModelKind.HUMAN_PROXY, ModelKind.GENERATOR])
def test_a_stale_run_is_reclaimed_keeping_history_only_for_a_generator(kind, settings):
    first = timezone.now() - timedelta(hours=1)
    run = TrainingRun.objects.create(
        kind=kind, status="running", started=first, history=[{"epoch": 1}],
        heartbeat=first, claim="00000000-0000-0000-0000-000000000001",
    )
    keep = kind == ModelKind.GENERATOR
    mine = claims.claim_run(str(run.pk), kind, keep_history=keep)
    assert mine is not None and str(mine.claim) != "00000000-0000-0000-0000-000000000001"
    mine.refresh_from_db()
    assert mine.status == "running" and mine.heartbeat > first
    assert (mine.history, mine.started) == (([{"epoch": 1}], first) if keep else ([], mine.heartbeat))


@pytest.mark.django_db
def test_fail_run_writes_only_while_owned():
    run = runner.mark_running(str(TrainingRun.objects.create().pk))
    assert claims.fail_run(run, "boom") == {"run": str(run.pk), "status": "failed", "error": "boom"}
    run.refresh_from_db()
    assert run.status == "failed" and run.error == "boom" and run.finished
    assert claims.owned(run).count() == 0
    claims.fail_run(run, "later")  # no longer owned: nothing changes
    run.refresh_from_db()
    assert run.error == "boom"
