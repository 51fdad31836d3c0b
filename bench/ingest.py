"""Ingest pipeline speed per stage on LFW photos, against dlib's detector alone.

    .venv/bin/python -m bench.ingest [--n 300] [--quick]

Stages: validation/decoding (load_rgb), detection + landmarks + chip (detect_and_align),
PNG encoding of image and chip. The reference is the HOG detector alone on the same
pixels, measured in the same run: the ratio says how much the pipeline adds on top of
the unavoidable detection. Prints one JSON line last. No database: the full
``import_faces`` run (with PostgreSQL and file writes) is recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.common import LFW_DIR, cpu_name, emit, parse_args, require_lfw
from models_app.vision import faces
from models_app.vision.imagefile import encode_png, load_rgb

# The first 40 files in sorted order: faces_found is deterministic.
QUICK = {"n": 40}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--data", type=Path, default=LFW_DIR / "lfw-deepfunneled")
    args = parse_args(ap, QUICK)
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
