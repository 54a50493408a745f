"""``compliance report`` on real PostgreSQL 15 and a real S3 endpoint (moto_server) whose bucket has
Object Lock: two logical backups (a monthly one from 40 days ago, a daily one now), an erasure recorded
between them, a re-hash ``verify``, a ``verify --restore`` and a drill report. The JSON is checked field by
field against the repository (backups per tier, expiry dates from the retention planner itself, Object
Lock dates read from the bucket); the Markdown is read; the PDF is rendered to PNG (pdftoppm) and read
back (pdftotext). Without matplotlib ``--format pdf`` exits 2 with one line."""
from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import give_to_pg_user

from pg_backup import retention
from pg_backup.config import RetentionSettings
from pg_backup.manifest import iso, parse_iso

pytestmark = pytest.mark.integration

RETENTION = {"daily_days": 7, "weekly_weeks": 4, "monthly_months": 2, "wal_hours": 24}


def _locked_bucket(s3):
    name = f"pgb-lock-{secrets.token_hex(4)}"
    client = s3.client()
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    return name


def _drill_report(s3, bucket, cluster, when, rto, rpo, passed=True):
    drill_id = f"{when:%Y%m%dT%H%M%SZ}"
    doc = {"drill_id": drill_id, "cluster": cluster, "started_at": iso(when), "passed": passed,
           "backup_id": "20261101T000000Z-physical-daily", "targets": {"rto_minutes": 30, "rpo_minutes": 5},
           "rto": {"seconds": rto, "met": rto <= 1800 and passed}, "rpo": {"seconds": rpo, "met": rpo <= 300}}
    s3.client().put_object(Bucket=bucket, Key=f"{cluster}/audit/drills/{drill_id}/report.json",
                           Body=json.dumps(doc).encode())
    return drill_id


@pytest.fixture
def reported(pg15, s3_server, workdir, write_config, run_agent):
    pg15.psql("DROP DATABASE IF EXISTS crm; CREATE DATABASE crm")
    pg15.psql("CREATE TABLE members (id int PRIMARY KEY, email text);"
              "INSERT INTO members SELECT g, 'm' || g || '@example.org' FROM generate_series(1, 50) g", dbname="crm")
    bucket = _locked_bucket(s3_server)
    cfg = write_config(workdir, "ledger", cluster=pg15, s3=s3_server, s3_overrides={"bucket": bucket},
                       backup={"globals": False, "row_counts": True}, retention=RETENTION,
                       drill={"rto_target_minutes": 30, "rpo_target_minutes": 5},
                       verify={"scratch_dir": str(workdir / "scratch")})
    month_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=40)
    old = run_agent(cfg, "backup", "--tier", "monthly", "--database", "crm",
                    env={"PG_BACKUP_TEST_NOW": month_ago.strftime("%Y-%m-%dT%H:%M:%SZ")}).data
    erased = run_agent(cfg, "erasure", "add", "--database", "crm", "--sql", "DELETE FROM members WHERE id = 7",
                       "--request-id", "GDPR-7").data["erasure_id"]
    new = run_agent(cfg, "backup", "--tier", "daily", "--database", "crm").data
    run_agent(cfg, "verify", old["backup_id"])
    run_agent(cfg, "verify", "--restore", new["backup_id"], timeout=300)
    now = dt.datetime.now(dt.timezone.utc)
    drills = [_drill_report(s3_server, bucket, "ledger", now - dt.timedelta(days=d), rto, rpo)
              for d, rto, rpo in ((20, 1500, 120), (9, 2100, 200), (2, 1200, 420))]
    out = workdir / "reports"
    out.mkdir()
    give_to_pg_user(out, 0o700)
    as_json = run_agent(cfg, "compliance", "report", "--format", "json", "--output", out / "report.json").data
    return {"cfg": cfg, "bucket": bucket, "old": old, "new": new, "erasure_id": erased, "drills": drills,
            "out": out, "envelope": as_json, "doc": json.loads((out / "report.json").read_text()), "s3": s3_server}


def _expiry_by_planner(manifests, backup_id, expires_at):
    """The retention planner itself keeps the backup one second before ``expires_at`` and deletes it then
    (with newer backups of every tier, as while the schedules run)."""
    refs = [retention.BackupRef(m["backup_id"], m["kind"], m["tier"], parse_iso(m["started_at"])) for m in manifests]
    later = parse_iso(max(m["started_at"] for m in manifests)) + dt.timedelta(seconds=1)
    refs += [retention.BackupRef(f"next-{t}", "logical", t, later) for t in ("daily", "monthly")]
    settings = RetentionSettings(**RETENTION)
    assert backup_id in retention.plan(refs, settings, expires_at - dt.timedelta(seconds=1)).keep
    assert backup_id in retention.plan(refs, settings, expires_at).delete


def test_compliance_report_json_md_and_pdf(reported, run_agent):
    doc, old, new = reported["doc"], reported["old"], reported["new"]
    assert reported["envelope"]["command"] == "compliance report" and reported["envelope"]["report"] == doc
    assert doc["schema_version"] == 1 and doc["report"] == "compliance" and doc["cluster"] == "ledger"
    assert doc["period"]["label"].startswith("last 30 days to ")

    # -- backups per tier, as the repository holds them ----------------------------------------------
    listed = run_agent(reported["cfg"], "list").data["backups"]
    assert [t for t in doc["tiers"]] == ["daily", "weekly", "monthly"]
    assert {t: v["count"] for t, v in doc["tiers"].items()} == {"daily": 1, "weekly": 0, "monthly": 1}
    assert doc["backups_total"] == len(listed) == 2
    [monthly], [daily] = doc["tiers"]["monthly"]["backups"], doc["tiers"]["daily"]["backups"]
    client, bucket = reported["s3"].client(), reported["bucket"]
    for entry, made in ((monthly, old), (daily, new)):
        manifest = run_agent(reported["cfg"], "show", made["backup_id"]).data["manifest"]
        assert entry["backup_id"] == made["backup_id"] and entry["kind"] == "logical"
        assert entry["started_at"] == manifest["started_at"] and entry["finished_at"] == manifest["finished_at"]
        assert entry["size_bytes"] == sum(o["size"] for o in manifest["objects"]) > 0
        assert entry["encryption"]["key_fingerprint"] == manifest["encryption"]["fingerprint"]
        assert entry["databases"] == ["crm"] and entry["storage_class"] == "STANDARD"
        # Object Lock: the latest retain-until date of the backup's objects, as the bucket reports it.
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"ledger/backups/{made['backup_id']}/")
                ["Contents"]]
        until = max(client.head_object(Bucket=bucket, Key=k)["ObjectLockRetainUntilDate"] for k in keys)
        assert entry["object_lock"] == {"mode": "GOVERNANCE", "retain_until": iso(until),
                                        "objects_locked": len(keys), "objects": len(keys)}
        _expiry_by_planner(listed, made["backup_id"], parse_iso(entry["expires_at"]))
        assert entry["deletable_from"] == max(entry["expires_at"], iso(until))
    assert monthly["checksum"]["state"] == "passed" and monthly["checksum"]["by"] == "verify"
    assert daily["checksum"]["state"] == "passed" and daily["checksum"]["by"] == "verify --restore"
    assert daily["expires_at"] == iso((parse_iso(daily["started_at"]) + dt.timedelta(days=7)).replace(microsecond=0)
                                      + dt.timedelta(seconds=1))
    assert daily["erasure_through"] == reported["erasure_id"] and monthly["erasure_through"] is None
    assert doc["object_lock"] == {"enabled": True, "mode": "GOVERNANCE", "days": 1, "years": None}
    assert doc["locality"]["configured_region"] == doc["locality"]["actual_region"] == "us-east-1"
    assert doc["locality"]["matches"] is True and doc["locality"]["bucket"] == bucket

    # -- recovery evidence --------------------------------------------------------------------------
    assert doc["recoverable"]["databases"] == [{"database": "crm", "oldest_point": monthly["started_at"],
                                                "backup_id": old["backup_id"], "kind": "logical", "logical_backups": 2}]
    last = doc["verification"]["last"]
    assert last["backup_id"] == new["backup_id"] and last["passed"] is True and last["within_rto_target"] is True
    assert doc["verification"]["in_period"] == doc["verification"]["passed_in_period"] == 1
    drill = doc["drill"]
    assert drill["count"] == 3 and [h["drill_id"] for h in drill["history"]] == reported["drills"]
    assert drill["last"]["rto_seconds"] == 1200 and drill["last"]["rpo_met"] is False
    assert drill["targets"] == {"rto_minutes": 30, "rpo_minutes": 5}

    # -- erasure register: complete when the monthly backup taken before it is gone ------------------
    er = doc["erasures"]
    assert er["count"] == 1
    assert er["records"][0]["erasure_id"] == reported["erasure_id"]
    assert er["records"][0]["backups_holding_data"] == [old["backup_id"]]
    assert er["records"][0]["complete_at"] == monthly["deletable_from"] == er["complete_everywhere_at"]
    assert er["records"][0]["complete"] is False

    # -- the audit trail of the period: who backed up, verified and erased ---------------------------
    # (the monthly backup's record is dated 40 days ago, before the default period of 30 days)
    ops = [(a["operation"], a["result"]) for a in doc["audit"]["records"]]
    assert ops == [("erasure-add", "success"), ("backup", "success"), ("verify", "success"), ("verify", "success")]
    assert all(a["who"].startswith("postgres@") for a in doc["audit"]["records"])
    assert doc["audit"]["records"][0]["erasure_id"] == reported["erasure_id"]
    assert [a["backup_id"] for a in doc["audit"]["records"][1:]] == [new["backup_id"], old["backup_id"], new["backup_id"]]
    assert doc["audit"]["by_operation"] == {"erasure-add": 1, "backup": 1, "verify": 2}
    wider = run_agent(reported["cfg"], "compliance", "report", "--period", "90d").data["report"]["audit"]["records"]
    assert [(a["operation"], a["backup_id"]) for a in wider][0] == ("backup", old["backup_id"])

    # -- Markdown ----------------------------------------------------------------------------------
    md = run_agent(reported["cfg"], "compliance", "report", json=False).stdout
    assert md.startswith("# Backup compliance report: cluster `ledger`\n")
    for line in (f"| {old['backup_id']} | logical | ", f"| {reported['erasure_id']} | ", "## Monthly backups (1, ",
                 "| data locality | bucket " + bucket, "| crm | ", "GOVERNANCE until "):
        assert line in md, line

    # -- PDF, rendered and read back ---------------------------------------------------------------
    pdf = reported["out"] / "report.pdf"
    run_agent(reported["cfg"], "compliance", "report", "--format", "pdf", "--output", pdf, "--period", "90d")
    _check_pdf(pdf, reported["out"], ["ledger", old["backup_id"], "last 90 days to "])


def _check_pdf(pdf: Path, directory: Path, needles):
    from PIL import Image

    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    pages = text.split("\f")[:-1]
    total = len(pages)
    assert total >= 4                         # summary, tables, the chart (a page of its own), tables
    for n, page in enumerate(pages, 1):
        assert f"page {n} of {total}" in page and "cluster ledger" in page and "period last 90 days" in page
        assert "generated " in page
    for needle in needles:
        assert needle in text, needle
    assert "Disaster-recovery drills: RTO and RPO against the targets" in text
    png = directory / "png"
    png.mkdir()
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(png / "p")], check=True)
    images = sorted(png.glob("p-*.png"))
    assert len(images) == total
    for image in images:
        gray = Image.open(image).convert("L")
        dark = sum(gray.histogram()[:128])
        assert dark > 0.002 * gray.width * gray.height, f"{image.name} looks blank"
    # The chart page carries the chart: far more ink than a page of text.
    chart = [i for i, p in enumerate(pages) if "Disaster-recovery drills: RTO" in p][0]
    colors = Image.open(images[chart]).convert("RGB").getcolors(1 << 20)
    assert len(colors) > 50
    shutil.rmtree(png)


def test_report_errors_are_one_line_and_exit_2(workdir, write_config, run_agent):
    cfg = write_config(workdir, "ledger")
    fake = workdir / "nomatplotlib" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    for path in (fake.parent, fake, fake / "__init__.py"):
        give_to_pg_user(path, 0o755)
    r = run_agent(cfg, "compliance", "report", "--format", "pdf", "--output", workdir / "r.pdf", check=False,
                  json=False, env={"PYTHONPATH": str(fake.parent)})
    assert r.rc == 2 and r.stderr.strip().count("\n") == 0, r.describe()
    assert "install pg-backup[charts]" in r.stderr and not (workdir / "r.pdf").exists()
    for args, message in ((["--period", "2026-13"], "month 13 does not exist"),
                          (["--period", "last-week"], "is not a year"),
                          (["--since", "2026-12-01", "--until", "2026-11-01"], "is not before"),
                          (["--period", "2026", "--since", "2026-01-01"], "either --period or --since"),
                          (["--format", "pdf"], "add --output FILE")):
        r = run_agent(cfg, "compliance", "report", *args, check=False, json=False)
        assert r.rc == 2 and message in r.stderr and r.stderr.count("\n") == 1, r.describe()
