"""PostgreSQL's WAL archiver as the agent sees it: the archiving settings with ``pg_stat_archiver``
(:func:`archiver_state`), the one decision whether a server archives at all (:func:`archiving_off`),
and the one way to switch WAL and wait until the segment is archived (:func:`switch_and_wait`).

Whether a segment is archived is the caller's question (``is_archived``): this package knows
PostgreSQL, not the archive or the storage behind it. Callers word their own errors.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

_ARCHIVER_COLUMNS = ("archive_mode", "archive_command", "archive_library", "archived_count", "failed_count",
                     "last_archived_wal", "last_archived_time", "last_failed_wal", "last_failed_time", "stats_reset",
                     "now")


def archiver_state(conn) -> Dict[str, Any]:  # type: ignore[no-untyped-def]
    """The archiving settings and ``pg_stat_archiver`` in one row, with the server's clock as ``now``."""
    row = conn.execute(
        "SELECT current_setting('archive_mode'), current_setting('archive_command'),"
        " coalesce(current_setting('archive_library', true), ''), archived_count, failed_count,"
        " last_archived_wal, last_archived_time, last_failed_wal, last_failed_time, stats_reset, now()"
        " FROM pg_stat_archiver").fetchone()
    return dict(zip(_ARCHIVER_COLUMNS, row))


def archiving_off(state: Dict[str, Any]) -> str:
    """Why a server archives nothing - "archive_mode off", or "archive_command is empty" (neither it nor
    archive_library set) - or "" when it archives; ``state`` is ``archiver_state`` (or has its
    ``archive_mode``, ``archive_command`` and ``archive_library``)."""
    if state["archive_mode"] == "off":
        return "archive_mode off"
    if not (state["archive_command"] or "").strip() and not (state["archive_library"] or "").strip():
        return "archive_command is empty"
    return ""


def failed_since(state: Dict[str, Any], since: Any) -> bool:
    """True when the archiver's last failure (``archiver_state``) happened at or after ``since`` (a
    server timestamp; None: any failure counts)."""
    if not state["last_failed_wal"]:
        return False
    return since is None or bool(state["last_failed_time"] and state["last_failed_time"] >= since)


def switch_wal(conn) -> str:  # type: ignore[no-untyped-def]
    """Close the current WAL segment; returns the name of the segment that holds the switch record.
    A switch on a segment with no record since the last switch produces no new segment: write one first."""
    return conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]


FIRST_POLL = 0.02      # seconds before the second check: a segment usually arrives within milliseconds


def poll_delays(poll: float, first: float = FIRST_POLL) -> Iterator[float]:
    """Adaptive backoff: ``first``, then doubling up to ``poll`` (a fixed ``poll`` cost every backup up
    to ``poll`` seconds even when the segment was archived a few milliseconds after the first check)."""
    delay = min(first, poll)
    while True:
        yield delay
        delay = min(delay * 2, poll)


def wait_archived(segment: str, is_archived: Callable[[str], bool], timeout: float, *, poll: float = 0.25,
                  give_up: Optional[Callable[[], str]] = None,
                  sleep: Callable[[float], None] = time.sleep) -> Tuple[bool, str]:
    """Check until ``is_archived(segment)`` or ``timeout`` seconds passed, with :func:`poll_delays`
    between checks (at most ``poll`` apart); ``give_up`` (checked after each miss) may name a reason to
    stop waiting early. Returns (archived, the reason it stopped early or "")."""
    deadline = time.monotonic() + timeout
    delays = poll_delays(poll)
    while True:
        if is_archived(segment):
            return True, ""
        if give_up is not None:
            reason = give_up()
            if reason:
                return False, reason
        left = deadline - time.monotonic()
        if left <= 0:
            return False, ""
        sleep(min(next(delays), left))


def switch_and_wait(conn, is_archived: Callable[[str], bool], timeout: float, *,  # type: ignore[no-untyped-def]
                    poll: float = 0.25, give_up: Optional[Callable[[], str]] = None,
                    on_switch: Optional[Callable[[str], None]] = None) -> Tuple[str, bool, str]:
    """:func:`switch_wal`, then :func:`wait_archived` for that segment (``on_switch`` hears its name
    first). Returns (segment, archived, the reason it stopped early or "")."""
    segment = switch_wal(conn)
    if on_switch is not None:
        on_switch(segment)
    archived, reason = wait_archived(segment, is_archived, timeout, poll=poll, give_up=give_up)
    return segment, archived, reason
