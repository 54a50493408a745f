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
from typing import Any, Dict, Optional, Sequence

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
        from matplotlib import dates
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ChartUnavailable(f"matplotlib is not installed ({exc}); install the agent's charts extra where "
                               f"reports are made: pip install 'pg-backup[charts]' (role agent: agent_extras: "
                               f"[charts])") from None
    return Figure, FigureCanvasAgg, dates


def toolkit():  # type: ignore[no-untyped-def]
    """(Figure, FigureCanvasAgg, matplotlib.dates), set up as for the charts here (Agg, a writable
    MPLCONFIGDIR), for other documents drawn with matplotlib (the compliance report's PDF);
    ChartUnavailable without the charts extra."""
    return _matplotlib()


def drill_history_png(history: Sequence[Dict[str, Any]], rto_target_minutes: float, rpo_target_minutes: float,
                      *, title: str = "") -> bytes:
    """RTO and RPO (minutes) of every drill in ``history`` against the targets, over time.

    Each entry needs ``started_at`` (ISO, UTC), ``rto.seconds`` and ``rpo.seconds`` (None when unknown);
    an entry without a readable time is left out. The x-axis is the drills' start time (UTC), with
    concise date labels that name each day, month or year once. A point above its target is drawn red,
    within it green, the newest is labelled with its value; the targets are dashed lines."""
    Figure, FigureCanvasAgg, dates = _matplotlib()
    drills = [(when, h) for h in history for when in [started(h.get("started_at"))] if when is not None]
    drills.sort(key=lambda d: d[0])
    fig = Figure(figsize=(9, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    for ax, key, target, name in ((axes[0], "rto", rto_target_minutes, "RTO"),
                                  (axes[1], "rpo", rpo_target_minutes, "RPO")):
        known = [(when, seconds / 60.0) for when, h in drills
                 for seconds in [(h.get(key) or {}).get("seconds")] if seconds is not None]
        if known:
            xs, ys = [w for w, _ in known], [v for _, v in known]
            ax.plot(xs, ys, color="#607d8b", linewidth=1, zorder=1)
            ax.scatter(xs, ys, c=[MISS_COLOR if v > target else OK_COLOR for v in ys], s=36, zorder=2)
            # The newest value on its point (labels on every point overlap when drills are close in time).
            ax.annotate(f"latest {_fmt_minutes(ys[-1])}", (xs[-1], ys[-1]), textcoords="offset points",
                        xytext=(0, 7), ha="center", fontsize=7)
        ax.axhline(target, color=TARGET_COLOR, linestyle="--", linewidth=1.2, label=f"target {target:g} min")
        top = max([target] + [v for _, v in known])
        ax.set_ylim(0, top * 1.25 if top > 0 else 1)
        ax.set_ylabel(f"{name} (minutes)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    locator = dates.AutoDateLocator(tz=dt.timezone.utc, minticks=3, maxticks=8)
    axes[1].xaxis.set_major_locator(locator)
    axes[1].xaxis.set_major_formatter(dates.ConciseDateFormatter(locator, tz=dt.timezone.utc))
    if drills:
        first, last = drills[0][0], drills[-1][0]
        pad = max((last - first) * 0.05, dt.timedelta(minutes=30))
        axes[1].set_xlim(first - pad, last + pad)
    axes[1].set_xlabel("drill start (UTC)", fontsize=8)
    axes[0].set_title(title or "Disaster-recovery drills: RTO and RPO against the targets", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def started(started_at: Any) -> Optional[dt.datetime]:
    """A drill's ``started_at`` (``2026-06-14T10:00:00.000000Z``, or without fraction) as an aware UTC time."""
    if not started_at:
        return None
    try:
        when = dt.datetime.strptime(str(started_at)[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return when.replace(tzinfo=dt.timezone.utc)


def _fmt_minutes(v: float) -> str:
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"
