"""PNG charts for reports (the optional extra ``pg-backup[charts]``: matplotlib, Agg backend).

matplotlib is imported only here and only when a chart is drawn; without it a drill still runs and
writes its Markdown and JSON reports, and says that the chart needs ``pip install 'pg-backup[charts]'``.
The figure is built with the object API (``Figure`` + ``FigureCanvasAgg``): no pyplot global state,
no display, no font cache outside ``MPLCONFIGDIR``.
"""
from __future__ import annotations

import datetime as dt
import io
import os
import tempfile
from typing import Any, Dict, List, Sequence

OK_COLOR = "#2e7d32"
MISS_COLOR = "#c62828"
TARGET_COLOR = "#ef6c00"


class ChartUnavailable(Exception):
    """matplotlib is not installed (or cannot draw here)."""


def _matplotlib():  # type: ignore[no-untyped-def]
    # matplotlib writes a font cache; a database host's postgres user may have no writable HOME.
    if not os.environ.get("MPLCONFIGDIR"):
        home = os.path.expanduser("~")
        if not os.access(home, os.W_OK):
            os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="pg-backup-mpl-")
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ChartUnavailable(f"matplotlib is not installed ({exc}); install it with "
                               f"pip install 'pg-backup[charts]'") from None
    return Figure, FigureCanvasAgg


def drill_history_png(history: Sequence[Dict[str, Any]], rto_target_minutes: float, rpo_target_minutes: float,
                      *, title: str = "") -> bytes:
    """RTO and RPO (minutes) of every drill in ``history`` (oldest first) against the targets.

    Each entry needs ``started_at`` (ISO), ``rto.seconds`` and ``rpo.seconds`` (None when unknown).
    A point above its target is drawn red, within it green; the targets are dashed lines."""
    Figure, FigureCanvasAgg = _matplotlib()
    fig = Figure(figsize=(9, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    labels = [_label(h.get("started_at")) for h in history]
    xs = list(range(len(history)))
    for ax, key, target, name in ((axes[0], "rto", rto_target_minutes, "RTO"),
                                  (axes[1], "rpo", rpo_target_minutes, "RPO")):
        values: List[Any] = []
        for h in history:
            seconds = (h.get(key) or {}).get("seconds")
            values.append(None if seconds is None else seconds / 60.0)
        known = [(x, v) for x, v in zip(xs, values) if v is not None]
        if known:
            ax.plot([x for x, _ in known], [v for _, v in known], color="#607d8b", linewidth=1, zorder=1)
            colors = [MISS_COLOR if v > target else OK_COLOR for _, v in known]
            ax.scatter([x for x, _ in known], [v for _, v in known], c=colors, s=36, zorder=2)
            for x, v in known:
                ax.annotate(_fmt_minutes(v), (x, v), textcoords="offset points", xytext=(0, 6), ha="center",
                            fontsize=7)
        ax.axhline(target, color=TARGET_COLOR, linestyle="--", linewidth=1.2, label=f"target {target:g} min")
        top = max([target] + [v for _, v in known])
        ax.set_ylim(0, top * 1.25 if top > 0 else 1)
        ax.set_ylabel(f"{name} (minutes)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    axes[1].set_xticks(xs)
    axes[1].set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    axes[1].set_xlim(-0.5, max(len(xs) - 0.5, 0.5))
    axes[0].set_title(title or "Disaster-recovery drills: RTO and RPO against the targets", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _label(started_at: Any) -> str:
    if not started_at:
        return "?"
    try:
        when = dt.datetime.strptime(str(started_at)[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return str(started_at)[:16]
    return when.strftime("%Y-%m-%d %H:%M")


def _fmt_minutes(v: float) -> str:
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"
