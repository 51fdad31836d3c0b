"""Server-side plots: matplotlib (Agg) to inline SVG. Numbers in, SVG text out; no queries.

Speed (each page must render in under 300 ms): figures are made without pyplot's figure
manager, with fixed margins instead of ``tight_layout`` (which draws everything twice) and
few ticks; text stays text in the SVG (``svg.fonttype: none``)."""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

_STYLE = {"svg.fonttype": "none", "font.size": 8, "axes.titlesize": 9,
          "axes.spines.top": False, "axes.spines.right": False}
_XML_HEAD = re.compile(r"^.*?(?=<svg)", re.S)


def _svg(fig: Figure, label: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = _XML_HEAD.sub("", buf.getvalue(), count=1)
    # An accessible name, and a class the page (and the browser test) can find.
    return text.replace("<svg ", f'<svg class="plot" role="img" aria-label="{label}" ', 1)


def _fig(w: float, h: float, *, left: float = 0.6, bottom: float = 0.45, ncols: int = 1,
         wspace: float = 0.3) -> tuple[Figure, Any]:
    """A figure with fixed margins (inches), not ``tight_layout``; call in ``_STYLE``."""
    fig = Figure(figsize=(w, h))
    axes = fig.subplots(1, ncols)
    fig.subplots_adjust(left=left / w, right=1 - 0.15 / w, bottom=bottom / h, top=1 - 0.2 / h,
                        wspace=wspace)
    for ax in (axes if ncols > 1 else [axes]):
        ax.xaxis.set_major_locator(MaxNLocator(6))
        ax.yaxis.set_major_locator(MaxNLocator(5))
    return fig, axes


def empty(label: str, message: str = "no data yet") -> str:
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(3, 0.6))
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, message, ha="center", va="center", color="#5b6670")
        return _svg(fig, label)


def success_rates(labels: Sequence[str], rates: Sequence[float | None]) -> str:
    """The last rounds' success rates (crowd-judged), oldest first."""
    if not labels:
        return empty("round success rates")
    with matplotlib.rc_context(_STYLE):
        fig, ax = _fig(4.2, 1.9, bottom=0.7)
        ys = [r if r is not None else float("nan") for r in rates]
        ax.plot(range(len(ys)), ys, "o-", color="tab:green", ms=4)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("success rate")
        return _svg(fig, "round success rates")


def scores(iterations: Sequence[int], score_a: Sequence[float], score_b: Sequence[float],
           tau_a: float | None, tau_b: float | None) -> str:
    """Score-A and score-B per iteration with the τA and τB lines."""
    if not iterations:
        return empty("score-A and score-B per iteration")
    with matplotlib.rc_context(_STYLE):
        fig, ax = _fig(5.6, 2.6)
        ax.plot(iterations, score_a, color="tab:red", label="score-A (proxy)")
        ax.plot(iterations, score_b, color="tab:blue", label="score-B (CFRUs)")
        if tau_a is not None:
            ax.axhline(tau_a, color="tab:red", ls="--", lw=0.8, label=f"τA = {tau_a:g}")
        if tau_b is not None:
            ax.axhline(tau_b, color="tab:blue", ls="--", lw=0.8, label=f"τB = {tau_b:g}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("iteration")
        ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))
        ax.legend(fontsize=7, loc="upper right")
        return _svg(fig, "score-A and score-B per iteration")


def lines(x: Sequence[float], series: Mapping[str, Sequence[float | None]], label: str,
          xlabel: str = "", ylabel: str = "", size: tuple[float, float] = (5.6, 2.4)) -> str:
    """Several named series over one x (loss terms, training curves)."""
    if not x or not series:
        return empty(label)
    with matplotlib.rc_context(_STYLE):
        fig, ax = _fig(*size)
        for name, ys in series.items():
            ax.plot(x, [float("nan") if v is None else v for v in ys], label=name, lw=1.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(6, integer=True))  # iterations, epochs
        ax.legend(fontsize=7, loc="upper right")
        return _svg(fig, label)


def cumulative(times: Sequence, counts: Sequence[int], label: str, ylabel: str) -> str:
    """A running total over time (judgments received)."""
    if not times:
        return empty(label)
    total, ys = 0, []
    for c in counts:
        total += c
        ys.append(total)
    with matplotlib.rc_context(_STYLE):
        fig, ax = _fig(5.6, 2.3, bottom=0.7)
        ax.step(times, ys, where="post", color="tab:purple")
        ax.set_ylabel(ylabel)
        locator = AutoDateLocator(maxticks=7)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        ax.yaxis.set_major_locator(MaxNLocator(5, integer=True))
        with warnings.catch_warnings():  # a span of an hour or two: it falls back, and says so
            warnings.simplefilter("ignore", UserWarning)
            return _svg(fig, label)


def histogram(edges: Sequence[float], counts: Sequence[int], label: str, xlabel: str) -> str:
    """Counts per bin (computed by the database), as bars."""
    if not counts or not sum(counts):
        return empty(label)
    with matplotlib.rc_context(_STYLE):
        fig, ax = _fig(4.2, 2.2)
        widths = [edges[i + 1] - edges[i] for i in range(len(counts))]
        ax.bar(edges[:-1], counts, width=widths, align="edge", color="tab:gray",
               edgecolor="white")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("pairs")
        ax.yaxis.set_major_locator(MaxNLocator(5, integer=True))
        return _svg(fig, label)


def round_report(points: Mapping[str, Sequence[float | None]], stage_seconds: Mapping[str, float],
                 simulated: bool) -> str:
    """The round report's two panels: proxy P(same) before/after against the crowd's
    score-A, and the seconds per stage."""
    with matplotlib.rc_context(_STYLE):
        fig, (ax1, ax2) = _fig(8, 3, left=0.6, ncols=2, wspace=0.45)
        crowd = [float("nan") if v is None else v for v in points.get("crowd", [])]
        for key, colour in (("before", "tab:orange"), ("after", "tab:blue")):
            ys = [float("nan") if v is None else v for v in points.get(key, [])]
            if ys and len(ys) == len(crowd):
                ax1.scatter(crowd, ys, s=10, alpha=0.7, c=colour, label=f"proxy {key}")
        ax1.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax1.set_xlim(-0.02, 1.02)
        ax1.set_ylim(-0.02, 1.02)
        ax1.set_xlabel(("simulated crowd" if simulated else "crowd") + " score-A")
        ax1.set_ylabel("proxy P(same)")
        if crowd:
            ax1.legend(fontsize=7, loc="upper left")
        stages = [k for k, v in stage_seconds.items() if v is not None]
        ax2.barh(range(len(stages)), [stage_seconds[k] for k in stages], color="tab:gray")
        ax2.set_yticks(range(len(stages)), stages)  # one label per bar, not a locator's
        ax2.set_xlabel("seconds")
        ax2.set_title("time per stage")
        return _svg(fig, "round report")
