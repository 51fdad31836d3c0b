# Erasure audit (issue 12, defect 8) and the API roles (defect 7).

import uuid

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from deidplatform.migration_ops import refresh_roles


def drop_roles(apps, schema_editor):
    from deidplatform.permissions import ROLES

    apps.get_model("auth", "Group").objects.filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("models_app", "0004_heartbeats"),
        ("ratings", "0004_hot_path_function"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ErasureRecord",
            fields=[
                ("id", models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ("kind", models.CharField(choices=[("subject", "subject"), ("image", "image")], max_length=10)),
                ("subject_hash", models.CharField(blank=True, db_index=True, default="", max_length=64)),
                ("actor_name", models.CharField(blank=True, default="", max_length=150)),
                ("counts", models.JSONField(blank=True, default=dict)),
                ("created", models.DateTimeField(auto_now_add=True)),
                (
                    "actor",
                    models.ForeignKey(
                        blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+", to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={"ordering": ["-created"]},
        ),
        migrations.RunPython(refresh_roles, drop_roles),
    ]
