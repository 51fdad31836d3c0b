"""The perceptual battery with the registry: every training run's version carries its
battery result (held-out faces, stored, shown by the API); the gate refuses a version that
breaks the invariance set, naming the items, and an operator can force it; the command runs
it again for a version or for an observer, with clear errors."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from models_app.models import ModelVersion, TrainingRun
from models_app.training import runner
from models_app.training.selectors import battery_images, held_out_subjects
from tests.models_app.fixtures import ingest_subjects, label_pairs, promote_untrained_proxy

FAST = {"natural_same": 20, "natural_different": 20, "train": {"stop": {"max_epochs": 2}}}


@pytest.fixture
def labelled(lfw_dir):
    from tests.ratings.factories import make_campaign

    groups = ingest_subjects(lfw_dir, n_subjects=12, per_subject=3)
    label_pairs(groups, make_campaign())
    return groups


@pytest.mark.django_db
def test_battery_faces_are_held_out_subjects_with_a_donor_of_another(labelled):
    triples = battery_images(50)
    subjects = {str(g[0].subject_id) for g in labelled}
    held = set(held_out_subjects(subjects))
    assert 2 <= len(triples) == len(held)
    for a, b, donor in triples:
        assert str(a.subject_id) in held and a.subject_id == b.subject_id and a.pk != b.pk
        assert donor.subject_id != a.subject_id
    assert battery_images(50) == triples  # the same faces for every version


@pytest.mark.django_db
def test_run_stores_battery_and_gate_refuses_broken_invariance(labelled, settings, staff_client):
    # Tolerance 0: any change of P(same) at all breaks an item, so the gate must refuse.
    settings.DEID_BATTERY_TOLERANCE = 0.0
    run = TrainingRun.objects.create(config=FAST)
    out = runner.execute_training_run(str(run.pk))
    assert out["status"] == "succeeded" and out["gate"] is False
    v1 = ModelVersion.objects.get(training_run_id=run.pk)
    assert v1.status == "rejected"
    battery = v1.battery
    assert battery["n_faces"] >= 2 and battery["invariance_passed"] is False
    assert set(battery["invariance"]) >= {"hue_rotation_120", "noise_4_levels", "jpeg_70",
                                          "shift_2px", "mirror", "brightness_+10%"}
    broken = [r for r in v1.gate["reasons"] if r.startswith("perceptual battery")]
    assert len(broken) == 1 and "noise_4_levels" in broken[0]
    # Shown by the API, refused on promotion with the reason, forced by an operator.
    r = staff_client.get(f"/api/model-versions/{v1.pk}/")
    assert r.status_code == 200 and r.json()["battery"]["failed"] == battery["failed"]
    r = staff_client.post(f"/api/model-versions/{v1.pk}/promote/", {}, content_type="application/json")
    assert r.status_code == 409 and "perceptual battery" in r.json()["errors"][0]["detail"]
    r = staff_client.post(f"/api/model-versions/{v1.pk}/promote/", {"force": True},
                          content_type="application/json")
    assert r.status_code == 200 and r.json()["status"] == "promoted"


@pytest.mark.django_db
def test_gate_off_keeps_the_result_but_does_not_refuse(labelled, settings):
    settings.DEID_BATTERY_TOLERANCE = 0.0
    settings.DEID_BATTERY_GATE = False
    run = TrainingRun.objects.create(config=FAST)
    out = runner.execute_training_run(str(run.pk))
    v1 = ModelVersion.objects.get(training_run_id=run.pk)
    assert out["gate"] is True and v1.status == "promoted"
    assert v1.battery["invariance_passed"] is False  # still measured and stored


@pytest.mark.django_db
def test_command_reruns_for_a_version_and_an_observer(labelled):
    v = promote_untrained_proxy()
    assert v.battery == {}
    out = io.StringIO()
    call_command("perceptual_battery", "--faces", "3", stdout=out, stderr=io.StringIO())
    v.refresh_from_db()
    assert v.battery["n_faces"] == 3 and json.loads(out.getvalue()) == v.battery
    out, err = io.StringIO(), io.StringIO()
    call_command("perceptual_battery", "--observer", "external_features", "--faces", "2",
                 stdout=out, stderr=err)
    shown = json.loads(out.getvalue())
    assert shown["n_faces"] == 2 and set(shown["effects"]) == {
        "face_alone", "negation", "inner_face_in_other_head"}
    assert "observer external_features" in err.getvalue()
    v.refresh_from_db()
    assert v.battery["n_faces"] == 3  # the observer's run is printed, not stored
    with pytest.raises(CommandError, match="no human-proxy version 99"):
        call_command("perceptual_battery", "--proxy-version", "99")
    with pytest.raises(CommandError, match="cannot import"):
        call_command("perceptual_battery", "--observer", "nope.nothing:observe")
    with pytest.raises(CommandError, match="--faces"):
        call_command("perceptual_battery", "--faces", "-1")


@pytest.mark.django_db
def test_command_with_too_few_subjects_says_so(lfw_dir):
    ingest_subjects(lfw_dir, n_subjects=1, per_subject=2)
    promote_untrained_proxy()
    with pytest.raises(CommandError, match="too few held-out subjects"):
        call_command("perceptual_battery")


@pytest.mark.django_db
def test_an_rgb_incumbent_is_not_warm_started(labelled):
    """A promoted version of the older RGB architecture is replaced by a fresh network of
    the current one (luminance, mirror-symmetric), not continued."""
    import torch

    from models_app.proxy.config import ProxyConfig, ProxyMeta
    from models_app.proxy.io import proxy_to_bytes
    from models_app.proxy.network import HumanProxy
    from models_app.training import registry

    torch.manual_seed(0)
    old = HumanProxy(ProxyConfig(colour="rgb", mirror_symmetric=False), ProxyMeta(prior=True))
    registry.promote(registry.register_version(
        kind="human_proxy", weights=proxy_to_bytes(old), config={}, metrics={}, is_prior=True))
    run = TrainingRun.objects.create(config=FAST)
    out = runner.execute_training_run(str(run.pk))
    assert out["status"] == "succeeded"
    v = ModelVersion.objects.get(training_run_id=run.pk)
    assert v.metrics["warm_start"] is False
    # 12 subjects leave a handful of held-out pairs: the version says so, with an interval.
    warning = v.metrics["warnings"][0]
    assert "too small" in warning and f"{v.metrics['n_held_out']} pairs" in warning
    assert v.gate["warnings"] == v.metrics["warnings"]
    assert "auc_ci95" in v.metrics["held_out"]
    assert v.config["proxy"]["colour"] == "luminance" and v.config["proxy"]["mirror_symmetric"]
    # With an incumbent of the current architecture, the next run continues it.
    if v.status != "promoted":
        registry.promote(v, force=True)
    run2 = TrainingRun.objects.create(config=FAST)
    runner.execute_training_run(str(run2.pk))
    assert ModelVersion.objects.get(training_run_id=run2.pk).metrics["warm_start"] is True
