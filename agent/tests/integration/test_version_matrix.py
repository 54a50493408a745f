"""The version matrix: the same backup and recovery story on every supported PostgreSQL major (15-18),
against the real S3 endpoint.

On each major, one cluster with WAL archiving through the real ``pg-backup wal-push``: a logical
backup restored into another database with the exact content, a physical backup, a workload of
numbered commits, and a point-in-time recovery to a recorded time holding exactly the rows committed
before it (the WAL coming back through ``wal-fetch``). What runs on every major and why: README,
"PostgreSQL versions".

PostgreSQL 17 runs as an operator with only the newest client tools installed would run it:
``postgres.bin_dir`` is PostgreSQL 18's (pg_dump, pg_restore), ``postgres.server_bin_dir`` is 17's
(postgres, pg_ctl, pg_verifybackup: a newer major's refuses a 17 data directory). The incremental
chains on 17 and 18 are tested with the incremental backups themselves.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict

import pytest

from conftest import SUPPORTED_VERSIONS, free_port, run_pg
from pgb_pitr_support import Workload, enable_archiving, ids_on, remove_tree, scratch_dir, sql_on, stop, \
    switch_and_wait_archived

pytestmark = pytest.mark.integration

# The major whose client tools serve an older server in the matrix (a full set, newest supported).
NEWEST = SUPPORTED_VERSIONS[-1]
# Majors run with the newest client tools and their own server programs in postgres.server_bin_dir.
MIXED_CLIENT = ("17",)

CONTENT_SQL = r"""
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, doc jsonb, raw bytea);
INSERT INTO items SELECT g, 'item ' || g || ' ü', jsonb_build_object('g', g, 'sq', g * g),
       decode(md5(g::text), 'hex') FROM generate_series(1, 2000) g;
CREATE INDEX items_name ON items (name);
"""
FINGERPRINT_SQL = ("SELECT count(*) || ':' || md5(string_agg(x::text, '|' ORDER BY x.id)) FROM items x")


def _postgres_section(version: str, pg_bins) -> Dict[str, Any]:
    if version not in MIXED_CLIENT:
        return {}
    return {"bin_dir": str(pg_bins(NEWEST)), "server_bin_dir": str(pg_bins(version))}


def test_logical_physical_wal_and_pitr_on_every_major(pg_version, pg_bins, make_cluster, s3_server, workdir,
                                                      write_config, run_agent):
    settings: Dict[str, Any] = {"archive_mode": "on", "archive_command": "", "wal_level": "replica"}
    if int(pg_version) >= 17:
        settings["summarize_wal"] = True  # what incremental backups need; proven on here
    cluster = make_cluster(version=pg_version, **settings)
    cfg = write_config(workdir, f"matrix{pg_version}", cluster=cluster, s3=s3_server, backup={"globals": False},
                       physical={"checkpoint": "fast"}, postgres=_postgres_section(pg_version, pg_bins))
    enable_archiving(cluster, cfg)
    if int(pg_version) >= 17:
        assert cluster.psql("SHOW summarize_wal") == "on"
    cluster.psql("CREATE DATABASE app")
    cluster.psql(CONTENT_SQL, dbname="app")
    content = cluster.psql(FINGERPRINT_SQL, dbname="app")

    # Logical backup and restore, exact content.
    logical = run_agent(cfg, "backup", "--tier", "daily").data
    shown = run_agent(cfg, "show", logical["backup_id"]).data["manifest"]
    assert shown["server_version_num"] // 10000 == int(pg_version)
    run_agent(cfg, "restore", logical["backup_id"], "--database", "app", "--target-database", "app_copy")
    assert cluster.psql(FINGERPRINT_SQL, dbname="app_copy") == content

    # Physical backup, then a workload whose state at a recorded time has one right answer.
    physical = run_agent(cfg, "backup", "--physical").data
    assert physical["backup"]["kind"] == "physical"
    if pg_version in MIXED_CLIENT:  # pg_verifybackup and pg_waldump of 17 from server_bin_dir, not 18's
        deep = run_agent(cfg, "verify", physical["backup_id"], "--deep").data["backups"][0]
        assert deep["pg_verifybackup"] == {"ran": True, "wal": "parsed", "ok": True, "detail": []}
    workload = Workload(cluster.port).start()
    try:
        workload.run_for(0.5)
        cp = workload.checkpoint()
        cluster.psql("UPDATE items SET name = 'changed after the target' WHERE id <= 10", dbname="app")
        workload.run_for(0.3)
    finally:
        workload.stop()
    # The window ends at the last segment's store time, which S3 gives to the second (LastModified):
    # store it more than a second after the target, or the agent rightly calls the target outside.
    time.sleep(1.1)
    switch_and_wait_archived(cluster)
    assert cluster.psql("SELECT failed_count FROM pg_stat_archiver") == "0"
    window = run_agent(cfg, "list").data["recoverable_window"]
    assert window["start_backup_id"] == physical["backup_id"] and window["gaps"] == []
    assert window["end_time"] > cp.time

    # Point-in-time recovery to the recorded time, by this major's own server programs.
    port = free_port()
    scratch = scratch_dir()
    data_dir = os.path.join(scratch, "data")
    try:
        doc = run_agent(cfg, "pitr", "--data-dir", data_dir, "--port", port, "--target-time", cp.time,
                        timeout=300).data
        assert doc["backup_id"] == physical["backup_id"] and doc["started"] is True
        assert ids_on(port) == cp.ids
        assert sql_on(port, "SELECT current_setting('server_version_num')::int / 10000")[0] == int(pg_version)
        assert sql_on(port, FINGERPRINT_SQL, dbname="app")[0] == content
    finally:
        stop(data_dir)
        remove_tree(scratch)


@pytest.mark.parametrize("version", MIXED_CLIENT)
def test_server_programs_of_another_major_are_refused_before_anything_is_written(
        version, pg_bins, make_cluster, workdir, write_config, run_agent):
    """postgres.server_bin_dir names the server of the cluster's own major; a wrong one is one clear line
    (exit 2) before anything is downloaded or written, and a directory without a server is a
    configuration error."""
    cluster = make_cluster(version=version, archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(workdir, cluster, physical={"checkpoint": "fast"}, postgres=_postgres_section(version, pg_bins))
    enable_archiving(cluster, cfg)
    run_agent(cfg, "backup", "--physical")  # returns once its WAL is archived

    wrong = write_config(workdir, cluster, config_name="wrong.yml", physical={"checkpoint": "fast"},
                         postgres={"bin_dir": str(pg_bins(NEWEST)), "server_bin_dir": str(pg_bins(NEWEST))})
    scratch = scratch_dir()
    data_dir = os.path.join(scratch, "data")
    try:
        res = run_agent(wrong, "pitr", "--data-dir", data_dir, "--port", free_port(), "--latest", check=False)
        assert res.rc == 2, res.describe()
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("pg-backup: error:")]
        assert len(errors) == 1 and f"holds PostgreSQL {NEWEST}, but backup" in errors[0], res.describe()
        assert f"needs PostgreSQL {version}" in errors[0]
        assert not os.path.exists(data_dir)
        deep = run_agent(wrong, "verify", "--all", "--deep", check=False)
        assert deep.rc == 2, deep.describe()
    finally:
        remove_tree(scratch)

    no_server = write_config(workdir, cluster, config_name="no-server.yml",
                             postgres={"server_bin_dir": str(workdir)})
    res = run_agent(no_server, "config", "validate", check=False)
    assert res.rc == 2, res.describe()
    assert f"postgres.server_bin_dir: {workdir} has no runnable postgres or pg_ctl" in res.stdout + res.stderr


def test_combining_and_verifying_a_17_backup_needs_17s_tools(pg_bins, make_cluster, workdir):
    """What README, PostgreSQL versions says, checked on every run: 18's pg_basebackup takes a full and
    an incremental backup of a 17 server, 18's pg_combinebackup and pg_verifybackup refuse them
    (PostgreSQL 18 changed pg_control), 17's combine and verify them."""
    cluster = make_cluster(version="17", summarize_wal=True, wal_level="replica")
    tools17, tools18 = pg_bins("17"), pg_bins("18")
    conn = ["-h", cluster.host, "-p", str(cluster.port), "-U", cluster.superuser]
    full, incr, out17, out18 = (os.path.join(str(workdir), n) for n in ("full", "incr", "out17", "out18"))
    run_pg([tools18 / "pg_basebackup", *conn, "-D", full, "-c", "fast"])
    cluster.psql("CREATE TABLE after_full AS SELECT generate_series(1, 1000) g; CHECKPOINT")
    run_pg([tools18 / "pg_basebackup", *conn, "-D", incr, "-c", "fast",
            f"--incremental={os.path.join(full, 'backup_manifest')}"])

    refused = run_pg([tools18 / "pg_combinebackup", "-o", out18, full, incr], check=False)
    assert refused.returncode != 0 and "pg_control: CRC is incorrect" in refused.stderr, refused.stderr
    refused = run_pg([tools18 / "pg_verifybackup", "--no-parse-wal", full], check=False)
    assert refused.returncode != 0 and "pg_control: CRC is incorrect" in refused.stderr, refused.stderr

    run_pg([tools17 / "pg_combinebackup", "-o", out17, full, incr])
    assert "successfully verified" in run_pg([tools17 / "pg_verifybackup", "--no-parse-wal", out17]).stdout
    assert "successfully verified" in run_pg([tools17 / "pg_verifybackup", "--no-parse-wal", incr]).stdout
