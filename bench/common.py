"""What the benchmarks share: where the data is, LFW pairs and images, the machine line,
the ``--quick`` switch, logging, and the one JSON line each prints last.

Run the benchmarks as modules from the repository root (``python -m bench.NAME``) so that
this package and the project's own modules are importable without path tricks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# The project's modules are imported where used: ingest and the ratings load generator must
# not pay for torch.
if TYPE_CHECKING:
    from models_app.proxy.data import ImageBank, PairTable
    from models_app.proxy.network import HumanProxy

REPO = Path(__file__).resolve().parent.parent
# The data lives beside the repository (../shared/data), never inside it.
SHARED_DATA = Path(os.environ.get("DEID_SHARED_DATA", REPO.parent / "shared" / "data"))
LFW_DIR = SHARED_DATA / "lfw"


def require_lfw(lfw: Path, inside: str = "pairs.txt") -> None:
    """Exit with the one "LFW data missing" message unless ``lfw / inside`` exists."""
    if not (lfw / inside).exists():
        sys.exit(f"LFW not found at {lfw} (../shared/data is absent)")


def add_lfw_arguments(ap: argparse.ArgumentParser) -> None:
    """``--lfw`` and ``--pairs-per-fold`` (the quick modes' smaller View-2 protocol)."""
    ap.add_argument("--lfw", type=Path, default=LFW_DIR)
    ap.add_argument(
        "--pairs-per-fold",
        type=int,
        default=0,
        help="use the first N matched and first N mismatched pairs of each pairs.txt fold "
        "(0: all 300 + 300)",
    )


def lfw_folds(lfw: Path, pairs_per_fold: int = 0) -> list[PairTable]:
    """The 10 View-2 folds of ``pairs.txt``, optionally cut to the first N matched and first
    N mismatched pairs of each fold (the file lists each fold's matched pairs first, so this is
    the same as reading a pairs.txt written with only those lines)."""
    from models_app.proxy.data import PairTable, read_lfw_pairs

    folds = read_lfw_pairs(lfw / "pairs.txt")
    if not pairs_per_fold:
        return folds
    n = pairs_per_fold
    return [
        PairTable(
            [p for p in f.pairs if p.target > 0.5][:n] + [p for p in f.pairs if p.target <= 0.5][:n]
        )
        for f in folds
    ]


def load_rgb(path: Path | str) -> np.ndarray:
    """An image file as RGB uint8 pixels. (``models_app.vision.imagefile.load_rgb`` is the
    upload validator: bytes in, size limits, EXIF rotation; the benchmarks read known files.)"""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def median_box(boxes: Iterable[Iterable[int]]) -> tuple[int, ...]:
    """The median detection box: where LFW's centred crops put a face the detectors missed
    (dlib's author's advice for LFW); landmarks are then predicted inside it."""
    return tuple(int(round(v)) for v in np.median(np.array(list(boxes)), axis=0))


def encode_bank(
    model: HumanProxy, contexts: np.ndarray, images: list[str], chunk: int
) -> ImageBank:
    """The proxy's ImageBank of these context crops, encoded ``chunk`` images at a time (the
    model batches by 50 inside; chunks bound memory and pace the progress log)."""
    import torch

    from models_app.proxy.data import ImageBank

    t0 = time.time()
    parts = []
    for i in range(0, len(images), chunk):
        parts.append(
            model.encode_images(contexts[i : i + chunk], images[i : i + chunk], batch_size=50)
        )
        log(f"bank {i + len(parts[-1])}/{len(images)} ({time.time() - t0:.0f} s)")
    return ImageBank(
        images,
        *(torch.cat([getattr(b, k) for b in parts]) for k in ("identity", "small", "descriptors")),
    )


def cpu_name() -> str:
    return platform.processor() or platform.machine()


def machine(detail: str = "") -> str:
    """``x86_64 2 CPU cores`` followed by ``detail`` (GPU, threads, sharing)."""
    return f"{platform.machine()} {os.cpu_count()} CPU cores{detail}"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(ap: argparse.ArgumentParser, quick: Mapping[str, object]) -> argparse.Namespace:
    """Parse with a ``--quick`` switch: it replaces the defaults by ``quick`` (options given
    on the command line still win), a small configuration whose non-timing figures are
    deterministic, for checking that a change keeps the figures."""
    shown = " ".join(
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in quick.items()
    )
    ap.add_argument("--quick", action="store_true", help=f"small, fast run: {shown}")
    args = ap.parse_args()
    if args.quick:
        ap.set_defaults(**quick)
        args = ap.parse_args()
    return args


def emit(result: Mapping[str, object]) -> None:
    """The benchmark's result: one JSON line, printed last (BENCHMARKS.md quotes it)."""
    print(json.dumps(result), flush=True)


# --- Processes the service benchmarks start (free ports, readiness probes) ------------------


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(
    probe: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.2,
    each: Callable[[], object] | None = None,
) -> object:
    """Poll ``probe`` until it returns something truthy (returned); ``each`` runs before every
    poll (a liveness check that raises). Raises TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        if each is not None:
            each()
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def redis_ping(port: int) -> bool:
    """Whether a Redis server answers PING on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
