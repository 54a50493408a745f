"""The compliance report's pure parts: the reporting period, expiry dates asked of the retention planner,
the erasure completion dates, and the Markdown rendering (a snapshot: a change of layout is deliberate)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from compliance_sample import sample_report
from pg_backup import retention
from pg_backup.compliance.expiry import expiries, tier_limit_passes
from pg_backup.compliance.markdown import render_markdown
from pg_backup.compliance.period import parse_period
from pg_backup.config import RetentionSettings
from pg_backup.errors import UsageError
from pg_backup.manifest import iso

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 12, 4, 10, 30, tzinfo=UTC)
SNAPSHOT = Path(__file__).parent / "snapshots" / "compliance_report.md"


@pytest.mark.parametrize("period, since, until, label", [
    ("2026-11", dt.datetime(2026, 11, 1, tzinfo=UTC), dt.datetime(2026, 12, 1, tzinfo=UTC), "2026-11"),
    ("2026-12", dt.datetime(2026, 12, 1, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC), "2026-12"),
    ("2026-Q4", dt.datetime(2026, 10, 1, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC), "2026-Q4"),
    ("2025", dt.datetime(2025, 1, 1, tzinfo=UTC), dt.datetime(2026, 1, 1, tzinfo=UTC), "2025"),
    ("90d", NOW - dt.timedelta(days=90), NOW, "last 90 days to 2026-12-04"),
    (None, NOW - dt.timedelta(days=30), NOW, "last 30 days to 2026-12-04"),
])
def test_periods(period, since, until, label):
    chosen = parse_period(period, None, None, NOW)
    assert (chosen.since, chosen.until, chosen.label) == (since, until, label)


def test_since_until_dates_include_the_last_day():
    chosen = parse_period(None, "2026-11-01", "2026-11-30", NOW)
    assert chosen.since == dt.datetime(2026, 11, 1, tzinfo=UTC) and chosen.until == dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert chosen.label == "2026-11-01 .. 2026-11-30"
    assert parse_period(None, "2026-11-01T12:00:00+01:00", None, NOW).since == dt.datetime(2026, 11, 1, 11, tzinfo=UTC)


@pytest.mark.parametrize("period, since, until, message", [
    ("2026-13", None, None, "month 13 does not exist"), ("0d", None, None, "is not a year"),
    (None, "2026-11-01T10:00:00", None, "has no time zone"), (None, None, "2026-11-01", "--until needs --since"),
    (None, "yesterday", None, "is not a date"), ("2026", "2026-01-01", None, "not both"),
])
def test_bad_periods(period, since, until, message):
    with pytest.raises(UsageError, match=message):
        parse_period(period, since, until, NOW)


SETTINGS = RetentionSettings(daily_days=7, weekly_weeks=4, monthly_months=2, wal_hours=24)


def test_tier_limit_is_the_planner_boundary_to_the_second():
    started = dt.datetime(2026, 10, 31, 2, 0, 0, 250000, tzinfo=UTC)
    limit = tier_limit_passes(SETTINGS, "monthly", started)
    assert limit == dt.datetime(2026, 12, 31, 2, 0, 1, tzinfo=UTC)         # two calendar months, rounded up
    assert retention.cutoffs(SETTINGS, limit)[("monthly")] > started
    assert retention.cutoffs(SETTINGS, limit - dt.timedelta(seconds=1))["monthly"] <= started


def _ref(backup_id, kind, tier, days_ago, needs=()):
    return retention.BackupRef(backup_id, kind, tier, NOW - dt.timedelta(days=days_ago), needs)


def test_expiries_follow_the_planner():
    refs = [_ref("full", "physical", "daily", 3), _ref("incr", "physical", "weekly", 2, ("full",)),
            _ref("old", "logical", "daily", 9), _ref("fresh", "logical", "daily", 1)]
    got = expiries(refs, SETTINGS, NOW)
    assert got["old"].expires_at == NOW and got["old"].kept_now is None            # prune deletes it today
    # A tier keeps a backup up to and including the instant its limit is reached: gone one second later.
    assert got["fresh"].expires_at == NOW + dt.timedelta(days=6, seconds=1)
    # The full backup is kept as long as the weekly incremental that needs it (its chain), not its 7 days.
    assert got["incr"].expires_at == NOW + dt.timedelta(days=26, seconds=1) == got["full"].expires_at
    assert got["full"].basis == "needed by incr (its incremental chain)"
    for backup_id, e in got.items():
        if e.expires_at > NOW:
            assert backup_id in retention.plan(refs, SETTINGS, e.expires_at - dt.timedelta(seconds=1)).keep


def test_markdown_snapshot():
    assert render_markdown(sample_report()) == SNAPSHOT.read_text(), \
        "the Markdown layout changed: review it and update agent/tests/unit/snapshots/compliance_report.md"


def test_pdf_without_matplotlib_is_a_clear_error(monkeypatch):
    import sys

    from pg_backup.charts import ChartUnavailable
    from pg_backup.compliance.pdf import render_pdf

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ChartUnavailable, match=r"pg-backup\[charts\]"):
        render_pdf(sample_report())


def test_pdf_long_tables_continue_on_numbered_pages(tmp_path):
    import subprocess

    from pg_backup.compliance.pdf import render_pdf

    doc = sample_report()
    row = doc["audit"]["records"][1]
    doc["audit"]["records"] = [dict(row, started_at=f"2026-11-{1 + i // 8:02d}T{i % 8:02d}:00:00.000000Z")
                               for i in range(120)]
    doc["audit"]["count"] = 120
    pdf = tmp_path / "long.pdf"
    pdf.write_bytes(render_pdf(doc))
    pages = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True,
                           check=True).stdout.split("\f")[:-1]
    assert len(pages) >= 5
    for n, page in enumerate(pages, 1):
        assert f"page {n} of {len(pages)}" in page and "cluster ledger · period 2026-11" in page
    text = "\n".join(pages)
    shown = [line for line in text.splitlines() if "20261130T020000Z-logical-daily" in line and "backup " in line]
    assert len(shown) == 120                     # every audit row, none lost at a page break
    assert "Audit trail of the period (120 operation(s)) (continued 2/" in text


def _manifest(backup_id, kind, started, databases=(), **extra):
    from types import SimpleNamespace

    return SimpleNamespace(backup_id=backup_id, kind=kind, started=started, started_at=iso(started),
                           databases=[SimpleNamespace(name=d) for d in databases], extra=dict(extra))


def test_oldest_recoverable_point_is_the_older_of_logical_backups_and_the_pitr_window():
    from pg_backup.compliance.backups import recoverable_section

    manifests = [_manifest("l1", "logical", NOW - dt.timedelta(days=20), ["crm"]),
                 _manifest("l2", "logical", NOW - dt.timedelta(days=2), ["crm", "hr"]),
                 _manifest("p1", "physical", NOW - dt.timedelta(days=5))]
    window = {"start_time": iso(NOW - dt.timedelta(days=5)), "end_time": iso(NOW), "start_backup_id": "p1"}
    rows = {r["database"]: r for r in recoverable_section(manifests, window)["databases"]}
    assert rows["crm"]["oldest_point"] == iso(NOW - dt.timedelta(days=20)) and rows["crm"]["kind"] == "logical"
    assert rows["crm"]["logical_backups"] == 2
    assert rows["hr"]["oldest_point"] == window["start_time"] and rows["hr"]["backup_id"] == "p1"
    assert rows["(whole cluster)"]["kind"] == "pitr"
    assert [r["database"] for r in recoverable_section(manifests, None)["databases"]] == ["crm", "hr"]


def test_an_erasure_is_complete_when_the_last_backup_holding_it_is_gone():
    from pg_backup.compliance.evidence import erasure_section

    erasure = "20261120T100000.000000Z-abcdef"
    manifests = [_manifest("before-old", "logical", NOW - dt.timedelta(days=30)),            # no claim: by time
                 _manifest("before", "logical", NOW - dt.timedelta(days=15), erasure_through=None),
                 _manifest("after", "logical", NOW - dt.timedelta(days=1), erasure_through=erasure)]
    backups = {"before-old": {"deletable_from": iso(NOW + dt.timedelta(days=3))},
               "before": {"deletable_from": iso(NOW + dt.timedelta(days=40))},       # e.g. Object Lock until then
               "after": {"deletable_from": iso(NOW + dt.timedelta(days=90))}}
    got = erasure_section([erasure], manifests, backups, None, NOW)
    [row] = got["records"]
    assert row["backups_holding_data"] == ["before-old", "before"]
    assert row["complete_at"] == got["complete_everywhere_at"] == iso(NOW + dt.timedelta(days=40))
    assert row["complete"] is False
    # With a WAL archive, not before the point-in-time window has moved past the erasure.
    with_wal = erasure_section([erasure], manifests[2:], backups, 24, NOW)["records"][0]
    assert with_wal["backups_holding_data"] == [] and with_wal["complete_at"] == "2026-11-21T10:00:00.000000Z"
    assert with_wal["complete"] is True
    backups["before"]["deletable_from"] = None                                          # kept at every date
    assert erasure_section([erasure], manifests, backups, None, NOW)["complete_everywhere_at"] is None


def test_checksum_state_is_the_newest_conclusive_check():
    from types import SimpleNamespace

    from pg_backup.compliance.backups import checksum_state
    from pg_backup.compliance.evidence import checksum_checks
    from pg_backup.verification.records import VerificationRecord

    def audit(day, args, code):
        return {"operation": "verify", "started_at": iso(NOW - dt.timedelta(days=day)), "exit_code": code,
                "arguments": ["--config", "c.yml", "--json", "verify", *args]}

    records = [audit(9, ["--all"], 0), audit(6, ["b1", "--deep"], 4), audit(5, ["--all"], 5),   # 5: not conclusive
               audit(4, ["--restore", "b1"], 0), {"operation": "backup", "started_at": iso(NOW)}]
    checks = checksum_checks(records, [VerificationRecord("k", NOW - dt.timedelta(days=1), "b2", True)])
    b1 = SimpleNamespace(backup_id="b1", finished=NOW - dt.timedelta(days=10))
    b2 = SimpleNamespace(backup_id="b2", finished=NOW - dt.timedelta(days=8))
    b3 = SimpleNamespace(backup_id="b3", finished=NOW - dt.timedelta(days=7))
    assert checksum_state(b1, checks) == {"state": "FAILED", "at": iso(NOW - dt.timedelta(days=6)), "by": "verify --deep"}
    assert checksum_state(b2, checks) == {"state": "passed", "at": iso(NOW - dt.timedelta(days=1)),
                                          "by": "verify --restore"}
    assert checksum_state(b3, checks) == {"state": "not verified", "at": None, "by": None}


def test_object_lock_configuration_answers():
    from botocore.exceptions import ClientError

    from pg_backup.storage.s3lock import object_lock_configuration

    def refused(code):
        def request():
            raise ClientError({"Error": {"Code": code, "Message": "x"}}, "GetObjectLockConfiguration")
        return request

    assert object_lock_configuration(refused("ObjectLockConfigurationNotFoundError")) is None
    assert object_lock_configuration(refused("AccessDenied"))["enabled"] is None
    with pytest.raises(ClientError):
        object_lock_configuration(refused("InternalError"))
    conf = {"ObjectLockConfiguration": {"ObjectLockEnabled": "Enabled",
                                        "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 7, "Days": 0}}}}
    assert object_lock_configuration(lambda: conf) == {"enabled": True, "mode": "COMPLIANCE", "days": None, "years": 7}
    assert object_lock_configuration(lambda: {"ObjectLockConfiguration": {}}) is None
