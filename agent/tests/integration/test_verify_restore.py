"""``verify --restore`` of logical backups on a real PostgreSQL cluster with a real S3 endpoint:
restores into scratch databases, compares row counts, runs the configured checks, cleans up and
records the outcome in the repository; a check that does not hold is a FAILED verification (exit 4)."""
from __future__ import annotations

import json
import os

import pytest

pytestmark = pytest.mark.integration

CHECKS = [
    {"name": "events exist", "database": "vr_app", "sql": "SELECT count(*) FROM domain_events", "expect": "> 0"},
    {"name": "status", "database": "vr_app", "sql": "SELECT status FROM meta", "expect": "= 'ready'"},
    {"name": "other db", "database": "not_in_backup", "sql": "SELECT 1", "expect": "= 1"},
]


def _populate(cluster, db="vr_app"):
    cluster.psql(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}")
    cluster.psql("CREATE TABLE domain_events (id int PRIMARY KEY, payload text);"
                 "INSERT INTO domain_events SELECT g, md5(g::text) FROM generate_series(1, 3000) g;"
                 "CREATE TABLE meta (status text); INSERT INTO meta VALUES ('ready');"
                 "CREATE TABLE \"Empty Table\" (x int)", dbname=db)


def _scratch_databases(cluster):
    out = cluster.psql("SELECT datname FROM pg_database WHERE datname LIKE 'pgb_verify_%'")
    return [d for d in out.split("\n") if d]


def _keys(s3, prefix=""):
    resp = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix)
    return [o["Key"] for o in resp.get("Contents", [])]


def test_verify_restore_passes_then_a_check_that_does_not_hold_fails(pg15, s3_server, workdir, write_config,
                                                                      run_agent):
    _populate(pg15)
    cfg = write_config(workdir, "vr", cluster=pg15, s3=s3_server, backup={"row_counts": True, "globals": False},
                       verify={"checks": CHECKS})
    backup_id = run_agent(cfg, "backup", "--tier", "daily", "--database", "vr_app").data["backup_id"]
    before = pg15.psql("SELECT count(*) FROM domain_events", dbname="vr_app")

    ok = run_agent(cfg, "verify", "--restore")  # no id: the newest backup
    doc = ok.data
    assert doc["ok"] is True and doc["passed"] is True and doc["backup_id"] == backup_id
    [db] = doc["databases"]
    assert db["name"] == "vr_app" and db["restored"] and db["scratch_database"].startswith("pgb_verify_")
    assert db["row_counts"]["recorded"] and db["row_counts"]["tables"] == 3 and db["row_counts"]["mismatches"] == []
    status = {c["name"]: c["status"] for c in doc["checks"]}
    assert status == {"events exist": "passed", "status": "passed", "other db": "skipped"}
    assert [c["value"] for c in doc["checks"][:2]] == [3000, "ready"]
    assert _scratch_databases(pg15) == []                       # cleaned up
    assert pg15.psql("SELECT count(*) FROM domain_events", dbname="vr_app") == before  # original untouched
    assert doc["record"] in _keys(s3_server, "vr/audit/verifications/") and doc["record"].endswith("-passed.json")
    stored = json.loads(s3_server.client().get_object(Bucket=s3_server.bucket, Key=doc["record"])["Body"].read())
    assert stored["passed"] is True and stored["backup_id"] == backup_id

    # The same backup with a check that does not hold: FAILED, exit 4, never "passed".
    failing = CHECKS[:1] + [{"name": "no events", "database": "vr_app",
                             "sql": "SELECT count(*) FROM domain_events", "expect": "= 0"}]
    bad_cfg = write_config(workdir, "vr", cluster=pg15, s3=s3_server, config_name="bad.yml",
                           backup={"row_counts": True}, verify={"checks": failing})
    bad = run_agent(bad_cfg, "verify", "--restore", backup_id, check=False)
    assert bad.rc == 4, bad.describe()
    assert bad.data["ok"] is False and bad.data["passed"] is False and bad.data["result"] == "failed"
    assert {c["name"]: c["status"] for c in bad.data["checks"]} == {"events exist": "passed", "no events": "failed"}
    assert "FAILED" in bad.stderr and "'no events'" in bad.stderr and "got 3000" in bad.stderr
    assert bad.data["error"]["exit_code"] == 4
    assert _scratch_databases(pg15) == []
    assert bad.data["record"].endswith("-failed.json")

    # The text form says FAILED too; keep_failed leaves the scratch database for inspection.
    keep_cfg = write_config(workdir, "vr", cluster=pg15, s3=s3_server, config_name="keep.yml",
                            verify={"checks": failing, "keep_failed": True})
    text = run_agent(keep_cfg, "verify", "--restore", "--tier", "daily", "--random", "--kind", "logical",
                     json=False, check=False)
    assert text.rc == 4 and "FAILED" in text.stdout and "kept for inspection" in text.stdout
    kept = _scratch_databases(pg15)
    assert len(kept) == 1 and pg15.psql("SELECT count(*) FROM domain_events", dbname=kept[0]) == "3000"
    pg15.psql(f'DROP DATABASE "{kept[0]}"')

    # Both outcomes are in the local audit log.
    audit = [json.loads(line) for line in open(os.path.join(workdir, "state", "audit.jsonl"))]
    verifies = [a for a in audit if a["operation"] == "verify"]
    assert [a["result"] for a in verifies] == ["success", "failure", "failure"]
    assert all(a["backup_id"] == backup_id for a in verifies)


def test_row_count_mismatch_and_unrecorded_counts(pg15, workdir, write_config, run_agent):
    _populate(pg15, "vr_rows")
    cfg = write_config(workdir, "rows", cluster=pg15, backup={"row_counts": True, "globals": False})
    backup_id = run_agent(cfg, "backup", "--tier", "weekly", "--database", "vr_rows").data["backup_id"]
    # A manifest that recorded one row more than the dump holds (as if rows went missing on the way).
    path = os.path.join(workdir, "repo", "rows", "backups", backup_id, "manifest.json")
    manifest = json.load(open(path))
    manifest["databases"][0]["row_counts"]["public.domain_events"] += 1
    with open(path, "w") as fh:
        json.dump(manifest, fh)
    res = run_agent(cfg, "verify", "--restore", backup_id, check=False)
    assert res.rc == 4
    assert res.data["databases"][0]["row_counts"]["mismatches"] == [
        {"table": "public.domain_events", "recorded": 3001, "restored": 3000}]
    assert "public.domain_events has 3000 rows restored, 3001 recorded" in res.stderr

    # Without recorded counts the report says so (and passes on checks alone: none configured here).
    plain = write_config(workdir, "plain", cluster=pg15, config_name="plain.yml", backup={"globals": False})
    run_agent(plain, "backup", "--tier", "daily", "--database", "vr_rows")
    res = run_agent(plain, "verify", "--restore", "--tier", "daily")
    assert res.data["passed"] is True
    assert res.data["databases"][0]["row_counts"]["recorded"] is False
    assert any("row counts were not recorded" in n for n in res.data["notes"])

    # Usage errors are one line with exit 2; nothing to pick is exit 7.
    assert run_agent(plain, "verify", "--restore", backup_id, "--random", check=False).rc == 2
    assert run_agent(plain, "verify", "--restore", "--tier", "monthly", check=False).rc == 7
    assert _scratch_databases(pg15) == []


def test_invalid_expectation_is_a_config_error(pg15, workdir, write_config, run_agent):
    cfg = write_config(workdir, "exp", cluster=pg15, verify={"checks": [
        {"name": "a", "database": "postgres", "sql": "SELECT 1", "expect": "about 3"}]})
    res = run_agent(cfg, "config", "validate", check=False)
    assert res.rc == 2
    assert any(p.startswith("verify.checks[0].expect:") for p in res.data["error"]["problems"])
