"""PostgreSQL only: ``ratings_hot`` again from ratings/sql/ratings_hot.sql, which now hands a
rater who was given the completion code (``finished_at``) to the Python path, where they
are done for good."""

import importlib

from django.db import migrations


_0004 = importlib.import_module("ratings.migrations.0004_hot_path_function")


class Migration(migrations.Migration):
    dependencies = [("ratings", "0008_rater_finished_at")]

    operations = [migrations.RunPython(_0004.create_function, migrations.RunPython.noop)]
