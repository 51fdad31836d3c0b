"""Operations the apps' data migrations share: a beat schedule row, the role groups.

Migrations call these with the historical ``apps`` registry, so they keep working as the
models change. Beat reads its schedule from the database (django-celery-beat), so a
periodic task exists exactly when its migration ran.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import migrations


def interval_task(name: str, task: str, *, every: int, period: str = "minutes",
                  queue: str = "cpu", kwargs: dict[str, Any] | None = None) -> migrations.RunPython:
    """A RunPython that adds (and on reverse removes) one interval PeriodicTask."""

    def add(apps, schema_editor) -> None:
        interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
        task_model = apps.get_model("django_celery_beat", "PeriodicTask")
        interval, _ = interval_model.objects.get_or_create(every=every, period=period)
        defaults = {"task": task, "interval": interval, "queue": queue}
        if kwargs is not None:
            defaults["kwargs"] = json.dumps(kwargs)
        task_model.objects.get_or_create(name=name, defaults=defaults)

    def remove(apps, schema_editor) -> None:
        apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=name).delete()

    return migrations.RunPython(add, remove)


def refresh_roles(apps, schema_editor) -> None:
    """The role groups (operator, data steward, viewer) with their current permissions.

    Permissions are normally created after all migrations (post_migrate); they are created
    here first so a fresh database gets complete groups."""
    from django.contrib.auth.management import create_permissions

    from deidplatform.permissions import ensure_roles

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    ensure_roles(apps)
