"""Schedules for retraining the human proxy (django-celery-beat's database scheduler; an
operator edits or disables them in the admin under Periodic tasks):

* every 15 minutes: retrain when at least DEID_RETRAIN_MIN_NEW_LABELS new aggregated
  labels arrived since the last run;
* weekly (Monday 03:00 UTC): retrain when any new label arrived.
"""

import json

from django.db import migrations

EVERY_15 = "human proxy: retrain after N new labels"
WEEKLY = "human proxy: weekly retraining"


def add(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=15, period="minutes")
    weekly, _ = CrontabSchedule.objects.get_or_create(
        minute="0", hour="3", day_of_week="1", day_of_month="*", month_of_year="*",
        timezone="UTC",
    )
    PeriodicTask.objects.get_or_create(
        name=EVERY_15,
        defaults={"task": "models_app.tasks.maybe_retrain", "interval": every, "queue": "cpu",
                  "kwargs": json.dumps({"scheduled": False})},
    )
    PeriodicTask.objects.get_or_create(
        name=WEEKLY,
        defaults={"task": "models_app.tasks.maybe_retrain", "crontab": weekly, "queue": "cpu",
                  "kwargs": json.dumps({"scheduled": True})},
    )


def remove(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(
        name__in=[EVERY_15, WEEKLY]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("models_app", "0002_registry_and_jobs"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(add, remove)]
