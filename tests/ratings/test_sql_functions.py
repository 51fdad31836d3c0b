"""The PL/pgSQL functions in the database are the ones in ratings/sql/ (one file each).

Migrations install them from those files; this catches a database whose function differs
from the newest file (a file edited without a migration that installs it again, a stale
--reuse-db database, a hand edit in psql)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.db import connection

import ratings

SQL_DIR = Path(ratings.__file__).resolve().parent / "sql"
_HEADER = re.compile(
    r"CREATE\s+OR\s+REPLACE\s+FUNCTION\s+(\w+)\s*\((.*?)\)\s*RETURNS\s+(\w+)\s+"
    r"LANGUAGE\s+(\w+)\s+(\w+)\s+AS\s+\$(\w*)\$(.*)\$\6\$\s*;\s*$",
    re.S | re.I,
)

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL functions"),
    pytest.mark.rating_paths(),
    pytest.mark.django_db,
]


def _words(text: str) -> str:
    return " ".join(text.split())


def _parse(path: Path) -> dict[str, str]:
    text = "\n".join(
        line for line in path.read_text(encoding="utf-8").splitlines()
        if not line.startswith("--")  # the file's own header comment
    )
    m = _HEADER.search(text)
    assert m, f"{path.name}: not one CREATE OR REPLACE FUNCTION … AS $tag$ … $tag$;"
    name, args, returns, language, volatility, _tag, body = m.groups()
    return {"name": name, "args": _words(args), "returns": returns.lower(),
            "language": language.lower(), "volatility": volatility.lower()[0], "body": body}


def _pg_args(args: str) -> str:
    """``name type, …`` with each type as PostgreSQL prints it (timestamptz -> timestamp
    with time zone), as pg_get_function_arguments shows them."""
    out = []
    with connection.cursor() as cursor:
        for arg in filter(None, (a.strip() for a in args.split(","))):
            name, type_name = arg.split(None, 1)
            cursor.execute("SELECT format_type(%s::regtype, NULL)", [type_name])
            out.append(f"{name} {cursor.fetchone()[0]}")
    return ", ".join(out)


def _installed(name: str) -> list[dict[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
                      l.lanname, p.provolatile, p.prosrc
               FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
               WHERE p.proname = %s AND pg_function_is_visible(p.oid)""",
            [name],
        )
        return [{"args": _words(a), "returns": r, "language": lang, "volatility": v, "body": src}
                for a, r, lang, v, src in cursor.fetchall()]


SQL_FILES = sorted(SQL_DIR.glob("*.sql"))


def test_there_are_sql_files():
    assert [p.name for p in SQL_FILES] == ["ratings_hot.sql"]


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: p.name)
def test_installed_function_is_the_newest_file(path: Path):
    want = _parse(path)
    assert path.stem == want["name"], "one file per function, named after it"
    installed = _installed(want["name"])
    assert len(installed) == 1, f"{want['name']}: {len(installed)} overloads installed"
    (got,) = installed
    # prosrc is the body between the dollar quotes exactly as sent: compare it verbatim
    # (line endings aside), the rest as PostgreSQL prints it.
    assert got["body"].replace("\r\n", "\n") == want["body"].replace("\r\n", "\n")
    want["args"] = _pg_args(want["args"])
    assert {k: got[k] for k in ("args", "returns", "language", "volatility")} == {
        k: want[k] for k in ("args", "returns", "language", "volatility")}


def test_the_migration_reads_the_file():
    """No second copy of the SQL in a migration: the body text occurs only in the file."""
    migrations = Path(ratings.__file__).resolve().parent / "migrations"
    body = _parse(SQL_DIR / "ratings_hot.sql")["body"]
    probe = next(line.strip() for line in body.splitlines() if len(line.strip()) > 40)
    assert not [m.name for m in migrations.glob("*.py") if probe in m.read_text()]
