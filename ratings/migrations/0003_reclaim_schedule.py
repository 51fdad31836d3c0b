"""Schedule the periodic safety net that reclaims expired holds (beat uses the database
scheduler). Next-assignment calls also reclaim lazily; this covers idle campaigns."""

from django.db import migrations

from deidplatform.migration_ops import interval_task


class Migration(migrations.Migration):
    dependencies = [
        ("ratings", "0002_next_pair_index"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [interval_task("ratings: reclaim expired holds",
                                "ratings.tasks.reclaim_expired_holds", every=60, period="seconds")]
