"""The de-identification generator (issue 16) against the iterative loop and the hybrid, on
the same LFW test faces in one run: faces per second, success rates, iterations, a gallery.

Proxies: as ``bench.deid`` (cached in ``--cache``): the loop's proxy trained on LFW View-2
folds 0-3 (seed 1), the held-out proxy on folds 4-7 (seed 2). The generator is trained here
with the loop's proxy on first photos of subjects of folds 0-3 (its epoch-end held-out faces:
other subjects of those folds); the test faces are first photos of subjects of folds 8-9, so
training, the held-out proxy and the test faces are subject-disjoint.

Per method (``generator``: one forward pass, ``iterative``: the loop, ``hybrid``: the loop
from the generator's output), on the same faces and job config:

* faces per second (the whole job's computation: the pass or the loop with its scoring,
  compositing into the photo; plus, for the generator, the bare pass: network + render +
  composite, without the loop's scoring);
* success: the loop's own (score-A by the loop's proxy ≤ τA and score-B ≥ τB, confirmed on
  the saved photo), the held-out proxy's score-A ≤ τA on the saved photo with the dlib
  runtime's score-B ≥ τB on the saved file, and each simulated observer's verdict (P(same) of
  the source photo and the saved photo < 0.5) with the same score-B — the observers' verdict,
  not what people would do;
* iterations used (loop and hybrid).

    .venv/bin/python -m bench.generator [--faces 16] [--train-faces 48] [--epochs 8]
        [--max-iterations 90] [--gallery /tmp/generator_gallery.png] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import (
    add_lfw_arguments,
    cpu_name,
    emit,
    lfw_folds,
    load_rgb,
    log,
    parse_args,
    require_lfw,
)
from bench.deid import (
    BENCH_FOLDS,
    HELDOUT_FOLDS,
    LOOP_FOLDS,
    benchmark_faces,
    ensure_proxy,
    evaluate,
)
from models_app.deid import DeidConfig, run_deid_batch
from models_app.deid.composite import composite
from models_app.deid.score_a import HumanProxyScorer
from models_app.generator import (
    FaceSet,
    GeneratorConfig,
    GeneratorTrainConfig,
    StopRules,
    predict_params,
    run_generator,
    train_generator,
)
from models_app.generator.apply import HYBRID_OUTPUT, HYBRID_STARTS, config_for
from models_app.generator.io import generator_meta, generator_to_bytes, load_generator

QUICK = {
    "pairs_per_fold": 20,
    "cache": Path("/tmp/generator_bench_quick"),
    "faces": 4,
    "train_faces": 12,
    "held_out_faces": 4,
    "epochs": 2,
    "max_iterations": 10,
    "batch": 4,
    "gallery": Path("/tmp/generator_gallery_quick.png"),
}
METHODS = ("generator", "iterative", "hybrid")


def observer_verdicts(src_photo: np.ndarray, saved: np.ndarray, seed: int) -> dict[str, float]:
    """Each shipped observer's P(same) of the source photo and the saved output photo."""
    from ratings.observers import SHIPPED, judge, load_observer

    return {name: judge(load_observer(name), src_photo, saved, np.random.default_rng(seed))
            for name in SHIPPED}


def summarise(rows: list[dict], seconds: float, cfg: DeidConfig) -> dict:
    n = len(rows)
    b_ok = [r["final_detected"] and r["final_b"] >= cfg.tau_b for r in rows]
    held = [r.get("a_heldout_saved", r["a_heldout"]) <= cfg.tau_a for r in rows]
    names = sorted(rows[0]["observers"]) if rows else []
    per_obs = {o: float(np.mean([r["observers"][o] < 0.5 and ok
                                 for r, ok in zip(rows, b_ok, strict=True)])) for o in names}
    all_obs = [all(r["observers"][o] < 0.5 for o in names) for r in rows]
    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r["stop_reason"]] = reasons.get(r["stop_reason"], 0) + 1
    return {
        "faces": n,
        "seconds": round(seconds, 2),
        "faces_per_s": n / seconds if seconds else None,
        "success_loop_proxy": float(np.mean([r["stop_reason"] == "success" for r in rows])),
        "success_heldout_proxy": float(np.mean([a and b for a, b in zip(held, b_ok,
                                                                          strict=True)])),
        # The same on the saved photo's fresh crop alone (one view: how it was read before
        # score-A was confirmed over views).
        "success_heldout_proxy_one_crop": float(np.mean([
            r.get("a_heldout_saved_one", r["a_heldout"]) <= cfg.tau_a and ok
            for r, ok in zip(rows, b_ok, strict=True)])),
        "success_observers_all": float(np.mean([a and b for a, b in zip(all_obs, b_ok,
                                                                          strict=True)])),
        "success_observer": per_obs,
        "score_b_saved_ge_tau_b": float(np.mean(b_ok)),
        "stop_reasons": reasons,
        "iterations_mean": float(np.mean([r["iterations"] for r in rows])),
        "a_loop_proxy_mean": float(np.mean([r["a_loop"] for r in rows])),
        "a_heldout_saved_mean": float(np.mean([r.get("a_heldout_saved", r["a_heldout"])
                                               for r in rows])),
        "observer_p_same_mean": {o: float(np.mean([r["observers"][o] for r in rows]))
                                 for o in names},
        "final_b_mean": float(np.mean([r["final_b"] for r in rows])),
        "ssim_mean": float(np.mean([r["ssim"] for r in rows])),
        # Face colour inside LFW's range (metrics.naturalness): stacked changes (the hybrid
        # from the generator's output) could leave it.
        "natural_share": float(np.mean([r["naturalness"]["natural"] for r in rows])),
    }


def run_method(method, model, sources, loop_proxy, cfg, args):
    """All test faces through one method, in batches; (results by key, wall seconds, CPU
    seconds). Each method starts with the confirmation memo empty, so no method is scored
    on another's cached source embeddings. CPU time (this process, all its threads) is
    what a ratio can rest on when the machine is shared."""
    from models_app.deid.confirm import clear_memo

    if method == "hybrid" and args.hybrid_max_iterations:
        cfg = dataclasses.replace(cfg, max_iterations=args.hybrid_max_iterations)
    batch = (args.generator_batch if method == "generator" else args.loop_batch) or args.batch
    clear_memo()
    out, t0, c0 = {}, time.perf_counter(), time.process_time()
    for i in range(0, len(sources), batch):
        chunk = sources[i : i + batch]
        srcs = [s for _, s in chunk]
        if method == "iterative":
            res = run_deid_batch(srcs, loop_proxy, cfg, device="cpu")
        else:
            res = run_generator(model, srcs, loop_proxy, cfg, hybrid=method == "hybrid",
                                hybrid_start=args.hybrid_start, device="cpu")
        out.update({k: r for (k, _), r in zip(chunk, res, strict=True)})
        log(f"{method}: {len(out)}/{len(sources)} faces")
    return out, time.perf_counter() - t0, time.process_time() - c0


@torch.no_grad()
def bare_pass_seconds(model, sources, cfg) -> float:
    """The generator alone: forward pass, render through the change mask, composite."""
    t0 = time.perf_counter()
    theta = predict_params(model, [s for _, s in sources], "cpu")
    for (_, s), th in zip(sources, theta, strict=True):
        ctx = torch.from_numpy(s.context).permute(2, 0, 1)[None].float()
        m = s.change_mask(cfg.blend)
        mask = None if m is None else torch.from_numpy(m)[None, None]
        out = model.render(ctx, th[None], mask).round().clamp(0, 255)
        img = out[0].permute(1, 2, 0).to(torch.uint8).numpy()
        composite(s.photo, img, s.box, s.landmarks, context_src=s.context, blend=cfg.blend)
    return time.perf_counter() - t0


def dlib_runtime_chip_seconds(sources) -> float:
    """Seconds per chip of the dlib runtime (the final score-B's recogniser), batched: every
    job pays it for the saved output and for the source, whatever makes the output."""
    from models_app.deid.confirm import FINAL_ENSEMBLE
    from models_app.vision import cfru as cfru_mod

    ens = cfru_mod.build_ensemble(FINAL_ENSEMBLE)
    chips = np.stack([s.chip for _, s in sources])
    ens.embed(chips[:1])  # load the model
    t0 = time.perf_counter()
    ens.embed(chips)
    return (time.perf_counter() - t0) / len(chips)


def gallery(path: Path, sources, outputs, rows, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(sources))
    fig, axes = plt.subplots(n, 1 + len(METHODS), figsize=(2.6 * (1 + len(METHODS)), 2.9 * n))
    axes = np.atleast_2d(axes)
    for i in range(n):
        key, src = sources[i]
        axes[i, 0].imshow(src.context)
        axes[i, 0].set_title("source", fontsize=8)
        for j, m in enumerate(METHODS):
            r = rows[m][key]
            axes[i, j + 1].imshow(outputs[m][key])
            obs = " ".join(f"{v:.2f}" for v in r["observers"].values())
            axes[i, j + 1].set_title(
                f"{m}: {r['stop_reason']} ({r['iterations']} it)\nA loop {r['a_loop']:.2f} "
                f"held-out {r.get('a_heldout_saved', r['a_heldout']):.2f}\nB saved "
                f"{r['final_b']:.2f} observers {obs}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_lfw_arguments(ap)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/generator_bench"))
    ap.add_argument("--proxy-cache", default="", help="bench.proxy_quality's cache ('': none)")
    ap.add_argument("--faces", type=int, default=16, help="test faces (folds 8-9 subjects)")
    ap.add_argument("--train-faces", type=int, default=48)
    ap.add_argument("--train-pool", choices=("proxy", "all"), default="proxy",
                    help="generator training subjects: those of the proxy's pairs of folds "
                    "0-3, or every subject of those folds")
    ap.add_argument("--held-out-faces", type=int, default=8, help="the generator's held-out")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--score-a-quantile", default="0.9",
                    help="held-out score-A statistic of the score_a_threshold stop: a quantile "
                    "of the per-face scores, or 'mean' (the rule before session 3)")
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8, help="faces per batch at test time")
    ap.add_argument("--generator-batch", type=int, default=None,
                    help="faces per single pass (default --batch; the platform's batch jobs "
                    "take up to jobs.runner.GENERATOR_BATCH = 32 faces a pass)")
    ap.add_argument("--loop-batch", type=int, default=None,
                    help="faces per loop batch, iterative and hybrid (default --batch; the "
                    "platform runs one face per job)")
    ap.add_argument("--max-iterations", type=int, default=90, help="the loop's (and hybrid's)")
    ap.add_argument("--hybrid-max-iterations", type=int, default=None,
                    help="the hybrid's own budget (default: the loop's). Half the loop's "
                    "tests the target directly: as successful as the loop on half its budget")
    ap.add_argument("--hybrid-start", choices=HYBRID_STARTS, default=HYBRID_OUTPUT,
                    help="the hybrid's start: the generator's output image as the loop's "
                    "base (output) or its parameters as the loop's first (params)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", default="{}", help="job parameters (JSON) over the defaults")
    ap.add_argument("--train-config", default="{}",
                    help="job parameters (JSON) over --config for the generator's training "
                    "only, e.g. the loss weights ('{\"loss\": {\"lambda_a\": 4}}'); the "
                    "jobs are scored with --config")
    ap.add_argument("--proxy-config", default="{}",
                    help="ProxyConfig fields (JSON) for both proxies (bench.deid's variant: "
                    "'{\"fusion\": \"mlp\"}')")
    ap.add_argument("--gallery", type=Path, default=Path("/tmp/generator_gallery.png"))
    ap.add_argument("--gallery-rows", type=int, default=8)
    ap.add_argument("--generator-file", type=Path, default=None,
                    help="a generator file (models_app.generator.io): loaded if it exists, "
                    "written after training if not, so a rerun on the same faces scores "
                    "the same generator without training it again")
    ap.set_defaults(pairs_per_fold=60)
    args = parse_args(ap, QUICK)
    require_lfw(args.lfw, "lfw-deepfunneled")
    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    folds = lfw_folds(args.lfw, args.pairs_per_fold)
    kw = {"all_folds": folds, "pairs_per_fold": args.pairs_per_fold,
          "proxy_cache": Path(args.proxy_cache) if args.proxy_cache else None}
    pc = json.loads(args.proxy_config) or None
    loop_model, loop_info = ensure_proxy("loop", LOOP_FOLDS, 1, args.lfw, args.cache, pc, **kw)
    held_model, held_info = ensure_proxy("heldout", HELDOUT_FOLDS, 2, args.lfw, args.cache, pc,
                                         **kw)
    loop_proxy = HumanProxyScorer(loop_model)
    proxies = {"loop": loop_proxy, "heldout": HumanProxyScorer(held_model)}
    cfg = DeidConfig.from_dict({**json.loads(args.config), "max_iterations": args.max_iterations})

    # Faces: generator training and its held-out from folds 0-3 subjects (disjoint subject
    # halves), test faces from folds 8-9 subjects.
    gen_subjects = sorted({s for f in LOOP_FOLDS for s in folds[f].subjects})
    half = len(gen_subjects) * 4 // 5
    train_subjects = set(gen_subjects[:half])
    if args.train_pool == "all":
        # Every subject of folds 0-3's pairs (not only the proxy's --pairs-per-fold sample),
        # the held-out subjects excepted: more faces for the generator, same disjointness.
        every = lfw_folds(args.lfw, 0)
        train_subjects = {s for f in LOOP_FOLDS for s in every[f].subjects} - set(
            gen_subjects[half:])
    train_src = benchmark_faces(args.lfw, args.train_faces, train_subjects)
    held_src = benchmark_faces(args.lfw, args.held_out_faces, set(gen_subjects[half:]))
    test_subjects = {s for f in BENCH_FOLDS for s in folds[f].subjects}
    sources = benchmark_faces(args.lfw, args.faces, test_subjects)
    train_names = {k for k, _ in train_src} | {k for k, _ in held_src}
    assert not train_names & {k for k, _ in sources}, "training and test subjects overlap"
    log(f"faces: {len(train_src)} training, {len(held_src)} held-out, {len(sources)} test")

    def face_set(items):
        return FaceSet.from_arrays([s.context for _, s in items],
                                   [s.change_mask(cfg.blend) for _, s in items])

    q = None if args.score_a_quantile == "mean" else float(args.score_a_quantile)
    tc = GeneratorTrainConfig(batch_size=args.train_batch, lr=args.lr, seed=0,
                              stop=StopRules(max_epochs=args.epochs, score_a_quantile=q))
    train_cfg = DeidConfig.from_dict({**json.loads(args.config), **json.loads(args.train_config),
                                      "max_iterations": args.max_iterations})
    gen_file = args.generator_file
    if gen_file is not None and gen_file.exists():
        # The training figures are the file's (the run that wrote it), not re-measured.
        model = load_generator(gen_file.read_bytes())
        training = {**generator_meta(gen_file.read_bytes()), "loaded_from": str(gen_file)}
        log(f"generator loaded from {gen_file}")
    else:
        t0 = time.perf_counter()
        trained = train_generator(
            face_set(train_src), face_set(held_src), loop_proxy, train_cfg, tc,
            GeneratorConfig.for_deid(cfg),
            on_epoch=lambda r, cp: log(f"epoch {r['epoch']}: {json.dumps(r['held_out'])}")
            or True,
            device="cpu",
        )
        train_seconds = time.perf_counter() - t0
        model = trained.model
        log(f"generator trained in {train_seconds:.0f} s, stop {trained.stop_reason} "
            f"{json.dumps(trained.stop_detail)}")
        training = {"seconds": round(train_seconds, 1), "stop_reason": trained.stop_reason,
                    "stop_detail": trained.stop_detail, "lr": args.lr,
                    "epochs": trained.epochs, "best_epoch": trained.best_epoch,
                    "images": trained.images, "held_out": trained.held_out,
                    "history": [{"epoch": h["epoch"], **h["held_out"]}
                                for h in trained.history]}
        if gen_file is not None:
            gen_file.parent.mkdir(parents=True, exist_ok=True)
            gen_file.write_bytes(generator_to_bytes(model, training))

    # Warm-up, untimed, on held-out faces (not test faces): the first call of a process
    # loads the dlib runtime and detector and builds the kernels of each batch shape (1.5-4
    # CPU-s measured), which would otherwise all be charged to the method timed first.
    warm_cfg = dataclasses.replace(cfg, max_iterations=1)
    warm_args = argparse.Namespace(**{**vars(args), "hybrid_max_iterations": 1})
    warm_faces = held_src[: max(args.batch, args.generator_batch or 0, args.loop_batch or 0)]
    for method in METHODS:
        run_method(method, model, warm_faces, loop_proxy, warm_cfg, warm_args)
    results, rows, outputs, summary = {}, {}, {}, {}
    out_root = args.cache / "outputs"
    for method in METHODS:
        results[method], seconds, cpu = run_method(method, model, sources, loop_proxy, cfg, args)
        out_dir = out_root / method
        out_dir.mkdir(parents=True, exist_ok=True)
        rows[method], outputs[method] = {}, {}
        for key, src in sources:
            res = results[method][key]
            ecfg = config_for(model, cfg) if method != "iterative" else cfg
            row = evaluate(src, res, out_dir, key, proxies, ecfg)
            saved = load_rgb(out_dir / f"{key}.png")
            row["observers"] = observer_verdicts(src.photo, saved, seed=len(key))
            rows[method][key] = row
            outputs[method][key] = res.context
        summary[method] = summarise(list(rows[method].values()), seconds, cfg)
        summary[method]["cpu_seconds"] = round(cpu, 2)
        summary[method]["faces_per_cpu_s"] = len(sources) / cpu if cpu else None
        log(f"{method}: {json.dumps(summary[method])}")
    bare = bare_pass_seconds(model, sources, cfg)
    # How face-specific the predictions are, and how many sit where tanh saturates (no
    # gradient reaches them: the hybrid from parameters cannot move them).
    sq = torch.tanh(predict_params(model, [s for _, s in sources], "cpu"))
    theta_stats = {"tanh_abs_mean": float(sq.abs().mean()),
                   "saturated_share": float((sq.abs() > 0.99).float().mean()),
                   "across_face_std": float(sq.std(0).mean())}
    summary["generator"]["bare_pass_faces_per_s"] = len(sources) / bare
    summary["generator"]["dlib_runtime_s_per_chip"] = dlib_runtime_chip_seconds(sources)
    it_s, gen_s = summary["iterative"]["faces_per_s"], summary["generator"]["faces_per_s"]
    args.gallery.parent.mkdir(parents=True, exist_ok=True)
    gallery(args.gallery, sources, outputs, rows, args.gallery_rows)
    (args.cache / "rows.json").write_text(json.dumps(rows, default=float))
    loop_sr = summary["iterative"]["success_heldout_proxy"]
    emit({
        "bench": "generator",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "host": {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__},
        "faces": len(sources),
        "train_faces": len(train_src), "train_pool": args.train_pool,
        "held_out_faces": len(held_src),
        "max_iterations": args.max_iterations,
        "hybrid_max_iterations": args.hybrid_max_iterations or args.max_iterations,
        "hybrid_start": args.hybrid_start,
        "batch": {"generator": args.generator_batch or args.batch,
                  "loop": args.loop_batch or args.batch},
        "config_overrides": json.loads(args.config),
        "train_config_overrides": json.loads(args.train_config),
        "training": training,
        "proxies": {"loop": {k: v for k, v in loop_info.items() if k != "subjects"},
                    "heldout": {k: v for k, v in held_info.items() if k != "subjects"}},
        "results": summary,
        "generator_theta": theta_stats,
        "speedup_generator_vs_iterative": gen_s / it_s if it_s else None,
        "speedup_generator_vs_iterative_cpu": (
            summary["generator"]["faces_per_cpu_s"] / summary["iterative"]["faces_per_cpu_s"]
            if summary["iterative"]["faces_per_cpu_s"] else None),
        "speedup_bare_pass_vs_iterative": (len(sources) / bare) / it_s if it_s else None,
        "hybrid_iterations_ratio": (
            summary["hybrid"]["iterations_mean"] / summary["iterative"]["iterations_mean"]
            if summary["iterative"]["iterations_mean"] else None),
        "success_gap_heldout_points": 100 * (summary["generator"]["success_heldout_proxy"]
                                             - loop_sr),
        "gallery": str(args.gallery),
    })


if __name__ == "__main__":
    main()
