"""Schedule the periodic safety net that reclaims expired holds (beat uses the database
scheduler). Next-assignment calls also reclaim lazily; this covers idle campaigns."""

from django.db import migrations

TASK_NAME = "ratings: reclaim expired holds"


def add_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={"task": "ratings.tasks.reclaim_expired_holds", "interval": every,
                  "queue": "cpu"},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("ratings", "0002_next_pair_index"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(add_schedule, remove_schedule)]
