"""Every health condition triggered for real (PostgreSQL, moto_server, the agent's test clock) and
seen in all four formats: text, JSON, Nagios (exit code and perfdata) and Prometheus (promtool)."""
from __future__ import annotations

import datetime as dt

import pytest

from pgb_health_support import check_status, clock, health_in_all_formats, prom_value, wait_for

pytestmark = pytest.mark.integration


def _random_table(cluster, db, rows):
    cluster.psql(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}")
    cluster.psql("CREATE TABLE t (id int PRIMARY KEY, payload text);"
                 f"INSERT INTO t SELECT g, md5(random()::text) || md5(random()::text) FROM generate_series(1, {rows}) g",
                 dbname=db)


def test_overdue_tiers_by_the_test_clock(pg15, workdir, write_config, run_agent):
    pg15.psql("DROP DATABASE IF EXISTS h_fresh; CREATE DATABASE h_fresh")
    cfg = write_config(workdir, "fresh", cluster=pg15, backup={"globals": False})
    # Backups dated in the past by the agent's test clock (the files are not touched).
    run_agent(cfg, "backup", "--tier", "daily", "--database", "h_fresh",
              env={"PG_BACKUP_TEST_NOW": clock(-dt.timedelta(hours=30))})
    run_agent(cfg, "backup", "--tier", "weekly", "--database", "h_fresh",
              env={"PG_BACKUP_TEST_NOW": clock(-dt.timedelta(days=17))})
    doc = health_in_all_formats(run_agent, cfg, "freshness_daily", "warning", message="limit 26 h")
    assert 30 <= [c for c in doc["checks"] if c["name"] == "freshness_daily"][0]["value"] < 31
    health_in_all_formats(run_agent, cfg, "freshness_weekly", "critical", message="limit 192 h")  # > 2 x 8 days
    health_in_all_formats(run_agent, cfg, "freshness_monthly", "warning", message="no monthly backup")
    # A fresh daily backup clears the daily condition.
    run_agent(cfg, "backup", "--tier", "daily", "--database", "h_fresh")
    assert check_status(run_agent, cfg, "freshness_daily") == "ok"


def test_a_database_that_shrank_by_60_percent(pg15, workdir, write_config, run_agent):
    _random_table(pg15, "h_shrink", 20000)
    pg15.psql("DROP DATABASE IF EXISTS h_steady; CREATE DATABASE h_steady")
    cfg = write_config(workdir, "shrink", cluster=pg15, backup={"globals": False})
    for days in (4, 3, 2):
        run_agent(cfg, "backup", "--tier", "daily", "--database", "h_shrink", "--database", "h_steady",
                  env={"PG_BACKUP_TEST_NOW": clock(-dt.timedelta(days=days))})
    pg15.psql("DELETE FROM t WHERE id % 5 IN (0, 1, 2)", dbname="h_shrink")  # 60 % of the rows
    run_agent(cfg, "backup", "--tier", "daily", "--database", "h_shrink", "--database", "h_steady")
    doc = health_in_all_formats(run_agent, cfg, "size_daily_db_h_shrink", "warning", message="database 'h_shrink'")
    check = [c for c in doc["checks"] if c["name"] == "size_daily_db_h_shrink"][0]
    assert -64 < check["value"] < -55 and check["labels"] == {"tier": "daily", "database": "h_shrink"}
    assert check_status(run_agent, cfg, "size_daily_db_h_steady") == "ok"
    prom = run_agent(cfg, "health", "--format", "prometheus", json=False).stdout
    assert prom_value(prom, "pg_backup_last_backup_database_stored_bytes", database="h_shrink", tier="daily") > 0


def test_broken_archive_command_then_recovered(make_cluster, workdir, write_config, run_agent):
    cluster = make_cluster("15", archive_mode="on", archive_command="/bin/false", wal_level="replica")
    cfg = write_config(workdir, "arch", cluster=cluster, backup={"globals": False})
    run_agent(cfg, "backup", "--tier", "daily", "--database", "postgres")
    cluster.psql("CREATE TABLE w AS SELECT generate_series(1, 1000) AS x; SELECT pg_switch_wal()")
    wait_for(lambda: int(cluster.psql("SELECT failed_count FROM pg_stat_archiver")) > 0, 60,
             what="pg_stat_archiver.failed_count > 0")
    doc = health_in_all_formats(run_agent, cfg, "wal_archiver", "critical", message="archive_command is failing")
    prom = run_agent(cfg, "health", "--format", "prometheus", json=False, check=False).stdout
    assert prom_value(prom, "pg_backup_archiver_failed_total") >= 1
    assert doc["status"] == "critical"

    # More failures after that health run, then archiving recovers: a warning once, then ok.
    seen = int(cluster.psql("SELECT failed_count FROM pg_stat_archiver"))  # >= what health remembered
    cluster.psql("INSERT INTO w VALUES (1); SELECT pg_switch_wal()")  # a new .ready wakes the archiver
    wait_for(lambda: int(cluster.psql("SELECT failed_count FROM pg_stat_archiver")) > seen, 90,
             what="another archive failure")
    cluster.psql("ALTER SYSTEM SET archive_command = '/bin/true'; SELECT pg_reload_conf()")
    wait_for(lambda: cluster.psql("SELECT last_archived_time > last_failed_time FROM pg_stat_archiver") == "t", 60,
             what="a successful archive after the failures")
    failed_now = int(cluster.psql("SELECT failed_count FROM pg_stat_archiver"))
    doc = run_agent(cfg, "health").data
    arch = [c for c in doc["checks"] if c["name"] == "wal_archiver"][0]
    assert arch["status"] == "warning" and "succeeded since" in arch["message"], arch
    assert arch["value"] == failed_now
    assert check_status(run_agent, cfg, "wal_archiver") == "ok"


def test_archive_mode_on_without_archive_command(make_cluster, workdir, write_config, run_agent):
    """archive_mode = on with an empty archive_command archives nothing (postgres.archiver.archiving_off),
    although pg_stat_archiver shows no failure: critical in every format, like archive_mode = off."""
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(workdir, "nocmd", cluster=cluster, backup={"globals": False})
    run_agent(cfg, "backup", "--tier", "daily", "--database", "postgres")
    assert cluster.psql("SELECT failed_count FROM pg_stat_archiver") == "0"
    message = "archive_mode is on but archive_command is empty: no WAL is archived"
    doc = health_in_all_formats(run_agent, cfg, "wal_archiver", "critical", message=message)
    assert doc["status"] == "critical"
    nagios = run_agent(cfg, "health", "--format", "nagios", json=False, check=False)
    assert nagios.rc == 2 and message in nagios.stdout.splitlines()[0], nagios.describe()
    prom = run_agent(cfg, "health", "--format", "prometheus", json=False, check=False).stdout
    assert prom_value(prom, "pg_backup_check_status", check="wal_archiver") == 2
    assert prom_value(prom, "pg_backup_archiver_failed_total") == 0


def test_unreachable_endpoint(pg15, s3_server, workdir, write_config, run_agent):
    cfg = write_config(workdir, "down", cluster=pg15, s3=s3_server,
                       s3_overrides={"endpoint_url": "http://127.0.0.1:9", "max_attempts": 1, "connect_timeout": 1})
    health_in_all_formats(run_agent, cfg, "storage", "critical", message="storage unreachable")
    prom = run_agent(cfg, "health", "--format", "prometheus", json=False, check=False).stdout
    assert prom_value(prom, "pg_backup_storage_up") == 0


def test_bucket_in_another_region(pg15, s3_server, workdir, write_config, run_agent):
    elsewhere = f"{s3_server.bucket}-eu"
    s3_server.client().create_bucket(Bucket=elsewhere, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    try:
        cfg = write_config(workdir, "region", cluster=pg15, s3=s3_server, s3_overrides={"bucket": elsewhere})
        assert "region: us-east-1" in open(cfg).read()
        health_in_all_formats(run_agent, cfg, "storage", "critical", message="bucket is in region eu-west-1")
    finally:
        s3_server.client().delete_bucket(Bucket=elsewhere)
    right = write_config(workdir, "region", cluster=pg15, s3=s3_server, config_name="right.yml")
    assert check_status(run_agent, right, "storage") == "ok"


def test_restore_verification_age(pg15, workdir, write_config, run_agent):
    pg15.psql("DROP DATABASE IF EXISTS h_verify; CREATE DATABASE h_verify")
    cfg = write_config(workdir, "hv", cluster=pg15, backup={"globals": False},
                       verify={"checks": [{"name": "one", "database": "h_verify", "sql": "SELECT 1", "expect": "= 1"}]})
    run_agent(cfg, "backup", "--tier", "daily", "--database", "h_verify")
    health_in_all_formats(run_agent, cfg, "restore_verification", "warning",
                          message="no successful restore verification recorded")
    # A verification 40 days ago (test clock) is too old (35 days) ...
    run_agent(cfg, "verify", "--restore", env={"PG_BACKUP_TEST_NOW": clock(-dt.timedelta(days=40))})
    health_in_all_formats(run_agent, cfg, "restore_verification", "warning", message="40.0 days ago")
    # ... one now is fine ...
    run_agent(cfg, "verify", "--restore")
    doc = health_in_all_formats(run_agent, cfg, "restore_verification", "ok")
    prom = run_agent(cfg, "health", "--format", "prometheus", json=False, check=False).stdout
    assert prom_value(prom, "pg_backup_last_restore_verification_success") == 1
    # ... and a failed one after it is critical.
    bad = write_config(workdir, "hv", cluster=pg15, config_name="bad.yml",
                       verify={"checks": [{"name": "one", "database": "h_verify", "sql": "SELECT 1", "expect": "= 2"}]})
    assert run_agent(bad, "verify", "--restore", check=False).rc == 4
    health_in_all_formats(run_agent, cfg, "restore_verification", "critical", message="FAILED")
    assert doc["cluster"] == "hv"
