"""Ingest pipeline speed per stage on LFW photos, against dlib's detector alone.

    .venv/bin/python -m bench.ingest [--n 300] [--quick]
    .venv/bin/python -m bench.ingest --blank [--code /tmp/ingest-base] [--mem-limit-gb 6]

Stages: validation/decoding (load_rgb), detection + landmarks + chip (detect_and_align),
PNG encoding of image and chip. The reference is the HOG detector alone on the same
pixels, measured in the same run: the ratio says how much the pipeline adds on top of
the unavoidable detection. Prints one JSON line last. No database: the full
``import_faces`` run (with PostgreSQL and file writes) is recorded in BENCHMARKS.md.

``--blank``: the worst case of the face search, face-less (uniform grey) PNGs of 640x480,
1280x960 and 6000x6000 through validation and detection (HOG, then the CNN fallback), each
in a fresh process so its peak RSS is its own, under an address-space limit and a timeout
(the unbounded search needs more memory than a machine has). ``--code DIR`` runs another
checkout's ``models_app.vision`` (e.g. ``git worktree add --detach /tmp/ingest-base HEAD``)
for the before/after comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import LFW_DIR, REPO, cpu_name, emit, machine, parse_args, require_lfw
from models_app.vision import faces
from models_app.vision.imagefile import encode_png, load_rgb

# The first 40 files in sorted order: faces_found is deterministic.
QUICK = {"n": 40}


BLANK_SIZES = ((640, 480), (1280, 960), (6000, 6000))

# Runs in a child process: one blank PNG through load_rgb and detect_and_align with the
# defaults of the checkout on sys.path[0]; prints seconds, faces and peak RSS.
_BLANK_CHILD = """
import io, json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from PIL import Image
from models_app.vision import faces
from models_app.vision.imagefile import load_rgb
w, h = int(sys.argv[2]), int(sys.argv[3])
buf = io.BytesIO()
Image.new("RGB", (w, h), (128, 128, 128)).save(buf, format="PNG")
faces.detect_faces(load_rgb(buf.getvalue()).rgb[:100, :100], cnn_fallback=False)  # load HOG
t0 = time.perf_counter()
face = faces.detect_and_align(load_rgb(buf.getvalue()).rgb)
print(json.dumps({"s": round(time.perf_counter() - t0, 2), "face": face is not None,
      "png_bytes": len(buf.getvalue()),
      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def _blank_one(code: Path, w: int, h: int, mem_limit_gb: float, timeout_s: float) -> dict:
    limit = int(mem_limit_gb * 2**30)

    def limits() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", _BLANK_CHILD, str(code), str(w), str(h)],
            capture_output=True, text=True, timeout=timeout_s, preexec_fn=limits,
            env={**os.environ, "PYTHONPATH": str(code)},
        )
    except subprocess.TimeoutExpired:
        return {"size": f"{w}x{h}", "outcome": f"timeout after {timeout_s:g} s"}
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["?"])[-1][:120]
        return {
            "size": f"{w}x{h}", "outcome": f"failed after {time.perf_counter() - t0:.0f} s "
            f"under a {mem_limit_gb:g} GB address-space limit: {err}",
        }
    return {"size": f"{w}x{h}", "outcome": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}


def blank_main(args: argparse.Namespace) -> None:
    code = args.code.resolve()
    rows = []
    for w, h in BLANK_SIZES:
        rows.append(_blank_one(code, w, h, args.mem_limit_gb, args.timeout))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    emit({"bench": "ingest_blank", "machine": machine(), "code": str(code), "runs": rows})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--data", type=Path, default=LFW_DIR / "lfw-deepfunneled")
    ap.add_argument("--blank", action="store_true", help="face-less PNGs: time and peak RSS")
    ap.add_argument("--code", type=Path, default=REPO, help="checkout to run (--blank)")
    ap.add_argument("--mem-limit-gb", type=float, default=6.0)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per image (--blank)")
    args = parse_args(ap, QUICK)
    if args.blank:
        blank_main(args)
        return
    require_lfw(args.data, "")
    files = sorted(args.data.glob("*/*.jpg"))[: args.n]
    blobs = [p.read_bytes() for p in files]
    faces.detect_faces(load_rgb(blobs[0]).rgb)  # load the models before timing

    t = {"load": 0.0, "detect_align": 0.0, "encode": 0.0, "detector_only": 0.0}
    found = 0
    for data in blobs:
        t0 = time.perf_counter()
        img = load_rgb(data)
        t1 = time.perf_counter()
        face = faces.detect_and_align(img.rgb)
        t2 = time.perf_counter()
        if face is not None:
            found += 1
            encode_png(img.rgb)
            encode_png(face.chip)
        t3 = time.perf_counter()
        faces.detect_faces(img.rgb)
        t4 = time.perf_counter()
        t["load"] += t1 - t0
        t["detect_align"] += t2 - t1
        t["encode"] += t3 - t2
        t["detector_only"] += t4 - t3
    n = len(blobs)
    pipeline = t["load"] + t["detect_align"] + t["encode"]
    result = {
        "bench": "ingest",
        "machine": cpu_name(),
        "images": n,
        "faces_found": found,
        "ms_per_image": {k: round(1000 * v / n, 2) for k, v in t.items()},
        "pipeline_images_per_s": round(n / pipeline, 1),
        "detector_only_images_per_s": round(n / t["detector_only"], 1),
        "pipeline_over_detector": round(pipeline / t["detector_only"], 2),
    }
    emit(result)


if __name__ == "__main__":
    main()
