"""Helpers of the WAL archiving integration tests (plain functions and one cluster class, no fixtures)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from conftest import AGENT_BIN, PgCluster, free_port, make_pg_dir, run_pg
from pgb_health_support import wait_for

__all__ = ["wait_for"]


def push_command(cfg: str) -> str:
    return f"{AGENT_BIN} --config {cfg} --quiet wal-push %p"


def fetch_command(cfg: str) -> str:
    return f"{AGENT_BIN} --config {cfg} --quiet wal-fetch %f %p"


def enable_archiving(cluster: PgCluster, cfg: str) -> None:
    """archive_command = the real agent (the cluster must run with archive_mode=on)."""
    cluster.psql(f"ALTER SYSTEM SET archive_command = '{push_command(cfg)}'; SELECT pg_reload_conf()")


def switch_segments(cluster: PgCluster, count: int, rows: int = 20000) -> List[str]:
    """Write some WAL and switch ``count`` times; returns the names of the completed segments."""
    names = []
    cluster.psql("CREATE TABLE IF NOT EXISTS walgen (id bigserial, payload text)")
    for _ in range(count):
        names.append(cluster.psql(
            f"INSERT INTO walgen (payload) SELECT md5(g::text) FROM generate_series(1, {rows}) g; "
            "SELECT pg_walfile_name(pg_switch_wal())").splitlines()[-1])
    return names


def wait_archived(cluster: PgCluster, name: str, timeout: float = 60) -> None:
    """Until pg_stat_archiver has archived ``name`` (or a later segment)."""
    def done() -> bool:
        last = cluster.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
        return bool(last) and last[:24] >= name[:24] and not last.endswith(".history")
    wait_for(done, timeout, what=f"{name} to be archived (log: {cluster.log_tail(5)})")


def ready_count(cluster: PgCluster) -> int:
    status = cluster.datadir / "pg_wal" / "archive_status"
    return len([n for n in os.listdir(status) if n.endswith(".ready")])


class SegsizeCluster(PgCluster):
    """A cluster made with ``initdb --wal-segsize=N`` (MiB), in a short directory (socket path limit)."""

    def __init__(self, version: str, bin_dir: Path, segsize_mib: int, settings: Optional[Dict[str, Any]] = None):
        directory = Path(tempfile.mkdtemp(prefix="pgb-ws-"))
        super().__init__(version, directory, bin_dir, settings or {})
        self.segsize_mib = segsize_mib

    def init(self) -> "SegsizeCluster":
        make_pg_dir(self.dir, 0o700)
        run_pg([self.bin("initdb"), "-D", self.datadir, "--auth=trust", "-U", self.superuser, "--encoding=UTF8",
                "--locale=C", "--no-sync", f"--wal-segsize={self.segsize_mib}"], cwd=self.dir, timeout=300)
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write("\ninclude 'pgb_test.conf'\n")
        self._write_settings(free_port())
        return self


def base_backup_into(source: PgCluster, settings: Optional[Dict[str, Any]] = None, wal: str = "none") -> PgCluster:
    """pg_basebackup of ``source`` into a new (not started) cluster directory; ``wal='none'`` leaves
    all WAL to restore_command."""
    target = PgCluster(str(source.version), Path(tempfile.mkdtemp(prefix="pgb-wr-")), source.bin_dir, settings or {})
    make_pg_dir(target.dir, 0o700)
    run_pg([source.bin("pg_basebackup"), "-D", str(target.datadir), "-X", wal, "--checkpoint=fast", "-h", source.host,
            "-p", str(source.port), "-U", "postgres"], timeout=300)
    target._write_settings(free_port())
    return target


def segment_copy(cluster: PgCluster, name: str, directory: Path) -> Path:
    """A copy of one of the cluster's WAL files in ``directory``/pg_wal (owned by postgres)."""
    pg_wal = make_pg_dir(directory / "pg_wal", 0o700)
    dest = pg_wal / name
    shutil.copyfile(cluster.datadir / "pg_wal" / name, dest)
    subprocess.run(["chown", "postgres:postgres", str(dest)], check=False)
    return dest
