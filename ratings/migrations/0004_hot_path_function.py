"""PostgreSQL only: ``ratings_hot``, the rater hot path (answer + next pair) as one statement.

The function is the common case of ``services.submit_judgment(then_next=2)`` and of
``services.next_assignments(holds=2)`` for a qualified rater, written in PL/pgSQL so that one
round trip does what took 13 SQL statements through the ORM. Whenever the case is not the
common one it answers ``fallback`` *before writing anything* (the caller then runs the
Python service, the reference), or ``next_fallback`` after recording the judgment when only
the choice of the next pair needs the Python path. Same rules, same lock order as
``ratings/locking.py`` (rater -> pair -> assignment -> campaign last; pair locks taken while
choosing use SKIP LOCKED, never wait). See ratings/ASSIGNMENT.md, "Hot path".

The function's SQL lives in ratings/sql/ratings_hot.sql and is read from there when this
migration runs (so this file is short, and the SQL is one file to diff and review). A
later change to that file needs a new migration that runs the file again (deployed
databases keep the old body otherwise); tests/ratings/test_sql_functions.py checks that
the database has the file's body.

SQLite (the embedded default) has no such function: the ORM path serves it.
"""

from pathlib import Path

from django.db import migrations

SQL_FILE = Path(__file__).resolve().parent.parent / "sql" / "ratings_hot.sql"

DROP_SQL = (
    "DROP FUNCTION IF EXISTS ratings_hot(uuid, text, uuid, boolean, integer, integer, "
    "timestamptz, integer)"
)


def create_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # params=None: the SQL is sent as written (no %-interpolation).
        schema_editor.execute(SQL_FILE.read_text(encoding="utf-8"), params=None)


def drop_function(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_SQL, params=None)


class Migration(migrations.Migration):
    dependencies = [("ratings", "0003_reclaim_schedule")]

    operations = [migrations.RunPython(create_function, drop_function)]
