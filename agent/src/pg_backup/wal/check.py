"""``wal-check``: prove that WAL archiving works end to end, now.

Forces a WAL switch on the primary and waits until the segment that holds the switch record is in
the archive, i.e. until PostgreSQL ran ``archive_command`` (``pg-backup wal-push``) for it and the
push was durable. The ``wal_archiving`` role runs it after configuring a cluster, so a rollout
fails on the host whose archiving is broken instead of reporting "configured".

A server that archives nothing at all (``archive_mode = off``, or on with an empty
``archive_command``; the one test, ``postgres.archiver.archiving_off``, that physical backups,
drills and health use too) fails at once, without a switch. On a timeout the error names what
PostgreSQL's archiver last reported (``pg_stat_archiver``), which is nearly always the real cause
(bad credentials, unreachable bucket, wrong path).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..context import Context
from ..errors import ArchivingError, RefusedError
from ..postgres.archiver import archiver_state, archiving_off, switch_and_wait

#: What the JSON result reports of the archiver's state.
_REPORTED = ("archived_count", "last_archived_wal", "last_archived_time", "failed_count", "last_failed_wal",
             "last_failed_time", "archive_mode")


@dataclass
class WalCheckReport:
    """The segment that reached the archive, how long that took (seconds, unrounded) and the archiver's
    state afterwards."""

    segment: str
    seconds: float
    archive_command: Optional[str]
    archiver: Dict[str, Optional[str]]

    def as_dict(self) -> Dict[str, Any]:
        return {"segment": self.segment, "archived": True, "seconds": round(self.seconds, 3),
                "archive_command": self.archive_command, "archiver": self.archiver}


def run_wal_check(ctx: Context, timeout: float = 60.0, poll: float = 0.25) -> WalCheckReport:
    archive = ctx.wal_archive
    started = time.monotonic()
    with ctx.pg.connect() as conn:
        in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        if in_recovery:
            raise RefusedError("the server is a standby: WAL switches and archiving are checked on the primary")
        before = archiver_state(conn)
        off = archiving_off(before)
        if off == "archive_mode off":
            raise ArchivingError("archive_mode is off on this server",
                                 hint="configure archiving (the wal_archiving role) and restart PostgreSQL")
        if off:
            raise ArchivingError(f"archive_mode is {before['archive_mode']} but archive_command is empty on this "
                                 f"server: PostgreSQL archives nothing",
                                 hint="set archive_command = 'pg-backup --config FILE wal-push %p' (the "
                                      "wal_archiving role does it) and reload PostgreSQL")
        # Write a WAL record first: a switch on an empty segment would not produce a new one.
        conn.execute("SELECT pg_logical_emit_message(false, 'pg-backup', 'wal-check')")
        segment, archived, _ = switch_and_wait(
            conn, archive.has, max(0.0, started + timeout - time.monotonic()), poll=poll,
            on_switch=lambda name: ctx.progress.stage(f"switched WAL; waiting for {name} in {ctx.repo.location}"))
        after = archiver_state(conn)
        if not archived:
            detail = "PostgreSQL's archiver reported no failure"
            if after["last_failed_wal"] and (after["failed_count"] or 0) > (before["failed_count"] or 0):
                detail = (f"PostgreSQL's archiver failed {after['failed_count'] - (before['failed_count'] or 0)}"
                          f" time(s), last on {after['last_failed_wal']} at {after['last_failed_time']}")
            raise ArchivingError(
                f"WAL segment {segment} did not reach the archive within {timeout:g} s ({detail})",
                hint="check archive_command and the PostgreSQL server log for pg-backup wal-push errors")
    return WalCheckReport(segment, time.monotonic() - started, after["archive_command"],
                          {k: (str(after[k]) if after[k] is not None else None) for k in _REPORTED})
