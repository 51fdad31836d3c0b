"""The final scoring of a saved output, with and without the confirmation memo, in one run.

A job whose candidate was confirmed on the photo (``confirm.score_as_saved``) saves that
photo as a PNG and scores the saved file again (``confirm.score_saved_output``): the same
bytes, so the memo answers the fresh detection and both dlib-runtime embeddings. Measured on
the packaged portrait (no ../shared needed), CPU time (``time.process_time``), alternating
uncached (memo cleared) and cached calls so load hits both alike; medians are reported.
Prints one JSON line last.

    .venv/bin/python -m bench.confirm [--reps 7] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import emit, machine, parse_args

QUICK = {"reps": 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    args = parse_args(ap, QUICK)
    torch.set_num_threads(1)
    import matplotlib
    from PIL import Image

    from models_app.deid import confirm
    from models_app.deid.state import prepare_source

    # A real face shipped with matplotlib (the engine tests' portrait).
    with Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg") as im:
        src = prepare_source(np.asarray(im.convert("RGB")))
    if src is None:
        raise SystemExit("no face found in the packaged portrait")
    photo = np.clip(src.photo.astype(int) + 12, 0, 255).astype(np.uint8)  # an "output"
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="PNG")
    data = buf.getvalue()
    first = confirm.score_saved_output(src.chip, data)  # loads the models
    uncached, cached = [], []
    for _ in range(args.reps):
        confirm.clear_memo()
        t0 = time.process_time()
        a = confirm.score_saved_output(src.chip, data)
        uncached.append(time.process_time() - t0)
        t0 = time.process_time()
        b = confirm.score_saved_output(src.chip, data)
        cached.append(time.process_time() - t0)
        assert a.score_b == b.score_b == first.score_b  # the memo changes the time only
    u, c = statistics.median(uncached), statistics.median(cached)
    emit({
        "bench": "confirm", "date": dt.date.today().isoformat(), "machine": machine(", 1 thread"),
        "reps": args.reps, "score_b": round(first.score_b, 6),
        "final_scoring_cpu_s_uncached": round(u, 4),
        "final_scoring_cpu_s_after_confirmation": round(c, 4),
        "saving_cpu_s": round(u - c, 4), "ratio": round(u / c, 1) if c > 0 else None,
    })


if __name__ == "__main__":
    main()
