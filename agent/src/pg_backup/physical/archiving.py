"""The WAL a base backup needs: archiving must be configured before it starts, and every segment
from its start to its stop must be in this repository's WAL archive before its manifest is committed
(a base backup without them cannot be made consistent). Segments still waiting for archive_command
are stored by the backup itself when it runs beside the server as its user (the same wal-push
service, so PostgreSQL's own call then finds them stored): the backup waits on no other process."""
from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, List, Optional

from ..context import Context
from ..errors import ArchivingError, PgBackupError, RefusedError
from ..postgres.archiver import archiver_state, archiving_off, failed_since, wait_archived
from ..wal.names import next_segment
from ..wal.pgfiles import read_segment_header

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


def backup_wal_names(start_wal: str, stop_wal: str, segment_size: int) -> List[str]:
    """Every segment from ``start_wal`` to ``stop_wal`` (one timeline; [stop_wal] across a switch)."""
    if start_wal[:8] != stop_wal[:8] or start_wal > stop_wal:
        return [stop_wal]
    names = [start_wal]
    while names[-1] != stop_wal:
        names.append(next_segment(names[-1], segment_size))
    return names


def own_pg_wal(data_directory: str, stop_wal: str, system_identifier: int, segment_size: int,
               archive_command: str) -> str:
    """The server's pg_wal when this process can store its files the way archive_command does: the
    server archives with ``wal-push`` (another archive_command, or a failing one, is still waited
    for and reported), and this host has the data directory of *that* cluster (the stop segment's
    page header names its system identifier), owned by this user (spool markers and locks are then
    shared with wal-push). Returns "" otherwise: the backup then waits for PostgreSQL's archiver."""
    pg_wal = os.path.join(data_directory or "", "pg_wal")
    try:
        if "wal-push" not in (archive_command or "") or not data_directory or os.stat(pg_wal).st_uid != os.geteuid():
            return ""
    except OSError:
        return ""
    header = read_segment_header(os.path.join(pg_wal, stop_wal))
    if header is None or header[0] != int(system_identifier) or header[1] != segment_size:
        return ""
    return pg_wal


def push_backup_wal(ctx: Context, pg_wal: str, names: List[str], timeout: float, fingerprint: str) -> List[str]:
    """Store the backup's own WAL segments that still wait for archive_command (``.ready``) from
    ``pg_wal`` in this process, through the wal-push service: same encoding, signature, identity check
    and create-if-absent put, under the same spool lock, and the same spool marker afterwards, so
    PostgreSQL's own wal-push of that segment is acknowledged without storing it again (an object
    stored by the archiver first is found identical and is success here). The backup then waits on
    no other process. Returns the names this process confirmed stored; a storage or spool problem
    only warns (the caller waits for the archiver, which retries)."""
    status = os.path.join(pg_wal, "archive_status")
    todo = [n for n in names if os.path.exists(os.path.join(status, n + ".ready"))]
    if not todo:
        return []
    from ..wal.push import Pusher
    from ..wal.spool import Spool

    done: List[str] = []
    try:
        pusher = Pusher(ctx, Spool.for_settings(ctx.settings), pg_wal, record_conflicts=False,
                        argv=["backup", names[-1]], fingerprint=fingerprint)
        for name in todo:
            outcome = pusher.push_file(name, lock_wait=max(timeout, 1.0), require_ready=True)
            if outcome is not None:       # None: archive_command stored it meanwhile (checked below)
                done.append(name)
                how = "stored by this backup" if outcome.outcome == "stored" else "found stored by wal-push"
                ctx.progress.stage(f"WAL segment {name} {how} (PostgreSQL's archive_command is acknowledged "
                                   f"at once)")
    except RefusedError:
        raise                              # another cluster's WAL or different content: never waited out
    except PgBackupError as exc:
        ctx.progress.warn(f"could not store WAL segment(s) {', '.join(todo)} from {pg_wal} itself ({exc.message}); "
                          f"waiting for PostgreSQL's archiver")
    return done


def start_backup_wal_push(ctx: Context, start_wal: str, stop_wal: str, timeout: float, *, segment_size: int,
                          data_directory: str, system_identifier: int, fingerprint: str,
                          archive_command: str) -> "Optional[Future[List[str]]]":
    """:func:`push_backup_wal` in a thread of its own, started as soon as the stop position is known
    (beside the last small objects and the after-stop queries); ``fingerprint`` is the encryption
    key's, computed once per backup (in passphrase mode it costs an scrypt). None when this process
    cannot store the server's WAL itself (:func:`own_pg_wal`)."""
    pg_wal = own_pg_wal(data_directory, stop_wal, system_identifier, segment_size, archive_command)
    if not pg_wal:
        return None
    pool = ThreadPoolExecutor(1, thread_name_prefix="pgb-backup-wal")
    try:
        return pool.submit(push_backup_wal, ctx, pg_wal, backup_wal_names(start_wal, stop_wal, segment_size), timeout,
                           fingerprint)
    finally:
        pool.shutdown(wait=False)        # the submitted push runs to its end


def secure_backup_wal(ctx: Context, archive: Any, start_wal: str, stop_wal: str, timeout: float, *,
                      segment_size: int, pushing: "Optional[Future[List[str]]]" = None, since: Any = None) -> float:
    """Return once every WAL segment the backup needs (``start_wal`` .. ``stop_wal``) is durable in this
    repository's WAL archive: the ones this process stored (``pushing``, :func:`start_backup_wal_push`)
    are; the others are checked, and waited for when missing. Raises ArchivingError (with the
    archiver's own failure) when one does not arrive in ``timeout``. Returns the seconds spent."""
    t0 = time.monotonic()
    names = backup_wal_names(start_wal, stop_wal, segment_size)
    pushed = set(pushing.result()) if pushing is not None else set()
    rest = [n for n in names if n not in pushed]
    if len(rest) > 1:
        with ThreadPoolExecutor(min(8, len(rest)), thread_name_prefix="pgb-wal-check") as pool:
            present = dict(zip(rest, pool.map(archive.has, rest)))
        rest = [n for n in rest if not present[n]]
    for name in rest:
        left = max(timeout - (time.monotonic() - t0), 1.0)
        wait_for_wal(ctx, archive, name, left, since=since)
    return time.monotonic() - t0
