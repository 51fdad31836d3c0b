"""PostgreSQL only: ``ratings_hot`` again from ratings/sql/ratings_hot.sql, whose pair locks
are now ``FOR NO KEY UPDATE`` (as ratings/locking.py's): a judgment's or an assignment's
foreign-key check takes ``FOR KEY SHARE`` on the pair, which ``FOR UPDATE`` blocked, and two
concurrent submissions could deadlock."""

import importlib

from django.db import migrations


_0004 = importlib.import_module("ratings.migrations.0004_hot_path_function")


class Migration(migrations.Migration):
    dependencies = [("ratings", "0006_simulated_raters")]

    operations = [migrations.RunPython(_0004.create_function, migrations.RunPython.noop)]
