"""Dispatch and liveness of training runs and de-identification jobs (issue 12):

* ``dispatched`` (handed to the broker; null: never), ``claim`` (the attempt that owns the
  row) and ``heartbeat`` (that attempt's last sign of life) on both;
* training runs can be cancelled;
* the sweeper's schedule: every minute, re-send unsent or lost work, re-queue work whose
  worker stopped beating, re-queue stuck label updates (admin → Periodic tasks).
"""

from django.db import migrations, models

from deidplatform.migration_ops import interval_task


class Migration(migrations.Migration):
    dependencies = [
        ("models_app", "0003_retraining_schedule"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.AddField(
            model_name="deidjob", name="claim",
            field=models.UUIDField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="deidjob", name="dispatched",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="deidjob", name="heartbeat",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="trainingrun", name="claim",
            field=models.UUIDField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="trainingrun", name="dispatched",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="trainingrun", name="heartbeat",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="trainingrun", name="status",
            field=models.CharField(
                choices=[("queued", "queued"), ("running", "running"),
                         ("succeeded", "succeeded"), ("failed", "failed"),
                         ("cancelled", "cancelled")],
                default="queued", max_length=10,
            ),
        ),
        migrations.AddIndex(
            model_name="trainingrun",
            index=models.Index(fields=["status"], name="trainingrun_status"),
        ),
        interval_task("dispatch: sweep stale work", "models_app.tasks.sweep_stale_work",
                      every=1, kwargs={}),
    ]
