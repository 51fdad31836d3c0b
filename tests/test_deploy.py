"""Deployment files and settings: compose stack shape, environment-driven settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.helpers import REPO


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_has_every_service_with_healthchecks():
    services = _compose()["services"]
    assert set(services) >= {"postgres", "redis", "web", "worker-gpu", "worker-cpu", "beat"}
    for name in ("postgres", "redis", "web", "worker-gpu", "worker-cpu"):
        assert "healthcheck" in services[name], name


def test_compose_commands_and_queues():
    s = _compose()["services"]
    assert "--interface wsgi" in s["web"]["command"]
    assert "deidplatform.wsgi:application" in s["web"]["command"]
    assert "-Q gpu" in s["worker-gpu"]["command"] and "-Q cpu" in s["worker-cpu"]["command"]
    assert "django_celery_beat.schedulers:DatabaseScheduler" in s["beat"]["command"]
    gpu = s["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]


def test_compose_app_services_get_the_variables_settings_read():
    s = _compose()["services"]
    for name in ("web", "worker-gpu", "worker-cpu", "beat"):
        env = s[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["CELERY_BROKER_URL"].startswith("redis://")
        assert "PRIVATE_MEDIA_ROOT" in env
        assert s[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    example = (REPO / ".env.example").read_text()
    assert "SECRET_KEY=" in example


def _settings_json(env: dict) -> subprocess.CompletedProcess:
    code = (
        "import json, django; from django.conf import settings; django.setup();"
        "print(json.dumps({'db': settings.DATABASES['default']['ENGINE'],"
        "'broker': settings.CELERY_BROKER_URL, 'media': str(settings.PRIVATE_MEDIA_ROOT),"
        "'debug': settings.DEBUG}))"
    )
    clean = {k: v for k, v in os.environ.items()
             if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "SECRET_KEY", "DEBUG")}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
        env={**clean, "DJANGO_SETTINGS_MODULE": "deidplatform.settings", **env},
    )


@pytest.mark.slow
def test_embedded_defaults_need_no_server(tmp_path):
    p = _settings_json({"DEBUG": "1", "DEID_DATA_DIR": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["db"] == "django.db.backends.sqlite3"
    assert out["broker"] == "filesystem://"
    assert out["media"].startswith(str(tmp_path))


@pytest.mark.slow
def test_production_settings_come_from_the_environment(tmp_path):
    p = _settings_json({
        "SECRET_KEY": "s3cret", "DEID_DATA_DIR": str(tmp_path),
        "DATABASE_URL": "postgres://u:p@db.internal:5432/deid",
        "CELERY_BROKER_URL": "amqp://guest:guest@mq:5672//",
    })
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["db"] == "django.db.backends.postgresql"
    assert out["broker"] == "amqp://guest:guest@mq:5672//" and out["debug"] is False


def test_secret_key_required_when_debug_is_off(tmp_path):
    p = _settings_json({"DEID_DATA_DIR": str(tmp_path)})
    assert p.returncode != 0
    assert "SECRET_KEY must be set" in p.stderr


def test_make_run_starts_one_worker_per_queue_quietly():
    """cpu work (labels, rounds) must not queue behind de-identification jobs, and the dev
    log shows warnings unless asked for more."""
    procs = dict(line.split(":", 1) for line in (REPO / "Procfile.dev").read_text().splitlines()
                 if line and not line.startswith("#"))
    workers = {name: cmd for name, cmd in procs.items() if " worker " in cmd}
    queues = sorted(cmd.split("-Q ", 1)[1].split()[0] for cmd in workers.values())
    assert queues == ["cpu", "gpu"]  # two processes, one queue each
    assert all("-l ${CELERY_LOG_LEVEL:-warning}" in cmd for name, cmd in procs.items()
               if "celery" in cmd)
    names = [cmd.split("-n ", 1)[1].split()[0] for cmd in workers.values()]
    assert len(set(names)) == 2  # distinct node names on one host
