"""Helpers of the physical backup and PITR integration tests (plain functions and classes).

- ``enable_archiving(cluster, cfg)``: archive_command = the real ``pg-backup wal-push`` of ``cfg``.
- ``Workload``: a thread committing numbered rows (``ticks``: id, clock_timestamp()) one transaction
  each; ``checkpoint()`` pauses it between two commits and records the server time, the WAL insert
  position and the exact set of committed ids, so a recovery target taken there has one right answer.
- ``scratch_dir()``: a short postgres-owned directory (Unix socket paths must stay below 108 bytes).
- ``ids_on(port)`` / ``sql_on(port, ...)``: read a recovered server over loopback.
- ``stop(data_dir, bin_dir)``: stop a recovered server (teardown).
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Set

import psycopg

from conftest import AGENT_BIN, give_to_pg_user


def enable_archiving(cluster: Any, cfg: str) -> None:
    cluster.psql(f"ALTER SYSTEM SET archive_command = '{AGENT_BIN} --config {cfg} --quiet wal-push %p'; "
                 "SELECT pg_reload_conf()")


def wait_until(predicate: Any, timeout: float, what: str, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def switch_and_wait_archived(cluster: Any, timeout: float = 60) -> str:
    """Close the current WAL segment and wait until PostgreSQL reports it archived."""
    segment = cluster.psql("SELECT pg_walfile_name(pg_switch_wal())")
    wait_until(lambda: cluster.psql("SELECT coalesce(last_archived_wal, '') >= %s FROM pg_stat_archiver"
                                    .replace("%s", f"'{segment}'")) == "t", timeout, f"{segment} to be archived")
    return segment


def scratch_dir(prefix: str = "pgbp-") -> str:
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    give_to_pg_user(path, 0o700)
    return path


def connect(port: int, dbname: str = "postgres", host: str = "127.0.0.1") -> psycopg.Connection:
    return psycopg.connect(host=host, port=port, user="postgres", dbname=dbname, autocommit=True, connect_timeout=10)


def sql_on(port: int, query: str, dbname: str = "postgres") -> Any:
    with connect(port, dbname) as conn:
        return conn.execute(query).fetchone()


def ids_on(port: int, dbname: str = "app", table: str = "ticks") -> Set[int]:
    with connect(port, dbname) as conn:
        return {r[0] for r in conn.execute(f"SELECT id FROM {table}")}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone for our purposes
    except (OSError, IndexError):
        return False


def stop(*data_dirs: str, timeout: float = 30) -> None:
    """Immediate shutdown (SIGQUIT to each postmaster) of every server running in ``data_dirs``,
    then wait until all are gone."""
    pids = []
    for data_dir in data_dirs:
        try:
            pid = int(Path(data_dir, "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGQUIT)
            pids.append(pid)
        except (OSError, ValueError, IndexError):
            continue
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


@dataclass
class Checkpoint:
    time: str            # server clock between two commits (ISO 8601, UTC)
    lsn: str             # WAL insert position at that moment
    ids: Set[int]        # exactly the committed ids
    xid: Optional[int] = None   # the last transaction before the checkpoint, when asked for


class Workload:
    """Commits one numbered row per transaction until stopped."""

    def __init__(self, port: int, dbname: str = "app", start_id: int = 1, pause: float = 0.002):
        self.port, self.dbname, self.next_id, self.pause = port, dbname, start_id, pause
        self.lock = threading.Lock()
        self.committed: List[int] = []
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._conn = connect(port, dbname)
        self._conn.execute("CREATE TABLE IF NOT EXISTS ticks (id int PRIMARY KEY, "
                           "at timestamptz NOT NULL DEFAULT clock_timestamp())")
        self.committed = sorted(r[0] for r in self._conn.execute("SELECT id FROM ticks"))
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Workload":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self.lock:
                    self._conn.execute("INSERT INTO ticks (id) VALUES (%s)", (self.next_id,))
                    self.committed.append(self.next_id)
                    self.next_id += 1
                time.sleep(self.pause)
        except BaseException as exc:  # reported by checkpoint()/stop()
            self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise AssertionError(f"workload failed: {self._error}")

    def checkpoint(self, settle: float = 0.05, *, xid: bool = False, restore_point: Optional[str] = None) -> Checkpoint:
        """Pause between two commits and record the state. ``xid``: first commit one more row in a
        transaction of its own and return its id in ``Checkpoint.xid``; ``restore_point``: create it."""
        self._check()
        with self.lock:
            time.sleep(settle)
            with connect(self.port, self.dbname) as conn:
                txid = None
                if xid:
                    with conn.transaction():
                        conn.execute("INSERT INTO ticks (id) VALUES (%s)", (self.next_id,))
                        txid = conn.execute("SELECT txid_current()").fetchone()[0]
                    self.committed.append(self.next_id)
                    self.next_id += 1
                if restore_point:
                    conn.execute("SELECT pg_create_restore_point(%s)", (restore_point,))
                row = conn.execute("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                   "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), pg_current_wal_insert_lsn()::text").fetchone()
                ids = {r[0] for r in conn.execute("SELECT id FROM ticks")}
            assert ids == set(self.committed), "the workload's own record disagrees with the table"
            time.sleep(settle)
        return Checkpoint(row[0], row[1], ids, txid)

    def run_for(self, seconds: float) -> None:
        time.sleep(seconds)
        self._check()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._conn.close()
        self._check()


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
