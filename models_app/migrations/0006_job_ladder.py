from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("models_app", "0005_erasure_audit"),
    ]

    operations = [
        migrations.AddField(
            model_name="deidjob",
            name="ladder",
            field=models.JSONField(blank=True, default=list),
        ),
    ]
