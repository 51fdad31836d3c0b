"""Simulated crowds (issue 11, item 5): a rater's server-set ``simulated`` flag, and a
campaign's switches allowing simulated raters and letting their judgments into labels."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("ratings", "0005_participant_binding"),
    ]

    operations = [
        migrations.AddField(
            model_name="campaign",
            name="allows_simulation",
            field=models.BooleanField(
                default=False,
                help_text="Entry ids starting with 'SIM-' become simulated raters.",
            ),
        ),
        migrations.AddField(
            model_name="campaign",
            name="labels_include_simulated",
            field=models.BooleanField(
                default=False, help_text="Labels count simulated raters' judgments too (dry runs)."
            ),
        ),
        migrations.AddField(
            model_name="rater",
            name="simulated",
            field=models.BooleanField(default=False, editable=False),
        ),
    ]
