"""Health of PostgreSQL's WAL summarizer, which incremental physical backups depend on.

:func:`probe_summarizer` reads the server (``summarize_wal``, ``pg_get_wal_summarizer_state()``);
:func:`summarizer_checks` turns that into check results (plain dicts that
:func:`~.checks.evaluate` makes :class:`~.checks.Check` of), only when incremental backups are
configured (``physical.incremental`` auto or always):

- summarize_wal off on PostgreSQL 17+: warning with ``auto`` (every physical backup is full),
  critical with ``always`` (every physical backup fails); likewise a server older than 17;
- summarize_wal on but no summarizer process: critical;
- the summarizer behind the server's WAL insert position by more than :data:`BEHIND_WARNING_BYTES`:
  warning (an incremental backup waits for it, and fails when it does not progress);
- the functions cannot be read (e.g. a role without the privilege): unknown.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ..postgres.summarizer import MIN_SUMMARIZER_MAJOR, SummarizerState, summarizer_state
from ..wal.names import format_lsn

BEHIND_WARNING_BYTES = 256 << 20   # 16 segments of 16 MiB: far more than a healthy summarizer ever lags


@dataclass
class SummarizerProbe:
    mode: str                              # physical.incremental
    state: Optional[SummarizerState] = None
    error: Optional[str] = None            # the server could not be asked


def probe_summarizer(ctx: Any) -> Optional[SummarizerProbe]:
    """None when incremental backups are not configured (nothing to report)."""
    mode = ctx.settings.physical.incremental
    if mode == "never":
        return None
    probe = SummarizerProbe(mode)
    try:
        info = ctx.pg.server_info()
        with ctx.pg.connect() as conn:
            probe.state = summarizer_state(conn, info.major)
    except Exception as exc:  # PgBackupError (unreachable) or psycopg.Error: reported as unknown
        probe.error = getattr(exc, "message", None) or str(exc).strip().splitlines()[0]
    return probe


def _check(status: str, message: str, value: Optional[float] = None, warning: Optional[float] = None,
           critical: Optional[float] = None) -> Dict[str, Any]:
    return {"name": "wal_summarizer", "status": status, "message": message, "value": value, "warning": warning,
            "critical": critical, "unit": "B" if value is not None else None}


def summarizer_checks(probe: Optional[SummarizerProbe]) -> List[Dict[str, Any]]:
    if probe is None:
        return []
    if probe.error or probe.state is None:
        return [_check("unknown", f"cannot ask PostgreSQL about the WAL summarizer: {probe.error or 'not probed'}")]
    state, mode = probe.state, probe.mode
    bad = "critical" if mode == "always" else "warning"
    consequence = ("every 'backup --physical' fails (physical.incremental is always)" if mode == "always"
                   else "every physical backup is full (physical.incremental is auto)")
    if state.server_major < MIN_SUMMARIZER_MAJOR:
        return [_check(bad, f"PostgreSQL {state.server_major} has no WAL summarizer (incremental backups need "
                            f"{MIN_SUMMARIZER_MAJOR}+): {consequence}")]
    if state.in_recovery:
        return [_check("ok", "the server is a standby: the summarizer is checked on the primary")]
    if not state.enabled:
        return [_check(bad, f"summarize_wal is off: {consequence}; set summarize_wal = on (the wal_archiving role "
                            f"does) and reload")]
    if state.error:
        return [_check("unknown", f"summarize_wal is on, but its state cannot be read: {state.error}")]
    if state.summarizer_pid is None:
        return [_check("critical", "summarize_wal is on but no WAL summarizer process runs: incremental backups "
                                   "wait for it and fail (see the PostgreSQL log)")]
    lag = state.lag_bytes
    where = (f"summarized up to {format_lsn(state.summarized_lsn)}" if state.summarized_lsn is not None
             else "nothing summarized yet")
    if lag is not None and lag > BEHIND_WARNING_BYTES:
        return [_check("warning", f"the WAL summarizer is {lag} bytes behind the server's WAL ({where}, WAL at "
                                  f"{format_lsn(state.current_lsn or 0)}): an incremental backup waits for it",
                       lag, BEHIND_WARNING_BYTES)]
    return [_check("ok", f"the WAL summarizer runs (pid {state.summarizer_pid}), {where}"
                         + (f", {lag} bytes behind" if lag is not None else ""), lag, BEHIND_WARNING_BYTES)]
