"""Chips/s of dlib's runtime against the PyTorch port, at batch 1 and 32, in one run.

dlib: ``face_recognition_model_v1.compute_face_descriptor`` (forward only; it has no
backward; dlib-bin's CPU build runs it on one thread). Torch: forward under ``inference_mode``, and forward+backward (gradient w.r.t. the
input chips of a loss on Θ0 and every tap, as formula A needs). Measurements are interleaved
(dlib, torch, dlib, ...) so load from other processes hits both alike; medians are reported.
Prints one JSON line last.

    .venv/bin/python -m bench.cfru_speed [--reps 5] [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.common import emit, machine, parse_args
from models_app.vision import dlib_dat
from models_app.vision import dlib_resnet as dr

# Two repetitions: the timings are noise at this size; max_abs_diff_vs_dlib_b32 (seeded
# chips) is the deterministic figure.
QUICK = {"reps": 2}


def make_chips(n: int, seed: int = 0) -> np.ndarray:
    # Content does not change the cost of a dense ResNet: smooth random colour images.
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, size=(n, 10, 10, 3))
    img = np.kron(low, np.ones((1, 15, 15, 1))) + rng.normal(0, 20, size=(n, 150, 150, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: dlib's runtime runs on one thread too; on a "
        "shared machine more threads than idle cores stall at every op, see BENCHMARKS.md)",
    )
    args = parse_args(ap, QUICK)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    import dlib

    rec = dlib.face_recognition_model_v1(str(dlib_dat.default_model_path()))
    model = dr.get_dlib_resnet(args.device)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    chips = make_chips(32)

    def dlib_fwd(b: int) -> Callable[[], object]:
        if b == 1:
            return lambda: rec.compute_face_descriptor(chips[0])
        return lambda: rec.compute_face_descriptor(list(chips[:b]))

    def torch_fwd(b: int) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return model(dr.chips_to_tensor(chips[:b], device))

        return run

    def torch_fwd_bwd(b: int) -> Callable[[], object]:
        def run() -> object:
            x = dr.chips_to_tensor(chips[:b], device).requires_grad_(True)
            emb, taps = dr.embed_with_taps(x, model)
            loss = emb.square().sum() + sum(t.square().mean() for t in taps.values())
            loss.backward()
            return x.grad

        return run

    cases = {
        (name, b): make(b)
        for b in (1, 32)
        for name, make in (
            ("dlib_forward", dlib_fwd),
            ("torch_forward", torch_fwd),
            ("torch_forward_backward", torch_fwd_bwd),
        )
    }
    for fn in cases.values():  # warm-up (allocations, lazy init)
        timed(fn, sync)
    times: dict[tuple[str, int], list[float]] = {k: [] for k in cases}
    for _ in range(args.reps):
        for k, fn in cases.items():
            times[k].append(timed(fn, sync))

    results = {}
    for (name, b), ts in times.items():
        med = statistics.median(ts)
        results[f"{name}_b{b}"] = {
            "batch": b,
            "median_s": round(med, 5),
            "ms_per_chip": round(1000 * med / b, 3),
            "chips_per_s": round(b / med, 2),
        }

    with torch.inference_mode():
        x = dr.chips_to_tensor(chips, device)
        max_diff = float(
            np.abs(
                model(x).double().cpu().numpy()
                - np.asarray(rec.compute_face_descriptor(list(chips)))
            ).max()
        )

    def ratio(a: str, b: str) -> float:
        return round(results[a]["chips_per_s"] / results[b]["chips_per_s"], 2)

    out = {
        "benchmark": "cfru_speed",
        "date": dt.date.today().isoformat(),
        "machine": machine(
            f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", no GPU"
        ),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "dlib_threads": 1,
        "loadavg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "dlib": dlib.__version__,
        "device": str(device),
        "reps": args.reps,
        "results": results,
        "speedup_forward_b32": ratio("torch_forward_b32", "dlib_forward_b32"),
        "speedup_forward_b1": ratio("torch_forward_b1", "dlib_forward_b1"),
        "speedup_forward_backward_b32_vs_dlib_forward": ratio(
            "torch_forward_backward_b32", "dlib_forward_b32"
        ),
        "max_abs_diff_vs_dlib_b32": max_diff,
    }
    emit(out)


if __name__ == "__main__":
    main()
