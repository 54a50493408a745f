"""Step 1 of a drill: mark the primary and take the position of the simulated loss."""
from __future__ import annotations

from typing import Any, Dict, Tuple

from ..context import Context
from ..errors import PgBackupError
from ..postgres.archiver import archiver_state, archiving_off, failed_since, switch_wal, wait_archived
from ..wal.names import record_end

MARKER_PREFIX = "pg-backup-drill"


def mark_primary(ctx: Context, drill_id: str, wait_seconds: float) -> Dict[str, Any]:
    """Commit a marker, create a restore point, switch WAL, wait for the segment in the archive,
    then take the loss position. Never raises: an unreachable primary is part of a real disaster."""
    info: Dict[str, Any] = {"reachable": False, "marker_written": False, "marker_archived": False}
    try:
        with ctx.pg.connect() as conn:
            info["reachable"] = True
            if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                info["error"] = "the configured server is a standby: no marker written (run drills against the primary)"
                return info
            off = archiving_off(archiver_state(conn))
            if off:
                info["archive_wait"] = (f"archiving is off ({off}): no marker written, nothing more will reach "
                                        f"the archive")
            else:
                _write_marker(conn, drill_id, info)
            if info.get("segment"):
                info["marker_archived"], why = _wait_archived(ctx, conn, info["segment"], wait_seconds)
                if why:
                    info["archive_wait"] = why
            insert, block, segment_size = conn.execute(
                "SELECT pg_current_wal_insert_lsn()::text, current_setting('wal_block_size')::int,"
                " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')").fetchone()
            info["loss_insert_lsn"] = insert
            info["loss_lsn"] = record_end(insert, block, segment_size)
    except PgBackupError as exc:
        info["error"] = exc.message
    except Exception as exc:  # the connection broke half-way: the drill goes on without the primary
        info["error"] = f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return info


def _write_marker(conn: Any, drill_id: str, info: Dict[str, Any]) -> None:
    """Marker commit, restore point and WAL switch; a failure (no privilege, ...) is noted, not raised."""
    try:
        row = conn.execute("SELECT pg_logical_emit_message(true, %s, %s)::text", (MARKER_PREFIX, drill_id)).fetchone()
        info.update(marker_written=True, marker_lsn=row[0])
        info["restore_point"] = f"pgb-drill-{drill_id}"
        conn.execute("SELECT pg_create_restore_point(%s)", (info["restore_point"],))
        info["segment"] = switch_wal(conn)
    except Exception as exc:  # psycopg.Error: no privilege, wal_level minimal, ...
        info["error"] = f"cannot write the drill marker: {str(exc).strip().splitlines()[0]}"


def _wait_archived(ctx: Context, conn: Any, segment: str, wait_seconds: float) -> Tuple[bool, str]:
    archive = ctx.wal_archive
    started = conn.execute("SELECT now()").fetchone()[0]
    ctx.progress.stage(f"drill: waiting up to {wait_seconds:.0f} s for WAL segment {segment} in the archive")

    def give_up() -> str:
        state = archiver_state(conn)
        off = archiving_off(state)
        if off:
            return f"archiving is off ({off}): {segment} will not be archived"
        if failed_since(state, started):
            return f"archive_command failed for {state['last_failed_wal']} at {state['last_failed_time']}"
        return ""

    archived, why = wait_archived(segment, archive.has, wait_seconds, give_up=give_up)
    if archived or why:
        return archived, why
    return False, f"{segment} did not reach the archive within {wait_seconds:.0f} s"
