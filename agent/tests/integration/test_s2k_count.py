"""``encryption.s2k_count`` against a real archiving PostgreSQL 15 (local repository, passphrase mode).

WAL is archived by the real ``pg-backup wal-push`` at the default (maximal) count; then the
configuration is changed to a low count, a physical base backup is taken with it, and one more
segment is archived at the old count. ``pitr --latest`` with the new configuration must restore the
low-count backup and fetch the old-count WAL (gpg reads the count from each object's packet), and
hold exactly the production rows.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import free_port
from pgb_pitr_support import enable_archiving, scratch_dir, remove_tree, sql_on, stop, switch_and_wait_archived

pytestmark = pytest.mark.integration


def _s2k_count(path: Path) -> int:
    with tempfile.TemporaryDirectory() as home:
        res = subprocess.run(["gpg", "--homedir", home, "--batch", "--list-packets", str(path)],
                             capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    text = (res.stdout + res.stderr).decode(errors="replace")
    assert "count " in text, text
    return int(text.split("count ", 1)[1].split()[0])


def test_low_count_backup_restores_and_wal_at_the_old_count_is_still_fetched(make_cluster, workdir, write_config,
                                                                              run_agent):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    common = {"backup": {"globals": False}, "physical": {"checkpoint": "fast"}}
    old_cfg = write_config(workdir, "s2k", cluster=cluster, **common)
    low_cfg = write_config(workdir, "s2k", cluster=cluster, config_name="low.yml",
                           encryption={"s2k_count": 65536}, **common)
    scratch = scratch_dir()
    data_dir = os.path.join(scratch, "data")
    try:
        enable_archiving(cluster, old_cfg)              # wal-push keeps the old (default) count
        cluster.psql("CREATE TABLE rows_s2k (id int PRIMARY KEY); INSERT INTO rows_s2k SELECT generate_series(1, 100)")
        switch_and_wait_archived(cluster)
        backup = run_agent(low_cfg, "backup", "--physical").data
        cluster.psql("INSERT INTO rows_s2k SELECT generate_series(101, 150)")
        segment = switch_and_wait_archived(cluster)

        base = workdir / "repo" / "s2k" / "backups" / backup["backup_id"] / "base.tar.zst.gpg"
        wal = next((workdir / "repo" / "s2k" / "wal").rglob(f"{segment}*.gpg"))
        assert (_s2k_count(base), _s2k_count(wal)) == (65536, 65011712)

        port = free_port()
        res = run_agent(low_cfg, "pitr", "--latest", "--data-dir", data_dir, "--port", str(port), timeout=300)
        assert res.data["backup_id"] == backup["backup_id"]
        assert sql_on(port, "SELECT count(*), max(id) FROM rows_s2k") == (150, 150)
    finally:
        stop(data_dir)
        remove_tree(scratch)
        cluster.destroy()
