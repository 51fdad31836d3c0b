"""The round report: what the crowd said about the round's outputs, what the proxy believed
before and after retraining, the success rate, the judgments spent and each stage's time.

Every crowd figure here is the round campaign's crowd: people, or in a dry run a simulated
crowd (``crowd.simulated`` says which); a simulated crowd's figures are not people's.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from models_app.faces.models import FaceImage
from models_app.faces.selectors import load_rgb_array
from models_app.jobs.models import DeidJob
from models_app.proxy.metrics import brier, roc_auc

from . import selectors
from .models import Round


def proxy_vs_crowd(p: np.ndarray, crowd: np.ndarray, logits: np.ndarray | None = None
                   ) -> dict[str, Any]:
    """AUC of the proxy against the crowd's verdict (label score-A ≥ 0.5), ranked by its
    log-odds when given (P(same) saturates at 1.0: ties), and the Brier score of P against
    the crowd's score-A, over pairs both scored; plus how often the proxy's verdict
    (P ≥ 0.5) agrees with the crowd's."""
    ok = ~(np.isnan(p) | np.isnan(crowd))
    if not ok.any():
        return {"n": 0, "auc": None, "brier": None, "agreement": None}
    pp, cc = p[ok], crowd[ok]
    rank = pp if logits is None else np.where(np.isnan(logits[ok]), pp, logits[ok])
    auc = roc_auc(rank, cc >= 0.5)  # NaN when the crowd gave one answer only
    return {
        "n": int(ok.sum()),
        "auc": None if np.isnan(auc) else round(auc, 4),
        "brier": round(brier(pp, cc), 4),
        "agreement": round(float(np.mean((pp >= 0.5) == (cc >= 0.5))), 4),
        "mean_p": round(float(pp.mean()), 4),
    }


def majority_rate(q: float, votes: int) -> float:
    """P(a strict majority of ``votes`` independent answers says yes), each yes with
    probability ``q`` (a tie is no majority, as the success rule counts it)."""
    from scipy.stats import binom

    return float(binom.sf(votes // 2, votes, q))


def known_pairs_ceiling(votes_by_kind: dict[str, list[tuple[int, int]]],
                        votes: int) -> dict[str, Any]:
    """How this crowd answers pairs whose answer is known. On two different people
    (``gold_different``) the share of "different" votes, and the chance that ``votes``
    votes drawn at that share give a "different" majority: the most crowd-judged success an
    output can reach by looking like a genuinely different person to this crowd, and no
    more. Optimistic: the votes come from raters who kept passing gold. On one person
    (``gold_same``, a jittered copy) the share of "same" votes."""
    out: dict[str, Any] = {"votes_per_pair": votes}
    for kind, key in (("gold_different", "different"), ("gold_same", "same")):
        rows = votes_by_kind.get(kind) or []
        total = sum(s + d for s, d in rows)
        if not total:
            out[kind] = {"pairs": len(rows), "judgments": 0}
            continue
        shares = [(d if key == "different" else s) / (s + d) for s, d in rows if s + d]
        entry = {"pairs": len(rows), "judgments": total,
                 f"{key}_vote_share": round(sum(d if key == "different" else s
                                                 for s, d in rows) / total, 4)}
        if key == "different":
            entry["majority_different_rate"] = round(
                float(np.mean([majority_rate(q, votes) for q in shares])), 4)
        out[kind] = entry
    return out


def _image_change(src: FaceImage, out: FaceImage) -> tuple[float, float]:
    """SSIM and mean absolute change (grey levels) between the stored source and output."""
    from models_app.deid.metrics import mean_abs_change, ssim

    a, b = load_rgb_array(src), load_rgb_array(out)
    if a.shape != b.shape:
        return float("nan"), float("nan")
    return ssim(a, b), mean_abs_change(a, b)


def build_report(rnd: Round) -> dict[str, Any]:
    from .scoring import expit, proxy_logits

    pairs = selectors.round_pairs(rnd)
    state_pairs = rnd.state.get("pairs", {})
    crowd = np.array([np.nan if r["crowd_score_a"] is None else r["crowd_score_a"] for r in pairs])

    def stored(key: str) -> np.ndarray:
        return np.array([
            np.nan if (state_pairs.get(str(r["pair"])) or {}).get(key) is None
            else state_pairs[str(r["pair"])][key] for r in pairs
        ], dtype=np.float64)

    # A round made before log-odds were kept ranks by P (its logit_before are NaN).
    before, before_z = stored("p_before"), stored("logit_before")
    version = rnd.model_version
    after_z = (proxy_logits(version, [(r["source"], r["image"]) for r in pairs])
               if version is not None and pairs else np.full(len(pairs), np.nan))
    after = expit(after_z)
    final = np.array([r["final"] for r in pairs], dtype=bool)
    jobs = list(DeidJob.objects.filter(batch_id=rnd.batch_id))
    tau_a = float(rnd.config["job_params"].get("tau_a", 0.3))
    tau_b = float(rnd.config["job_params"].get("tau_b", 0.5))
    # Success: the crowd's majority says "different" on the final output and the saved
    # file's score-B is at least τB. A job without a judged output counts as no success.
    per_job: dict[str, dict[str, Any]] = {}
    for r in pairs:
        if not r["final"]:
            continue
        job = r["job"]
        judged = r["votes_same"] + r["votes_different"] > 0
        crowd_diff = judged and r["votes_different"] > r["votes_same"]
        b_ok = job.final_score_b is not None and job.final_score_b >= tau_b
        believed = (job.final_score_a is not None and job.final_score_a <= tau_a and b_ok)
        per_job[str(job.pk)] = {"success": bool(crowd_diff and b_ok), "judged": judged,
                                "believed": bool(believed), "crowd_different": bool(crowd_diff),
                                "pair": r}
    n_jobs = len(jobs)
    successes = [v for v in per_job.values() if v["success"]]
    judged = [v for v in per_job.values() if v["judged"]]
    changes = []
    for v in successes:
        job = v["pair"]["job"]
        changes.append(_image_change(job.source, job.output))
    ssim_vals = [c[0] for c in changes if not np.isnan(c[0])]
    mac_vals = [c[1] for c in changes if not np.isnan(c[1])]
    crowd_info = rnd.state.get("crowd")
    campaign_id = rnd.campaign_id
    # Stages finished so far (the report's own time is in the round's stage_times).
    times = {k: v["seconds"] for k, v in rnd.stage_times.items() if v.get("seconds") is not None}
    gate = version.gate if version is not None else None
    report: dict[str, Any] = {
        "round": str(rnd.pk), "series": rnd.series, "number": rnd.number,
        "faces": rnd.faces.count(), "jobs": n_jobs,
        "jobs_by_status": selectors.job_counts(rnd),
        "sampling": rnd.state.get("sampling"),
        "crowd": {
            "simulated": crowd_info is not None,
            "observer": (crowd_info or {}).get("observer"),
            "score_a_outputs_mean": _mean(crowd[final]),
            "score_a_all_pairs_mean": _mean(crowd),
            "pairs_labelled": int((~np.isnan(crowd)).sum()),
            "judgments_per_s": (crowd_info or {}).get("judgments_per_s"),
        },
        "proxy_before": {"version": rnd.proxy_before.number if rnd.proxy_before else None,
                         "all_pairs": proxy_vs_crowd(before, crowd, before_z),
                         "outputs": proxy_vs_crowd(before[final], crowd[final], before_z[final])},
        "proxy_after": {"version": version.number if version else None,
                        "status": version.status if version else None,
                        "all_pairs": proxy_vs_crowd(after, crowd, after_z),
                        "outputs": proxy_vs_crowd(after[final], crowd[final], after_z[final])},
        "gate": gate,
        "success": {
            "tau_a": tau_a, "tau_b": tau_b,
            "rate": round(len(successes) / n_jobs, 4) if n_jobs else None,
            "rate_of_judged": round(len(successes) / len(judged), 4) if judged else None,
            "successes": len(successes), "judged_outputs": len(judged),
            "loop_believed_rate": round(sum(v["believed"] for v in per_job.values()) / n_jobs, 4)
            if n_jobs else None,
            # How often the loop's own verdict (proxy score-A ≤ τA and B ≥ τB) differed from
            # the crowd's on the judged outputs.
            "belief_gap": round(float(np.mean([v["believed"] != v["success"] for v in judged])), 4)
            if judged else None,
            "ssim_mean": _mean(np.array(ssim_vals)), "mac_mean": _mean(np.array(mac_vals)),
            # Outputs whose face colour lies in LFW's 1st–99th percentiles (all finished
            # jobs, and the successes alone): a recoloured face is no photograph.
            "natural_share": _natural_share(jobs),
            "natural_share_successes": _natural_share([v["pair"]["job"] for v in successes]),
            # The rate above against what this crowd does with two different people.
            "ceiling": known_pairs_ceiling(
                selectors.known_pair_votes(campaign_id) if campaign_id else {},
                int((rnd.config.get("campaign") or {}).get("judgments_per_pair") or 3)),
        },
        "judgments": {
            **(selectors.judgment_coverage(rnd) if campaign_id else {}),
            "by_kind": selectors.judgments_by_kind(campaign_id) if campaign_id else {},
            "simulated": selectors.simulated_judgments(campaign_id) if campaign_id else 0,
        },
        "stage_seconds": times,
        "points": {  # for the plot
            "crowd": _list(crowd), "before": _list(before), "after": _list(after),
            "final": final.tolist(),
        },
    }
    return report


def _natural_share(jobs: list[DeidJob]) -> float | None:
    flags = [(j.final_detail or {}).get("naturalness", {}).get("natural") for j in jobs]
    flags = [f for f in flags if f is not None]
    return round(sum(flags) / len(flags), 4) if flags else None


def _mean(x: np.ndarray) -> float | None:
    x = np.asarray(x, dtype=float)
    x = x[~np.isnan(x)]
    return round(float(x.mean()), 4) if x.size else None


def _list(x: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else round(float(v), 4) for v in x]


def report_png(report: dict[str, Any]) -> bytes:
    """Two panels: proxy P(same) before and after retraining against the crowd's score-A,
    and the seconds each stage took."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = report["points"]
    crowd = np.array([np.nan if v is None else v for v in pts["crowd"]], dtype=float)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    for key, colour, label in (("before", "tab:orange", "proxy before"),
                               ("after", "tab:blue", "proxy after")):
        p = np.array([np.nan if v is None else v for v in pts[key]], dtype=float)
        ax1.scatter(crowd, p, s=14, alpha=0.7, c=colour, label=label)
    ax1.plot([0, 1], [0, 1], "k:", lw=0.8)
    who = "simulated crowd" if report["crowd"]["simulated"] else "crowd"
    ax1.set_xlabel(f"{who} score-A (Dawid–Skene)")
    ax1.set_ylabel("proxy P(same)")
    ax1.set_xlim(-0.02, 1.02)
    ax1.set_ylim(-0.02, 1.02)
    ax1.legend(loc="upper left", fontsize=8)
    s = report["success"]
    ax1.set_title(f"round {report['number']}: success {s['rate']} "
                  f"({s['successes']}/{report['jobs']})", fontsize=10)
    stages = [k for k, v in report["stage_seconds"].items() if v is not None]
    ax2.barh(stages, [report["stage_seconds"][k] for k in stages], color="tab:gray")
    ax2.set_xlabel("seconds")
    ax2.set_title("time per stage", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()

