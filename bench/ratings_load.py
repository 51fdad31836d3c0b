"""Rating platform under load: a WSGI server + PostgreSQL, N simulated raters over HTTP.

    .venv/bin/python -m bench.ratings_load [--raters 50] [--seconds 20] [--workers 2] [--quick]

Creates a fresh database (``ratings_bench`` on DATABASE_URL's server), a campaign with
plenty of pairs, starts the server (``--server``: granian, the deployed one, or gunicorn)
on 127.0.0.1, and runs N raters as keep-alive HTTP clients (asyncio, raw HTTP/1.1: the load generator must stay light on a 2-core machine).
Each rater enters through a Prolific-style link, then loops: POST next -> POST judgment,
with no think time. Reports judgments/s, next-assignment latency p50/p99, and checks
that no rater holds a pair twice, no pair exceeds k, and every 2xx submission is in the
database exactly once (and nothing else is). Also CPU time per judgment of the server,
of the database's backends and of this load generator (the machine is shared: CPU per
judgment is the contention-robust figure). Sessions come from Redis (``cached_db``,
``--session-cache-url ''`` for database sessions). Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from bench.common import REPO, emit, free_port, parse_args

# 5 raters for 5 s on 4,000 pairs, in a database of its own (this bench drops and recreates
# its database). Throughput and latency are noise at this size; the correctness counters
# (errors, double assignments, pairs over k, lost/unexpected judgments, starved raters, ok)
# are the figures to compare.
QUICK = {
    "raters": 5,
    "seconds": 5.0,
    "pairs": 4000,
    "database_url": "postgres://postgres@127.0.0.1:5432/ratings_bench_quick",
}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# --- Setup --------------------------------------------------------------------------------


def setup_database(env: dict[str, str], n_pairs: int, k: int) -> str:
    """Fresh database, migrations, images and a campaign; returns the campaign slug."""
    import psycopg

    url = urlparse(env["DATABASE_URL"])
    name = url.path.lstrip("/")
    admin = url._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True
    )
    script = f"""
import hashlib, io, uuid
from django.core.files.base import ContentFile
from PIL import Image
from models_app.models import FaceImage
from ratings.models import Campaign
from ratings.services import create_pairs
imgs = []
for i in range(60):
    buf = io.BytesIO(); Image.new("RGB", (150, 150), (i * 4 % 256, 90, 160)).save(buf, "PNG")
    im = FaceImage(id=uuid.uuid4(), sha256=hashlib.sha256(buf.getvalue() + bytes([i])).hexdigest(),
                   width=150, height=150)
    im.file.save("x.png", ContentFile(buf.getvalue()), save=False)
    im.chip.save("x.png", ContentFile(buf.getvalue()), save=False)
    im.save(); imgs.append(im)
c = Campaign.objects.create(name="Load", slug="load", status="active", judgments_per_pair={k},
    gold_rate=0.0, attention_rate=0.0, qualification_size=0, min_response_ms=0,
    hold_timeout_s=600)
items = [{{"image_a": imgs[i % 60].pk, "image_b": imgs[(i * 7 + 1) % 60].pk}}
         for i in range({n_pairs}) if i % 60 != (i * 7 + 1) % 60]
create_pairs(c, items)
from django.db import connection
with connection.cursor() as cur:
    cur.execute("ANALYZE")
print(c.slug)
"""
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


# --- A minimal keep-alive HTTP/1.1 client ---------------------------------------------------


class Http:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.cookies: dict[str, str] = {}

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, list[str]], bytes]:
        for _ in range(2):
            if self.writer is None:
                await self.connect()
            try:
                return await self._request(method, path, body, headers or {})
            except (ConnectionError, asyncio.IncompleteReadError):
                self.writer = None  # server closed the keep-alive connection: reconnect once
        raise ConnectionError(f"{method} {path} failed twice")

    async def _request(self, method, path, body, headers):
        assert self.reader and self.writer
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Connection: keep-alive",
            f"Content-Length: {len(body)}",
        ]
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        resp_headers: dict[str, list[str]] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            resp_headers.setdefault(k.strip().lower(), []).append(v.strip())
        length = int(resp_headers.get("content-length", ["0"])[0])
        data = await self.reader.readexactly(length) if length else b""
        for c in resp_headers.get("set-cookie", []):
            name, _, rest = c.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        if "close" in resp_headers.get("connection", [""])[0].lower():
            self.writer.close()
            self.writer = None
        return status, resp_headers, data


# --- Raters ----------------------------------------------------------------------------------


async def rater(
    i: int,
    port: int,
    slug: str,
    deadline: float,
    stats: dict,
    prefix: str,
    interval: float | None = None,
) -> None:
    http = Http("127.0.0.1", port)
    t0 = time.perf_counter()
    await http.request("GET", f"/rate/{slug}/?PROLIFIC_PID={prefix}{i:04d}&STUDY_ID=S&SESSION_ID=X")
    stats["entry_ms"].append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    status, _, page = await http.request("GET", f"/rate/{slug}/")
    stats["page_ms"].append((time.perf_counter() - t0) * 1000)
    assert status == 200, status
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    headers = {
        "X-CSRFToken": token,
        "Content-Type": "application/json",
        "Referer": f"http://127.0.0.1:{port}/rate/{slug}/",
    }
    rng = random.Random(i)
    # Like the rater page: one "next" at the start, then each answer's reply carries the
    # next assignment. The latency of that reply is the wait for the next pair.
    t0 = time.perf_counter()
    status, _, data = await http.request("POST", f"/api/ratings/rate/{slug}/next", b"{}", headers)
    stats["next_ms"].append((time.perf_counter() - t0) * 1000)
    stats["first_next_ms"].append(stats["next_ms"][-1])
    if status != 200:
        stats["errors"].append(("next", status, data[:200].decode(errors="replace")))
        return
    nxt = json.loads(data)
    # Paced (--rate): answers on a fixed schedule, each rater at its own phase; latency is
    # measured from the scheduled time, so a server that falls behind is not excused.
    scheduled = time.perf_counter() + rng.random() * (interval or 0)
    while time.monotonic() < deadline:
        if nxt["status"] != "ok":
            stats["out_of_work"] += 1
            return
        a = nxt["assignments"][0]
        payload = json.dumps(
            {
                "same": rng.random() < 0.5,
                "confidence": rng.randint(1, 4),
                "response_ms": rng.randint(800, 4000),
            }
        ).encode()
        if interval:
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            t0, scheduled = scheduled, scheduled + interval
        else:
            t0 = time.perf_counter()
        status, _, data = await http.request(
            "POST", f"/api/ratings/rate/{slug}/assignments/{a['id']}/judgment", payload, headers
        )
        stats["next_ms"].append((time.perf_counter() - t0) * 1000)
        stats["answer_ms"].append(stats["next_ms"][-1])
        if t0 - stats["t0"] >= 3.0:  # after the arrival burst
            stats["steady_ms"].append(stats["next_ms"][-1])
        if status not in (200, 201):
            stats["errors"].append(("submit", status, data[:200].decode(errors="replace")))
            return
        stats["ok_ids"].append(a["id"])
        stats["per_rater"][i] = stats["per_rater"].get(i, 0) + 1
        nxt = json.loads(data)["next"]


async def run_raters(
    n: int, port: int, slug: str, seconds: float, prefix: str = "bench", rate: float = 0.0
) -> tuple[dict, float]:
    stats: dict = {
        "next_ms": [],
        "first_next_ms": [],
        "answer_ms": [],
        "ok_ids": [],
        "errors": [],
        "out_of_work": 0,
        "steady_ms": [],
        "per_rater": {},
        "entry_ms": [],
        "page_ms": [],
        "t0": time.perf_counter(),
    }
    start = time.monotonic()
    # Bounded: a server that stops answering fails the run instead of hanging it.
    await asyncio.wait_for(
        asyncio.gather(
            *(
                rater(i, port, slug, start + seconds, stats, prefix, n / rate if rate else None)
                for i in range(n)
            )
        ),
        timeout=seconds + 120,
    )
    return stats, time.monotonic() - start


def server_command(args: argparse.Namespace, port: int) -> list[str]:
    """The WSGI server: gunicorn (gthread) or granian (Rust HTTP, Python threads per worker)."""
    if args.server == "granian":
        return [
            sys.executable, "-m", "granian", "--interface", "wsgi",
            "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(args.workers), "--blocking-threads", str(args.threads),
            "--runtime-threads", "1",
            "--no-ws", "--log-level", "warning",
            "deidplatform.wsgi:application",
        ]  # fmt: skip
    return [
        sys.executable, "-m", "gunicorn", "deidplatform.wsgi",
        "-b", f"127.0.0.1:{port}", "-k", "gthread",
        "-w", str(args.workers), "--threads", str(args.threads),
        "--keep-alive", "30",
        "--preload",  # import the app once, before the fork
        "--log-level", "warning",
    ]  # fmt: skip


def server_label(args: argparse.Namespace) -> str:
    kind = "granian wsgi" if args.server == "granian" else "gunicorn gthread"
    return f"{kind} {args.workers}x{args.threads}"


def cpu_seconds(server_pid: int, dbname: str) -> dict[str, float]:
    """CPU time used so far by the server (master + workers) and this database's backends.

    The machine is shared, so wall-clock rates depend on what else runs; CPU per judgment
    does not (much), and says what the two cores could do on their own.
    """
    tick = os.sysconf("SC_CLK_TCK")
    out = {"web": 0.0, "db": 0.0}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        pgid = int(fields[2])
        if pgid == server_pid or int(entry) == server_pid:
            out["web"] += used
        elif cmd.startswith("postgres: ") and f" {dbname} " in cmd:
            out["db"] += used
    return out


def check_database(dsn: str, ok_ids: list[str], k: int) -> dict:
    import psycopg

    with psycopg.connect(dsn) as conn:
        double = conn.execute(
            "SELECT count(*) FROM (SELECT rater_id, pair_id FROM ratings_assignment "
            "WHERE state <> 'expired' GROUP BY 1, 2 HAVING count(*) > 1) d"
        ).fetchone()[0]
        over_k = conn.execute(
            "SELECT count(*) FROM (SELECT pair_id FROM ratings_judgment GROUP BY 1 "
            "HAVING count(*) > %s) o",
            (k,),
        ).fetchone()[0]
        rows = conn.execute(
            "SELECT a.public_id::text, count(j.id) FROM ratings_assignment a "
            "JOIN ratings_judgment j ON j.assignment_id = a.id GROUP BY 1"
        ).fetchall()
    in_db = {pid: n for pid, n in rows}
    lost = sum(1 for x in ok_ids if in_db.get(x) != 1)
    unexpected = len(set(in_db) - set(ok_ids))
    return {
        "double_assignments": double,
        "pairs_over_k": over_k,
        "lost_judgments": lost,
        "unexpected_judgments": unexpected,
        "judgments_in_db": sum(in_db.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--raters", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20.0)
    # 2 cores: two processes (one GIL each), threads to overlap the database round trips.
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--server", choices=("gunicorn", "granian"), default="granian")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="offered judgments/s over all raters (paced); 0: as fast as answered (closed loop)",
    )
    ap.add_argument("--pairs", type=int, default=6000)
    ap.add_argument(
        "--session-cache-url",
        default=os.environ.get("SESSION_CACHE_URL", "redis://127.0.0.1:6379/2"),
        help="'' for database sessions",
    )
    ap.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/ratings_bench"
        ),
    )
    args = parse_args(ap, QUICK)

    tmp = Path(tempfile.mkdtemp(prefix="ratings-load-"))
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="deidplatform.settings",
        DATABASE_URL=args.database_url,
        SECRET_KEY="bench-only-secret",
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1",
        SESSION_COOKIE_SECURE="0",
        CSRF_COOKIE_SECURE="0",
        DEID_DATA_DIR=str(tmp),
        CELERY_BROKER_URL=os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/2"),
        LOG_LEVEL="WARNING",
        DB_CONN_MAX_AGE="600",
    )
    # Every simulated rater comes from 127.0.0.1 with no think time, far above the default
    # per-rater and per-IP limits (settings "Rate limits"): limits stay on (their cache
    # round trip is measured) but high enough never to throttle the load.
    for name in ("RATE_LIMIT_ENTRY_PER_IP", "RATE_LIMIT_ACTIONS_PER_RATER",
                 "RATE_LIMIT_ACTIONS_PER_IP"):
        env.setdefault(name, "1000000/60")
    # Sessions from Redis (cached_db, see settings.py): no SQL per request for the session.
    if args.session_cache_url:
        env["SESSION_CACHE_URL"] = args.session_cache_url
    slug = setup_database(env, args.pairs, args.k)
    port = free_port()
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen(
        server_command(args, port),
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            sys.exit("the server did not start: " + (tmp / "server.log").read_text())
        # Warm every worker (imports, URL resolver, DB connection) before measuring: keep-alive
        # connections stick to one worker, so as many warm raters as measured ones.
        warm, _ = asyncio.run(run_raters(args.raters, port, slug, 3.0, "warm"))
        dbname = urlparse(args.database_url).path.lstrip("/")
        cpu0 = cpu_seconds(server.pid, dbname)
        load0 = os.getloadavg()[0]
        client0 = time.process_time()
        stats, elapsed = asyncio.run(
            run_raters(args.raters, port, slug, args.seconds, rate=args.rate)
        )
        client_cpu = time.process_time() - client0
        cpu1 = cpu_seconds(server.pid, dbname)
        load1 = os.getloadavg()[0]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
        log.close()
    checks = check_database(args.database_url, stats["ok_ids"] + warm["ok_ids"], args.k)
    n_ok = len(stats["ok_ids"])
    result = {
        "bench": "ratings_load",
        "raters": args.raters,
        "offered_rate": args.rate or "closed loop",
        "seconds": round(elapsed, 2),
        "server": server_label(args),
        "k": args.k,
        "judgments": n_ok,
        "judgments_per_s": round(n_ok / elapsed, 1),
        "next_p50_ms": round(pct(stats["next_ms"], 50), 2),
        "next_p99_ms": round(pct(stats["next_ms"], 99), 2),
        # The mean and the extremes too: a closed loop obeys Little's law on the mean
        # (raters / judgments per s), so a tail beyond p99 shows here, not in p99.
        "next_mean_ms": round(sum(stats["next_ms"]) / max(1, len(stats["next_ms"])), 2),
        "next_p999_ms": round(pct(stats["next_ms"], 99.9), 2),
        "next_max_ms": round(max(stats["next_ms"], default=float("nan")), 2),
        # Fairness: a server that serves some connections and parks the others (granian
        # with a small --backpressure did) shows a fast p99 for the lucky few.
        "judgments_per_rater_min_max": [
            min((stats["per_rater"].get(i, 0) for i in range(args.raters)), default=0),
            max(stats["per_rater"].values(), default=0),
        ],
        "starved_raters": sum(1 for i in range(args.raters) if not stats["per_rater"].get(i)),
        # The same split: the entry (50 raters arriving at once: entry link, rater page,
        # first "next") and the answer -> next-pair replies.
        "first_next_p50_ms": round(pct(stats["first_next_ms"], 50), 2),
        "entry_link_p50_ms": round(pct(stats["entry_ms"], 50), 2),
        "rater_page_p50_ms": round(pct(stats["page_ms"], 50), 2),
        "answer_next_p50_ms": round(pct(stats["answer_ms"], 50), 2),
        "answer_next_p99_ms": round(pct(stats["answer_ms"], 99), 2),
        "steady_next_p50_ms": round(pct(stats["steady_ms"], 50), 2),  # from 3 s on
        "steady_next_p99_ms": round(pct(stats["steady_ms"], 99), 2),
        "errors": len(stats["errors"]),
        "first_errors": stats["errors"][:3],
        "double_assignments": checks["double_assignments"],
        "pairs_over_k": checks["pairs_over_k"],
        "lost_judgments": checks["lost_judgments"],
        "unexpected_judgments": checks["unexpected_judgments"],
        "raters_out_of_work": stats["out_of_work"],
        "cpus": os.cpu_count(),
        "load_avg_1m": round((load0 + load1) / 2, 2),
        "web_cpu_ms_per_judgment": round((cpu1["web"] - cpu0["web"]) * 1000 / max(n_ok, 1), 2),
        "db_cpu_ms_per_judgment": round((cpu1["db"] - cpu0["db"]) * 1000 / max(n_ok, 1), 2),
        "client_cpu_ms_per_judgment": round(client_cpu * 1000 / max(n_ok, 1), 2),
        "sessions": os.environ.get("SESSION_ENGINE", "").rsplit(".", 1)[-1]
        or ("cached_db (redis)" if args.session_cache_url else "db"),
    }
    cpu_per = (
        result["web_cpu_ms_per_judgment"]
        + result["db_cpu_ms_per_judgment"]
        + result["client_cpu_ms_per_judgment"]
    ) / 1000
    # What the two cores would sustain with nothing else running (CPU-bound), the load
    # generator included: it runs on the same cores.
    result["cpu_bound_judgments_per_s"] = round(os.cpu_count() / cpu_per, 1) if cpu_per else None
    result["ok"] = (
        result["errors"] == 0
        and checks["double_assignments"] == 0
        and checks["pairs_over_k"] == 0
        and checks["lost_judgments"] == 0
        and checks["unexpected_judgments"] == 0
        and result["starved_raters"] == 0
    )
    emit(result)


if __name__ == "__main__":
    main()
