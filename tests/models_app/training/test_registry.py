"""The model registry: one promoted version per kind, the gate, promotion and rollback."""

from __future__ import annotations

import pytest

from deidplatform.errors import AppError
from models_app.models import ModelKind, ModelVersion
from models_app.training import registry
from models_app.training.selectors import promoted_version, read_weights

pytestmark = pytest.mark.django_db


def _version(metrics: dict | None = None, **kw) -> ModelVersion:
    return registry.register_version(
        kind=ModelKind.HUMAN_PROXY, weights=b"weights-" + str(kw).encode(), config={},
        metrics=metrics or {"auc": 0.9, "brier": 0.1}, **kw,
    )


def test_gate_compares_auc_and_brier_on_the_same_held_out_labels():
    assert registry.gate_decision({"auc": 0.9, "brier": 0.1}, None).passed
    assert registry.gate_decision({"auc": 0.9, "brier": 0.1}, {"auc": 0.9, "brier": 0.1}).passed
    worse_auc = registry.gate_decision({"auc": 0.85, "brier": 0.1}, {"auc": 0.9, "brier": 0.1})
    assert not worse_auc.passed and "AUC" in worse_auc.reasons[0]
    worse_brier = registry.gate_decision({"auc": 0.95, "brier": 0.2}, {"auc": 0.9, "brier": 0.1})
    assert not worse_brier.passed and "Brier" in worse_brier.reasons[0]
    assert registry.gate_decision(
        {"auc": 0.89, "brier": 0.1}, {"auc": 0.9, "brier": 0.1}, tolerance=0.02
    ).passed
    assert not registry.gate_decision({"auc": float("nan"), "brier": 0.1}, None).passed


def test_numbers_increase_and_files_are_private(settings):
    a, b = _version(), _version()
    assert (a.number, b.number) == (1, 2)
    assert a.file.name.startswith("models/human_proxy/") and a.file.name.endswith(".safetensors")
    assert read_weights(a).startswith(b"weights-")


def test_promote_retires_the_previous_and_rollback_restores_it(django_capture_on_commit_callbacks):
    v1, v2 = _version(), _version()
    with django_capture_on_commit_callbacks():
        registry.promote(v1)
        registry.promote(v2)
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert v1.status == "retired" and v2.status == "promoted"
    assert ModelVersion.objects.filter(status="promoted").count() == 1
    with django_capture_on_commit_callbacks():
        back = registry.rollback(ModelKind.HUMAN_PROXY)
    assert back.pk == v1.pk
    v2.refresh_from_db()
    assert v2.status == "retired" and promoted_version().pk == v1.pk


def test_promoting_a_version_that_failed_its_gate_is_refused():
    v1 = _version()
    registry.promote(v1)
    bad = _version(gate={"passed": False, "reasons": ["auc 0.5 is worse"]})
    bad.status = ModelVersion.Status.REJECTED
    bad.save()
    with pytest.raises(AppError) as err:
        registry.promote(bad)
    assert err.value.code == "failed_gate" and "auc 0.5" in err.value.detail
    assert promoted_version().pk == v1.pk  # unchanged
    registry.promote(bad, force=True)
    assert promoted_version().pk == bad.pk


def test_rollback_without_history_is_a_clear_error():
    with pytest.raises(AppError, match="No version"):
        registry.rollback(ModelKind.HUMAN_PROXY)
    registry.promote(_version())
    with pytest.raises(AppError) as err:
        registry.rollback(ModelKind.HUMAN_PROXY)
    assert err.value.code == "no_previous"


def test_corrupt_model_file_is_detected():
    v = _version()
    with v.file.storage.open(v.file.name, "wb") as fh:
        fh.write(b"tampered")
    with pytest.raises(AppError) as err:
        read_weights(v)
    assert err.value.code == "corrupt_model"


@pytest.mark.django_db(transaction=True)
def test_deleting_a_version_deletes_its_file():
    from pathlib import Path

    v = _version()
    path = Path(v.file.path)
    assert path.exists()
    v.delete()
    assert not path.exists()


def test_a_promotion_is_announced_and_the_jobs_domain_rescores(
    django_capture_on_commit_callbacks, monkeypatch
):
    """The registry sends ``model_promoted`` after commit; the jobs domain's receiver queues
    the re-scoring task. The registry itself imports nothing of the jobs domain."""
    from models_app.jobs.tasks import rescore_outputs_task
    from models_app.training.signals import model_promoted

    heard, queued = [], []
    monkeypatch.setattr(rescore_outputs_task, "apply_async", lambda *a, **k: queued.append(k))

    def listener(sender, version, **kwargs):
        heard.append(version.pk)

    model_promoted.connect(listener)
    try:
        v1 = _version()
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            registry.promote(v1)
        assert heard == [] and queued == []  # nothing before the commit
        # Commit: the announcement runs, and the receiver's own on-commit enqueue after it.
        with django_capture_on_commit_callbacks(execute=True):
            for callback in callbacks:
                callback()
        assert heard == [v1.pk]
        assert queued == [{"args": (str(v1.pk),), "kwargs": {}}]
        registry.promote(v1)  # already promoted: no second announcement
        assert heard == [v1.pk]
    finally:
        model_promoted.disconnect(listener)


def test_gate_on_a_small_held_out_set_rejects_only_beyond_chance():
    cand, inc = {"auc": 0.80, "brier": 0.20}, {"auc": 0.90, "brier": 0.15}
    straddles = {"auc": (-0.4, 0.2), "brier": (-0.05, 0.12)}
    d = registry.gate_decision(cand, inc, intervals=straddles)
    assert d.passed and d.as_dict()["rule"] == "interval"
    beyond = {"auc": (-0.3, -0.02), "brier": (-0.05, 0.12)}
    d = registry.gate_decision(cand, inc, intervals=beyond)
    assert not d.passed and len(d.reasons) == 1 and "beyond chance" in d.reasons[0]
    # No incumbent: nothing to compare, the point rule's definedness check only.
    assert registry.gate_decision(cand, None, intervals=beyond).as_dict()["rule"] == "point"
