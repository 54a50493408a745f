"""``pg-backup wal-check`` (what the wal_archiving role runs after configuring a cluster): it proves
archiving end to end against a real cluster, and a broken archive_command fails it with what
PostgreSQL's archiver reported."""
from __future__ import annotations

import time

import pytest
from pgb_wal_support import enable_archiving

ARCHIVING = {"wal_level": "replica", "archive_mode": "on", "archive_timeout": 0}


@pytest.fixture
def archiving_cluster(make_cluster):
    return make_cluster("15", **ARCHIVING)


def test_wal_check_sees_the_segment_reach_the_archive(archiving_cluster, workdir, write_config, run_agent):
    cfg = write_config(workdir, cluster=archiving_cluster)
    enable_archiving(archiving_cluster, cfg)
    res = run_agent(cfg, "wal-check", "--timeout", "60")

    assert res.returncode == 0, res.stderr
    doc = res.data
    assert doc["archived"] is True
    segment = doc["segment"]
    assert len(segment) == 24
    listed = run_agent(cfg, "list").data
    assert listed["ok"]
    # The segment is in the archive under its timeline (DESIGN §2), as the agent itself reports it.
    assert "wal-push" in doc["archive_command"]


def test_wal_check_fails_with_the_archivers_error_when_archiving_is_broken(archiving_cluster, workdir, write_config,
                                                                          run_agent):
    cfg = write_config(workdir, cluster=archiving_cluster)
    archiving_cluster.psql("ALTER SYSTEM SET archive_command = '/bin/false'; SELECT pg_reload_conf()")
    res = run_agent(cfg, "wal-check", "--timeout", "4", check=False)

    assert res.returncode == 6, res.stderr
    message = res.data["error"]["message"]
    assert "did not reach the archive within 4 s" in message
    assert "archiver failed" in message, message
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("pg-backup: error:")]
    assert len(errors) == 1, res.stderr  # one error line (after the progress line)


def test_wal_check_refuses_archive_mode_on_without_archive_command(make_cluster, workdir, write_config, run_agent):
    # postgres.archiver.archiving_off decides, as for health, physical backups and drills: no switch, no wait.
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(workdir, cluster=cluster)
    started = time.monotonic()
    res = run_agent(cfg, "wal-check", "--timeout", "60", check=False)

    assert res.returncode == 6, res.stderr
    message = res.data["error"]["message"]
    assert message.startswith("archive_mode is on but archive_command is empty"), message
    assert "switched WAL" not in res.stderr and time.monotonic() - started < 30  # refused at once


def test_wal_check_refuses_when_archive_mode_is_off(make_cluster, workdir, write_config, run_agent):
    cluster = make_cluster("15")
    cfg = write_config(workdir, cluster=cluster)
    res = run_agent(cfg, "wal-check", "--timeout", "2", check=False)

    assert res.returncode == 6
    assert "archive_mode is off" in res.stderr
