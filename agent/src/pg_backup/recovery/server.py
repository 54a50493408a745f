"""The recovered server while it replays WAL: its log, a client for it, and waiting for the promotion.

Starting and stopping it is :mod:`pg_backup.postgres.server` (pg_ctl by data directory); this module
knows what a recovery looks like from outside: postmaster.pid's status word, ``pg_is_in_recovery()``,
and the log's FATAL and "recovery stopping" lines (lc_messages is C during recovery).
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Dict, Optional, Tuple

from ..context import Context
from ..errors import PostgresError
from ..manifest import iso
from ..postgres.client import Postgres
from ..postgres.server import connect_info, postmaster_pid, postmaster_status
from ..progress import PhaseTimer, Progress
from .datadir import read_text

RECOVERY_LOG = os.path.join("log", "pg-backup-recovery.log")

#: What the promoted server reached: the last replayed commit's time, the WAL location, the timeline.
_REACHED_SQL = ("SELECT pg_last_xact_replay_timestamp(), pg_last_wal_replay_lsn()::text,"
                " ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int")


def log_path(data_dir: str) -> str:
    return os.path.join(data_dir, RECOVERY_LOG)


def _log_problem(data_dir: str) -> str:
    """The last FATAL/PANIC line of the recovery log (lc_messages is C during recovery)."""
    lines = read_text(log_path(data_dir)).splitlines()
    bad = [ln for ln in lines if "FATAL:" in ln or "PANIC:" in ln]
    pick = bad[-1] if bad else (lines[-1] if lines else "no log")
    return pick.split("FATAL:", 1)[-1].split("PANIC:", 1)[-1].strip()


def log_stop_record(data_dir: str) -> Optional[str]:
    """The log line saying where recovery stopped (or that the base backup became consistent)."""
    for ln in reversed(read_text(log_path(data_dir)).splitlines()):
        if "recovery stopping" in ln or "consistent recovery state reached" in ln:
            return ln.split("LOG:", 1)[-1].strip()
    return None


def scratch_postgres(ctx: Context, host: str, port: int) -> Postgres:
    """A client of a recovered (scratch) server with the configured role and client settings."""
    return Postgres(dataclasses.replace(ctx.settings.postgres, host=host, port=port))


def wait_for_promotion(ctx: Context, data_dir: str, timer: PhaseTimer, progress: Progress,
                       timeout: Optional[float]) -> Tuple[Dict[str, Any], Tuple[Optional[int], Optional[str], Optional[str]]]:
    """Wait until the server accepts connections and has left recovery; raise with the log's FATAL
    line if it stops. Returns (what was reached, connection info). Connections are attempted only
    once postmaster.pid says the server accepts them, so the log stays free of refusals."""
    t0 = time.monotonic()
    ready_at: Optional[float] = None
    last_note = t0
    deadline = t0 + timeout if timeout else None
    conn = None
    try:
        while True:
            time.sleep(0.1)
            status = postmaster_status(data_dir)
            if postmaster_pid(data_dir) is None and time.monotonic() - t0 > 1.0:
                time.sleep(0.5)
                if postmaster_pid(data_dir) is None:
                    raise PostgresError(f"the recovered server in {data_dir} stopped: {_log_problem(data_dir)}",
                                        hint=f"see {log_path(data_dir)}")
            if status in ("standby", "ready") and ready_at is None:
                ready_at = time.monotonic()
                timer.add("startup", ready_at - t0)
            port, sock, addr = connect_info(data_dir)
            if status == "ready" and port is not None:
                try:
                    if conn is None:
                        conn = scratch_postgres(ctx, sock or addr or "127.0.0.1", port).connect()
                    in_recovery, at = conn.execute("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text").fetchone()
                    if not in_recovery:
                        row = conn.execute(_REACHED_SQL).fetchone()
                        timer.add("wal_replay", time.monotonic() - (ready_at or t0))
                        return ({"time": iso(row[0]) if row[0] else None, "lsn": row[1], "timeline": row[2]},
                                (port, sock, addr))
                except PostgresError:
                    conn = None
                except Exception:  # psycopg.Error: the server went away under us; the checks above tell
                    if conn is not None:
                        conn.close()
                    conn = None
                    continue
                if time.monotonic() - last_note > 10:
                    last_note = time.monotonic()
                    progress.note(f"replaying WAL: at {at}")
            if deadline and time.monotonic() > deadline:
                raise PostgresError(f"the recovered server in {data_dir} did not finish recovery within "
                                    f"{timeout:.0f} s", hint=f"it is still running; see {log_path(data_dir)}")
    finally:
        if conn is not None:
            conn.close()
