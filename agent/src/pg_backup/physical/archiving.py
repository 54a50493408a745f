"""The WAL a base backup needs: archiving must be configured before it starts, and its last segment
must be in this repository's WAL archive before its manifest is committed (a base backup without
that segment cannot be made consistent)."""
from __future__ import annotations

import time
from typing import Any, Dict

from ..context import Context
from ..errors import ArchivingError, PgBackupError
from ..postgres.archiver import archiver_state, archiving_off, failed_since, wait_archived

#: Longest pause between two checks for a base backup's stop segment: an archive lookup (a stat, or
#: one S3 HEAD) is cheap, and every pause is added to the backup's wall time.
STOP_SEGMENT_POLL = 0.2


def check_archiving_configured(state: Dict[str, Any]) -> None:
    """Refuse before the backup when the server cannot archive the WAL the backup will need."""
    off = archiving_off(state)
    if off == "archive_mode off":
        raise ArchivingError("WAL archiving is off (archive_mode = off): a physical backup without archived WAL "
                             "cannot be restored",
                             hint="configure archiving with archive_command 'pg-backup wal-push %p' (the "
                                  "wal_archiving role does it) and restart PostgreSQL")
    if off:
        raise ArchivingError("WAL archiving is not configured (archive_mode is on but archive_command is empty): "
                             "a physical backup without archived WAL cannot be restored",
                             hint="set archive_command = 'pg-backup --config FILE wal-push %p' and reload")


def wait_for_wal(ctx: Context, archive: Any, segment: str, timeout: float, *, since: Any = None,
                 poll: float = STOP_SEGMENT_POLL) -> float:
    """Wait until ``segment`` is in this repository's WAL archive (first re-check after 20 ms, then
    backing off to ``poll``: the segment usually arrives within a second, as soon as archive_command
    has run); raise ArchivingError with the archiver's own last failure when it does not arrive in
    time. Returns the seconds waited."""
    t0 = time.monotonic()
    ctx.progress.stage(f"waiting up to {timeout:.0f} s for WAL segment {segment} in the archive")
    if wait_archived(segment, archive.has, timeout, poll=poll)[0]:
        return time.monotonic() - t0
    detail = "PostgreSQL's archiver reported no failure"
    try:
        with ctx.pg.connect() as conn:
            state = archiver_state(conn)
        if failed_since(state, since):
            detail = f"archive_command last failed on {state['last_failed_wal']} at {state['last_failed_time']}"
        elif "wal-push" not in (state["archive_command"] or ""):
            detail = (f"archive_command {state['archive_command']!r} does not look like 'pg-backup wal-push', so it "
                      f"may archive somewhere else than {ctx.repo.location}")
    except PgBackupError as exc:
        detail = f"the server cannot be asked why: {exc.message}"
    raise ArchivingError(f"WAL segment {segment}, the last one this base backup needs, did not reach the archive "
                         f"within {timeout:.0f} s ({detail}); the backup was not committed",
                         hint="fix archiving (check with 'pg-backup wal-check') and run the backup again; prune "
                              "removes the uncommitted objects after retention.incomplete_grace_hours")
