"""PostgreSQL's WAL summarizer (17+), which incremental base backups depend on: whether it runs
(``summarize_wal``), how far it got (``pg_get_wal_summarizer_state()``), and whether the summaries it
kept (``pg_available_wal_summaries()``) cover a range of WAL without a gap.

Callers word their own errors; this module only reads the server.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

from ..wal.names import format_lsn, parse_lsn

MIN_SUMMARIZER_MAJOR = 17


@dataclass
class SummarizerState:
    server_major: int
    enabled: bool = False                      # summarize_wal
    in_recovery: bool = False
    timeline: Optional[int] = None             # the server's current timeline (pg_control_checkpoint)
    summarized_tli: Optional[int] = None
    summarized_lsn: Optional[int] = None       # summaries exist up to here
    pending_lsn: Optional[int] = None
    summarizer_pid: Optional[int] = None
    current_lsn: Optional[int] = None          # pg_current_wal_insert_lsn() on a primary
    keep_time: str = ""                         # wal_summary_keep_time, as the server shows it
    summaries: List[Tuple[int, int, int]] = field(default_factory=list)   # (tli, start, end) on ``timeline``
    error: Optional[str] = None                # the functions could not be read (e.g. permission denied)

    @property
    def supported(self) -> bool:
        return self.server_major >= MIN_SUMMARIZER_MAJOR

    @property
    def lag_bytes(self) -> Optional[int]:
        """WAL written but not summarized yet (None when unknown)."""
        if self.current_lsn is None or self.summarized_lsn is None:
            return None
        return max(0, self.current_lsn - self.summarized_lsn)


def summarizer_state(conn: Any, server_major: int, *, with_summaries: bool = False) -> SummarizerState:
    """Read the summarizer's state from a (non-replication) connection; on a server older than 17
    only ``server_major`` is set. ``with_summaries`` also lists the summaries on the current timeline."""
    state = SummarizerState(server_major)
    if not state.supported:
        return state
    row = conn.execute("SELECT current_setting('summarize_wal')::bool, pg_is_in_recovery(),"
                       " current_setting('wal_summary_keep_time'),"
                       " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn()::text END"
                       ).fetchone()
    state.enabled, state.in_recovery, state.keep_time = bool(row[0]), bool(row[1]), row[2]
    state.current_lsn = parse_lsn(row[3]) if row[3] else None
    try:  # these functions need privileges a backup role may lack (superuser, pg_monitor or a GRANT)
        state.timeline = int(conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0])
        s = conn.execute("SELECT summarized_tli, summarized_lsn::text, pending_lsn::text, summarizer_pid"
                         " FROM pg_get_wal_summarizer_state()").fetchone()
        state.summarized_tli = int(s[0]) if s[0] is not None else None
        state.summarized_lsn = parse_lsn(s[1]) if s[1] else None
        state.pending_lsn = parse_lsn(s[2]) if s[2] else None
        state.summarizer_pid = int(s[3]) if s[3] is not None else None
        if with_summaries and state.timeline is not None:
            state.summaries = [(int(r[0]), parse_lsn(r[1]), parse_lsn(r[2])) for r in conn.execute(
                "SELECT tli, start_lsn::text, end_lsn::text FROM pg_available_wal_summaries()"
                " WHERE tli = %s ORDER BY start_lsn", (state.timeline,))]
    except Exception as exc:  # psycopg.Error: e.g. the role may not execute the functions
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        state.error = first
    return state


def first_gap(summaries: List[Tuple[int, int, int]], start: int, end: int) -> Optional[Tuple[int, int]]:
    """The first range of [start, end) that no summary covers, or None when they cover all of it.
    ``summaries`` are (tli, start_lsn, end_lsn) on one timeline."""
    cursor = start
    for _tli, lo, hi in sorted(summaries, key=lambda s: (s[1], s[2])):
        if cursor >= end:
            break
        if lo > cursor:
            return cursor, min(lo, end)
        cursor = max(cursor, hi)
    return (cursor, end) if cursor < end else None


def describe_range(rng: Tuple[int, int]) -> str:
    return f"{format_lsn(rng[0])} .. {format_lsn(rng[1])}"
