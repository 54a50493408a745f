"""Disaster-recovery drills and the WAL health checks on a real archiving cluster (PostgreSQL 15 whose
archive_command is the real ``pg-backup wal-push``) with a real S3 endpoint.

One cluster serves the whole story, in order: a physical base backup, writes after it, a drill within
its targets (RPO exact: 0), archiving stopped and more commits, a drill whose RPO misses a 1-minute
target (loss time moved 10 minutes on by the agent's test clock: deterministic), then a physical
``verify --restore``, and finally a deleted archived segment that health reports as a gap in every format.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tempfile

import pytest

from conftest import AGENT_BIN, free_port, give_to_pg_user
from pgb_health_support import check_status, clock, health_in_all_formats, wait_for

pytestmark = pytest.mark.integration


def _s3_json(s3, key):
    return json.loads(s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read())


def _keys(s3, prefix):
    keys, token = [], None
    while True:
        kw = {"Bucket": s3.bucket, "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        resp = s3.client().list_objects_v2(**kw)
        keys += [o["Key"] for o in resp.get("Contents", [])]
        token = resp.get("NextContinuationToken")
        if not token:
            return keys


@pytest.fixture
def short_scratch():
    """Scratch data directories need short paths: a Unix socket path must stay under 108 bytes."""
    path = tempfile.mkdtemp(prefix="pgbd-", dir="/tmp")
    give_to_pg_user(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_drills_physical_verify_and_wal_gap(make_cluster, s3_server, workdir, write_config, run_agent, short_scratch):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    checks = [{"name": "events", "database": "app", "sql": "SELECT count(*) FROM events", "expect": ">= 1000"},
              {"name": "marker table", "database": "app", "sql": "SELECT note FROM meta", "expect": "= 'before'"}]
    cfg = write_config(workdir, "drill", cluster=cluster, s3=s3_server, backup={"globals": False},
                       physical={"checkpoint": "fast"},
                       # No resident uploader: with archive_command emptied, nothing may reach the archive.
                       wal={"archive_timeout_seconds": 5, "uploader_idle_seconds": 0},
                       verify={"checks": checks, "scratch_dir": short_scratch, "scratch_port": free_port()},
                       drill={"port": free_port(), "rto_target_minutes": 10, "rpo_target_minutes": 1})
    cluster.psql(f"ALTER SYSTEM SET archive_command = '{AGENT_BIN} --config {cfg} --quiet wal-push %p'; "
                 "SELECT pg_reload_conf()")
    cluster.psql("CREATE DATABASE app")
    cluster.psql("CREATE TABLE events (id serial PRIMARY KEY, at timestamptz DEFAULT now());"
                 "INSERT INTO events (at) SELECT now() FROM generate_series(1, 1000);"
                 "CREATE TABLE meta (note text); INSERT INTO meta VALUES ('before')", dbname="app")
    backup = run_agent(cfg, "backup", "--physical").data
    cluster.psql("INSERT INTO events (at) SELECT now() FROM generate_series(1, 234)", dbname="app")  # after the backup

    # 0. A data directory the postgres user cannot create: one line, the usage exit code, and nothing done
    # (checked before the primary is marked, so no marker and no drill report).
    denied = run_agent(cfg, "drill", "--data-dir", "/root/pgb-drill-denied/data", check=False)
    assert denied.rc == 2, denied.describe()
    assert "cannot create /root/pgb-drill-denied" in denied.stderr and "Traceback" not in denied.stderr
    assert not [k for k in _keys(s3_server, "") if "/audit/drills/" in k]

    # 1. Archiving works: the drill recovers everything, RPO exactly 0, RTO within 10 minutes.
    first = run_agent(cfg, "drill", timeout=600)
    d = first.data
    assert d["passed"] and d["backup_id"] == backup["backup_id"], first.describe()
    assert d["rpo"]["seconds"] == 0 and d["rpo"]["met"] and d["rpo"]["method"].startswith("exact")
    assert d["rto"]["met"] and 0 < d["rto"]["seconds"] < 600
    assert set(d["rto"]["phases"]) >= {"download", "decrypt_decompress", "extract", "wal_replay", "startup", "checks"}
    assert d["primary"]["marker_written"] and d["primary"]["marker_archived"]
    assert {c["name"]: (c["status"], c["value"]) for c in d["checks"]} == {
        "events": ("passed", 1234), "marker table": ("passed", "before")}  # rows written after the backup: replayed
    assert not os.path.exists(d["data_dir"])  # scratch server stopped and removed
    prefix = f"drill/audit/drills/{d['drill_id']}/"
    assert sorted(_keys(s3_server, prefix)) == [prefix + "history.png", prefix + "report.json", prefix + "report.md"]
    assert _s3_json(s3_server, prefix + "report.json")["rpo"]["seconds"] == 0
    md = s3_server.client().get_object(Bucket=s3_server.bucket, Key=prefix + "report.md")["Body"].read().decode()
    assert md.startswith(f"# Disaster-recovery drill {d['drill_id']}: PASSED") and "history.png" in md
    png = s3_server.client().get_object(Bucket=s3_server.bucket, Key=prefix + "history.png")["Body"].read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    # 2. Archiving stops, commits go on: the next drill loses them. The loss is 10 minutes later by the
    # agent's clock, so the RPO (from the last recovered commit) misses the 1-minute target for sure.
    cluster.psql("ALTER SYSTEM SET archive_command = ''; SELECT pg_reload_conf()")
    cluster.psql("UPDATE meta SET note = 'after'; INSERT INTO events (at) SELECT now() FROM generate_series(1, 50)",
                 dbname="app")
    second = run_agent(cfg, "drill", check=False, timeout=600, env={"PG_BACKUP_TEST_NOW": clock(dt.timedelta(minutes=10))})
    assert second.rc == 4, second.describe()
    d2 = second.data
    assert d2["passed"] is False and d2["rpo"]["met"] is False and d2["rpo"]["seconds"] >= 540
    assert d2["rpo"]["lost_wal_bytes"] > 0 and d2["rpo"]["method"].startswith("upper bound")
    assert d2["rto"]["met"]  # recovery itself was fine
    assert "archiving is off" in d2["primary"]["archive_wait"]
    values = {c["name"]: c["value"] for c in d2["checks"]}
    assert values == {"events": 1234, "marker table": "before"}  # the unarchived commits are not there
    assert any("RPO" in f and "above the target of 1 min" in f for f in d2["failures"])
    assert "RPO" in second.stderr and "FAILED" in second.stderr
    report = _s3_json(s3_server, f"drill/audit/drills/{d2['drill_id']}/report.json")
    assert report["passed"] is False and report["rpo"]["met"] is False
    md2 = s3_server.client().get_object(Bucket=s3_server.bucket,
                                        Key=f"drill/audit/drills/{d2['drill_id']}/report.md")["Body"].read().decode()
    assert "MISSED" in md2 and f"| {d['drill_id']} |" in md2 and f"| {d2['drill_id']} |" in md2  # history of both

    # 3. A physical verify --restore of the same base backup (archiving still off on the primary).
    ver = run_agent(cfg, "verify", "--restore", "--kind", "physical", timeout=600)
    assert ver.data["passed"] and ver.data["kind"] == "physical"
    assert [c["status"] for c in ver.data["checks"]] == ["passed", "passed"]
    assert os.listdir(short_scratch) == []

    # 4. Archiving back on; an archived segment disappears from storage: a gap since the base backup.
    cluster.psql(f"ALTER SYSTEM SET archive_command = '{AGENT_BIN} --config {cfg} --quiet wal-push %p'; "
                 "SELECT pg_reload_conf()")
    cluster.psql("SELECT pg_switch_wal()")
    wait_for(lambda: cluster.psql("SELECT last_archived_time > now() - interval '1 minute' AND "
                                  "(last_failed_time IS NULL OR last_failed_time < last_archived_time) "
                                  "FROM pg_stat_archiver") == "t", 60, what="archiving to resume")
    assert check_status(run_agent, cfg, "wal_gaps") == "ok"
    start_wal = run_agent(cfg, "show", backup["backup_id"]).data["manifest"]["start_wal"]
    segments = sorted(k for k in _keys(s3_server, "drill/wal/")
                      if re.fullmatch(r"[0-9A-F]{24}\.zst\.gpg", k.split("/")[-1]))
    after_backup = [k for k in segments[:-1] if k.split("/")[-1][:24] > start_wal]  # not the newest one
    assert after_backup, segments
    victim = after_backup[len(after_backup) // 2]
    s3_server.client().delete_object(Bucket=s3_server.bucket, Key=victim)
    doc = health_in_all_formats(run_agent, cfg, "wal_gaps", "critical", message="gap(s) in the WAL archive")
    gap = [c for c in doc["checks"] if c["name"] == "wal_gaps"][0]
    assert victim.split("/")[-1][:24] in gap["message"]
