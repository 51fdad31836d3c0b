"""Participant binding and entry checks (issue 12, defect 5): a rater's binding hash,
a campaign's study id, signed-link switch and link secret (one fresh secret per campaign)."""

import secrets

from django.db import migrations, models
from django.db.models import Q

import ratings.models


def fill_link_secrets(apps, schema_editor):
    Campaign = apps.get_model("ratings", "Campaign")
    for campaign in Campaign.objects.filter(entry_link_secret="").only("pk"):
        Campaign.objects.filter(pk=campaign.pk).update(entry_link_secret=secrets.token_urlsafe(32))


class Migration(migrations.Migration):

    dependencies = [
        ("ratings", "0004_hot_path_function"),
    ]

    operations = [
        migrations.AddField(
            model_name="campaign",
            name="external_study_id",
            field=models.CharField(
                blank=True, default="", max_length=128,
                help_text="When set, an entry link's STUDY_ID must equal it (Prolific).",
            ),
        ),
        migrations.AddField(
            model_name="campaign",
            name="require_signed_links",
            field=models.BooleanField(
                default=False,
                help_text="Refuse entry links without a valid sig (HMAC of slug and id).",
            ),
        ),
        # Added empty, then one secret per existing campaign (a callable default would give
        # every existing row the same one).
        migrations.AddField(
            model_name="campaign",
            name="entry_link_secret",
            field=models.CharField(blank=True, default="", max_length=128),
        ),
        migrations.RunPython(fill_link_secrets, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="campaign",
            name="entry_link_secret",
            field=models.CharField(
                blank=True, default=ratings.models._link_secret, max_length=128,
                help_text="Key of the entry links' HMAC signature; share it with the crowd platform only.",
            ),
        ),
        migrations.AddField(
            model_name="rater",
            name="binding_hash",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddIndex(
            model_name="rater",
            index=models.Index(
                condition=~Q(binding_hash=""), fields=["campaign", "binding_hash"],
                name="ratings_rater_binding_idx",
            ),
        ),
    ]
