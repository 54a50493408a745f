"""The compliance report as a PDF for auditors: A4 landscape pages with the same tables as the Markdown
(:func:`.markdown.sections`), the drill-history chart of :mod:`pg_backup.charts`, and on every page
the cluster, the period, the generation date and "page N of M".

Drawn with matplotlib (the charts extra, already used for the drill chart): ``PdfPages`` writes a
multi-page PDF, tables are laid out as text with wrapped cells, fonts are embedded as TrueType so
the text can be searched and copied (``pdftotext``). No other dependency."""
from __future__ import annotations

import io
import textwrap
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..charts import drill_history_png, toolkit
from .markdown import moment, sections, summary_rows

PAGE = (11.69, 8.27)                  # A4 landscape, inches
FONT = 7.0
LINE = FONT * 1.45 / 72 / 6.9        # one text line as a fraction of the table area's height
CHARS = 190                           # average characters of FONT across the table area
ROWS_TOP, ROWS_BOTTOM = 0.90, 0.07    # the content area, as fractions of the page
TITLE, GAP = 0.045, 0.035             # a section title's height and the space after a section
Block = Tuple[float, Callable[[Any, float], None]]     # (height, draw(figure, top)) of one piece of a page


def _wrap(text: str, width: int) -> List[str]:
    return textwrap.wrap(str(text), max(width, 4), break_long_words=True, break_on_hyphens=False) or [""]


def _units(text: str) -> float:
    """Width of ``text`` in average characters: digits and capitals are wider (ids, fingerprints)."""
    return sum(1.25 if c.isdigit() or c.isupper() else 1.0 for c in text)


def _layout(header: Sequence[str], rows: Sequence[Sequence[str]]) -> Tuple[List[float], List[List[List[str]]], float]:
    """Column widths (fractions), the wrapped cells and the font scale: a table wider than the page at
    FONT is drawn smaller (down to 80 %) rather than breaking its ids over lines."""
    want = [max([_units(h)] + [min(_units(str(r[i])), 48) for r in rows]) + 1.5 for i, h in enumerate(header)]
    total = float(sum(want))
    scale = max(0.8, min(1.0, CHARS / total))
    widths = [w / total for w in want]
    cells = [[_wrap(c, int(w * CHARS / scale * len(str(c)) / max(_units(str(c)), 1)) - 1) for c, w in zip(row, widths)]
             for row in rows]
    return widths, cells, scale


def _row_heights(cells: List[List[List[str]]], scale: float) -> List[float]:
    return [(max(len(c) for c in row) + 0.5) * LINE * scale for row in cells]


def _paginate(header: Sequence[str], rows: Sequence[Sequence[str]], room: float) -> List[Tuple[int, int]]:
    """(first, end) row ranges that fit in ``room`` (a fraction of the page) below the header row."""
    _, cells, scale = _layout(header, rows)
    pages, start, used = [], 0, LINE * 2
    for i, h in enumerate(_row_heights(cells, scale)):
        if used + h > room and i > start:
            pages.append((start, i))
            start, used = i, LINE * 2
        used += h
    pages.append((start, len(rows)))
    return pages


def _draw_table(fig: Any, top: float, header: Sequence[str], rows: Sequence[Sequence[str]]) -> float:
    """Rows from ``top`` (page fraction) downwards; returns where the table ends."""
    widths, cells, scale = _layout(header, rows)
    left, span, size = 0.04, 0.92, FONT * scale
    xs = [left + span * sum(widths[:i]) for i in range(len(widths))]
    y = top
    for x, h in zip(xs, header):
        fig.text(x + 0.002, y, h, fontsize=size, fontweight="bold", va="top")
    y -= LINE * 1.6
    fig.add_artist(_line(fig, left, left + span, y + LINE * 0.35))
    for row, height in zip(cells, _row_heights(cells, scale)):
        for x, lines in zip(xs, row):
            fig.text(x + 0.002, y, "\n".join(lines), fontsize=size, va="top", linespacing=1.25)
        y -= height
        fig.add_artist(_line(fig, left, left + span, y + LINE * 0.3, color="#cccccc"))
    return y


def _line(fig: Any, x0: float, x1: float, y: float, color: str = "#333333") -> Any:
    from matplotlib.lines import Line2D

    return Line2D([x0, x1], [y, y], transform=fig.transFigure, color=color, linewidth=0.5)


def _table_height(header: Sequence[str], rows: Sequence[Sequence[str]]) -> float:
    _, cells, scale = _layout(header, rows)
    return LINE * 1.6 + sum(_row_heights(cells, scale))


def _table_blocks(title: str, header: Sequence[str], rows: Sequence[Sequence[str]], under: str) -> List[Block]:
    """One block per part of a section that fits on a page (a long table continues on the next ones)."""
    notes = _wrap(under, 190) if under else []
    room = ROWS_TOP - ROWS_BOTTOM - TITLE - len(notes) * LINE * 1.3 - GAP
    ranges = _paginate(header, rows, room) if rows else [(0, 0)]
    blocks: List[Block] = []
    for n, (start, end) in enumerate(ranges):
        name = title + (f" (continued {n + 1}/{len(ranges)})" if len(ranges) > 1 else "")
        chunk, note = rows[start:end], notes if n == len(ranges) - 1 else []
        height = TITLE + (_table_height(header, chunk) if chunk else LINE * 2) + len(note) * LINE * 1.3 + GAP

        def draw(fig: Any, top: float, name: str = name, chunk: Sequence[Sequence[str]] = chunk,
                 note: List[str] = note) -> None:
            fig.text(0.04, top, name, fontsize=12, fontweight="bold", va="top")
            end = _draw_table(fig, top - TITLE, header, chunk) if chunk else top - TITLE
            if not chunk:
                fig.text(0.04, end, "None.", fontsize=9, va="top")
                end -= LINE * 2
            if note:
                fig.text(0.04, end - LINE * 0.5, "\n".join(note), fontsize=FONT, va="top")
        blocks.append((height, draw))
    return blocks


def _pages(doc: Dict[str, Any]) -> List[List[Block]]:
    """Blocks packed onto pages: the summary alone on the first, the chart alone on its own, the tables
    one after the other where they fit."""
    summary = [[k, v] for k, v in summary_rows(doc)]

    def first(fig: Any, top: float) -> None:
        fig.text(0.04, top - 0.01, f"Backup compliance report: cluster {doc['cluster']}", fontsize=16, va="top",
                 fontweight="bold")
        fig.text(0.04, top - 0.055, f"Period {doc['period']['label']}. Every stored backup, its expiry under the "
                                    f"current retention, recovery evidence, the erasure register and the audit trail.",
                 fontsize=9, va="top")
        _draw_table(fig, top - 0.1, ["", ""], summary)
        if doc["notes"]:
            fig.text(0.04, 0.16, "\n".join(f"Note: {n}" for n in doc["notes"]), fontsize=FONT, va="top")

    full = ROWS_TOP - ROWS_BOTTOM
    blocks: List[Block] = [(full, first)]
    for title, header, rows, under in sections(doc):
        if title.startswith("DR drills"):
            blocks.append((full, _chart(doc)))
        blocks += _table_blocks(title, header, rows, under)
    pages: List[List[Block]] = []
    used = full
    for height, draw in blocks:
        if used + height > full + 1e-9:
            pages.append([])
            used = 0.0
        pages[-1].append((height, draw))
        used += height
    return pages


def _chart(doc: Dict[str, Any]) -> Callable[[Any, float], None]:
    drill = doc["drill"]
    history = [{"started_at": h["started_at"], "rto": {"seconds": h["rto_seconds"]}, "rpo": {"seconds": h["rpo_seconds"]}}
               for h in drill["history"]]

    def draw(fig: Any, top: float) -> None:
        from matplotlib import image

        fig.text(0.04, top, "Disaster-recovery drills: RTO and RPO against the targets", fontsize=12,
                 fontweight="bold", va="top")
        if not history:
            fig.text(0.04, top - TITLE, "No drill recorded: run 'pg-backup drill' (playbook dr_drill.yml).",
                     fontsize=9, va="top")
            return
        png = drill_history_png(history, drill["targets"]["rto_minutes"], drill["targets"]["rpo_minutes"],
                                title=f"DR drills of cluster {doc['cluster']}")
        ax = fig.add_axes((0.12, ROWS_BOTTOM + 0.01, 0.76, top - TITLE - ROWS_BOTTOM - 0.01))
        ax.imshow(image.imread(io.BytesIO(png), format="png"))
        ax.set_axis_off()
    return draw


def render_pdf(doc: Dict[str, Any], *, created: Optional[Any] = None) -> bytes:
    """The report as PDF bytes (ChartUnavailable without the charts extra)."""
    Figure, FigureCanvasAgg, _dates = toolkit()
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    pages = _pages(doc)
    out = io.BytesIO()
    head = f"Backup compliance report · cluster {doc['cluster']} · period {doc['period']['label']}"
    with matplotlib.rc_context({"pdf.fonttype": 42, "font.family": "DejaVu Sans"}):
        with PdfPages(out, metadata={"Title": f"Backup compliance report: cluster {doc['cluster']}",
                                     "Subject": f"period {doc['period']['label']}", "Author": "pg-backup",
                                     "CreationDate": created}) as pdf:
            for number, blocks in enumerate(pages, 1):
                fig = Figure(figsize=PAGE)
                FigureCanvasAgg(fig)
                fig.text(0.04, 0.955, head, fontsize=8, va="top", color="#333333")
                fig.add_artist(_line(fig, 0.04, 0.96, 0.93))
                top = ROWS_TOP
                for height, draw in blocks:
                    draw(fig, top)
                    top -= height
                fig.add_artist(_line(fig, 0.04, 0.96, 0.05))
                fig.text(0.04, 0.04, f"generated {moment(doc['generated_at'])} by pg-backup "
                                     f"{doc['generated_by']['agent_version']} on {doc['generated_by']['host']}",
                         fontsize=7, va="top", color="#333333")
                fig.text(0.96, 0.04, f"page {number} of {len(pages)}", fontsize=7, va="top", ha="right",
                         color="#333333")
                pdf.savefig(fig)
    return out.getvalue()
