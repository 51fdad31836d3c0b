"""Every README command block works as printed, for a newcomer in a fresh shell.

All blocks: valid bash; every ``make`` target exists; every ``manage.py`` command exists and
takes the options shown; every ``curl`` names a route that answers that method. Blocks
marked ``<!-- readme-test: live -->`` are also run, command by command, in a clean
environment (no variables from this test session) against the site started by ``make run``
as the README says — only the data directory and the port are the test's own, so a
developer's ``var/`` and a running site are left alone.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
LIVE_MARK = "<!-- readme-test: live -->"
# What a newcomer's shell has; nothing from this test session (settings, database, broker).
FRESH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Tools the README names that are not this project's (checked to be named, not run).
EXTERNAL = {"cp", "docker", "curl", "python", "export"}


@dataclass(frozen=True)
class Block:
    line: int
    text: str
    live: bool


def readme_blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].strip() == "```bash":
            indent = len(lines[i]) - len(lines[i].lstrip())
            before = next((x.strip() for x in reversed(lines[:i]) if x.strip()), "")
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            body = "\n".join(x[indent:] for x in lines[i + 1:j])
            out.append(Block(i + 1, body, before == LIVE_MARK))
            i = j
        i += 1
    return out


def commands(text: str) -> list[str]:
    """The block's commands, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:  # a quoted string may go on over several lines
            words = shlex.split(pending, comments=True)
        except ValueError:
            continue
        if words:
            out.append(shlex.join(words))
        pending = ""
    assert not pending, f"unclosed quote in: {pending}"
    return out


def _words(command: str) -> list[str]:
    """The command's words after any leading VAR=value assignments."""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words.pop(0)
    return words


BLOCKS = readme_blocks()


def test_readme_opens_with_the_two_commands():
    first = BLOCKS[0]
    assert first.line < 10 and [_words(c)[:2] for c in commands(first.text)] == [
        ["make", "run"], ["make", "test"]]
    assert sum(b.live for b in BLOCKS) >= 2


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"line{b.line}")
def test_block_is_valid_bash(block: Block):
    r = subprocess.run(["bash", "-n"], input=block.text, text=True, capture_output=True)
    assert r.returncode == 0, f"README line {block.line}: {r.stderr}"


def _make_targets() -> set[str]:
    targets = set()
    for line in (REPO / "Makefile").read_text().splitlines():
        if m := re.match(r"^([A-Za-z0-9_. -]+):(?!=)", line):
            targets |= set(m.group(1).split())
    return targets


def _check_manage(words: list[str]) -> None:
    from django.core.management import get_commands, load_command_class

    name = words[0]
    assert name in get_commands(), f"no manage.py command {name!r}"
    parser = load_command_class(get_commands()[name], name).create_parser("manage.py", name)
    known = {o for a in parser._actions for o in a.option_strings}
    for w in words[1:]:
        if w.startswith("--"):
            assert w.split("=")[0] in known, f"manage.py {name} takes no {w}"


def _check_curl(words: list[str]) -> None:
    from django.urls import Resolver404, resolve

    url = next(w for w in words if w.startswith("http"))
    method = "GET"
    if "-X" in words:
        method = words[words.index("-X") + 1]
    elif {"-d", "-F"} & set(words):
        method = "POST"
    path = re.sub(r"[A-Z_]+_ID", str(uuid.uuid4()), url.split("8000", 1)[1].split("?")[0])
    path = re.sub(r"/\d+/", f"/{1}/", path)
    try:
        match = resolve(path)
    except Resolver404:
        pytest.fail(f"curl names no route: {path}")
    actions = getattr(match.func, "actions", None)
    if actions is not None:
        assert method.lower() in actions, f"{method} {path}: not allowed ({sorted(actions)})"


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: f"line{b.line}")
def test_every_command_names_something_real(block: Block):
    targets = _make_targets()
    for command in commands(block.text):
        words = _words(command)
        if not words:  # assignments only
            continue
        tool = words[0]
        if tool == "make":
            for target in words[1:]:
                assert target in targets, f"README line {block.line}: no make target {target}"
        elif tool.endswith("python") and words[1:2] == ["manage.py"]:
            _check_manage(words[2:])
        elif tool == "curl":
            _check_curl(words)
        elif tool.startswith(".venv/bin/"):
            assert (REPO / tool).exists() or tool.endswith(("/granian", "/celery")), tool
        else:
            assert tool in EXTERNAL, f"README line {block.line}: unknown tool {tool}"


# --- live -------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    """GET like a browser: cookies kept across the redirects (the rater link binds one)."""
    import base64
    import http.cookiejar
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


@pytest.fixture
def fresh_site(tmp_path):
    """`make run` in a clean environment, on its own data directory and port."""
    if not (REPO.parent / "shared" / "data" / "lfw").is_dir():
        pytest.skip("../shared/data/lfw is absent: the README's import needs it")
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv: `make install` first")
    port = _free_port()
    env = {"PATH": FRESH_PATH, "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "DEID_DATA_DIR": str(tmp_path / "var"), "PORT": str(port)}
    log = open(tmp_path / "make-run.log", "w+")
    proc = subprocess.Popen(["make", "run"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while _get(base + "/healthz")[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"make run did not serve {base}:\n{log.read()[-4000:]}")
            time.sleep(1)
        yield env, port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_live_blocks_work_as_printed_in_a_fresh_shell(fresh_site):
    env, port = fresh_site
    ran = 0
    for block in (b for b in BLOCKS if b.live):
        for command in commands(block.text):
            command = command.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            r = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, text=True,
                               capture_output=True, timeout=600)
            where = f"README line {block.line}: {command[:90]}"
            assert r.returncode == 0, f"{where}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
            if _words(command)[0] == "curl":
                body = json.loads(r.stdout)
                assert not (isinstance(body, dict) and "errors" in body), f"{where}\n{body}"
            ran += 1
    assert ran >= 6
    # What the README then promises: the campaign is active and its rater link opens.
    base = f"http://127.0.0.1:{port}"
    code, body = _get(base + "/api/ratings/campaigns/1/", ("operator", "PASSWORD"))
    assert code == 200 and json.loads(body)["status"] == "active"
    code, body = _get(base + "/rate/pilot/?PROLIFIC_PID=me-1")
    assert code == 200 and b"consent" in body.lower()
    code, body = _get(base + "/api/subjects/", ("operator", "PASSWORD"))
    assert code == 200 and json.loads(body)["count"] >= 10
