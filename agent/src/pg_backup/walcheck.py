"""``wal-check``: prove that WAL archiving works end to end, now.

Forces a WAL switch on the primary and waits until the segment that holds the switch record is in
the archive, i.e. until PostgreSQL ran ``archive_command`` (``pg-backup wal-push``) for it and the
push was durable. The ``wal_archiving`` role runs it after configuring a cluster, so a rollout
fails on the host whose archiving is broken instead of reporting "configured".

On a timeout the error names what PostgreSQL's archiver last reported (``pg_stat_archiver``),
which is nearly always the real cause (bad credentials, unreachable bucket, wrong path).
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional

from .context import Context
from .errors import ArchivingError, RefusedError
from .postgres import archiver_state

#: What the JSON result reports of the archiver's state.
_REPORTED = ("archived_count", "last_archived_wal", "last_archived_time", "failed_count", "last_failed_wal",
             "last_failed_time", "archive_mode")


def run_wal_check(ctx: Context, timeout: float = 60.0, poll: float = 0.25) -> Dict[str, Any]:
    from .walarchive import WalArchive

    archive = WalArchive(ctx.storage, ctx.cluster)
    started = time.monotonic()
    with ctx.pg.connect() as conn:
        in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        if in_recovery:
            raise RefusedError("the server is a standby: WAL switches and archiving are checked on the primary")
        before = archiver_state(conn)
        if before["archive_mode"] == "off":
            raise ArchivingError("archive_mode is off on this server",
                                 hint="configure archiving (the wal_archiving role) and restart PostgreSQL")
        # Write a WAL record first: a switch on an empty segment would not produce a new one.
        conn.execute("SELECT pg_logical_emit_message(false, 'pg-backup', 'wal-check')")
        segment: Optional[str] = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        ctx.progress.stage(f"switched WAL; waiting for {segment} in {ctx.repo.location}")
        deadline = started + timeout
        while True:
            if archive.has(segment):
                break
            if time.monotonic() >= deadline:
                after = archiver_state(conn)
                detail = "PostgreSQL's archiver reported no failure"
                if after["last_failed_wal"] and (after["failed_count"] or 0) > (before["failed_count"] or 0):
                    detail = (f"PostgreSQL's archiver failed {after['failed_count'] - (before['failed_count'] or 0)}"
                              f" time(s), last on {after['last_failed_wal']} at {after['last_failed_time']}")
                raise ArchivingError(
                    f"WAL segment {segment} did not reach the archive within {timeout:g} s ({detail})",
                    hint="check archive_command and the PostgreSQL server log for pg-backup wal-push errors")
            time.sleep(poll)
        after = archiver_state(conn)
    waited = time.monotonic() - started
    return {"segment": segment, "archived": True, "seconds": round(waited, 3),
            "archive_command": after["archive_command"], "archiver": {
                k: (str(after[k]) if after[k] is not None else None) for k in _REPORTED},
            "_text": [f"archiving works: {segment} reached {ctx.repo.location} in {waited:.1f} s"]}
