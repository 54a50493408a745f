"""Pure parts of restore verification and drills: check expectations, RPO arithmetic, the Markdown
report and the history chart."""
from __future__ import annotations

import datetime as dt
import os
from decimal import Decimal

import pytest

from pg_backup.drill.report import render_markdown
from pg_backup.drill.rpo import measure_rpo
from pg_backup.expectations import ExpectationError, parse_expectation
from pg_backup.repository import VERIFICATION_NAME, Repository
from pg_backup.wal.names import record_end


@pytest.mark.parametrize("text,value,holds", [
    ("> 0", 3000, True), ("> 0", 0, False), ("= 0", 0, True), ("= 0", Decimal("0.0"), True),
    (">= 2.5", 2.5, True), ("< 10", "9", True), ("!= 1", 1, False), ("<> 1", 2, True),
    ("= 'ready'", "ready", True), ("= 'ready'", "READY", False), ("= 'it''s'", "it's", True),
    ("= true", True, True), ("= false", True, False), ("is null", None, True), ("is not null", None, False),
    ("> 0", None, False), ("> 0", "abc", False), ("= true", 1, False), ("= 1", True, False),
])
def test_expectations(text, value, holds):
    ok, why = parse_expectation(text).holds(value)
    assert ok is holds
    assert (why == "") is holds


@pytest.mark.parametrize("text", ["", "about 3", "> ", "= 'open", "> nan", "=> 3", "> true"])
def test_bad_expectations_are_rejected_or_never_hold(text):
    try:
        exp = parse_expectation(text)
    except ExpectationError as exc:
        assert str(exc)
        return
    assert exp.holds(True)[0] is False  # '> true' parses but a boolean only compares with = / !=


def test_verification_keys_carry_time_backup_and_result():
    when = dt.datetime(2026, 11, 25, 10, 0, 5, tzinfo=dt.timezone.utc)
    key = Repository(None, "main").verification_key(when, "20261125T020000Z-logical-daily", True)
    m = VERIFICATION_NAME.match(key[len("main/audit/verifications/"):])
    assert key.startswith("main/audit/verifications/20261125T100005Z-20261125T020000Z-logical-daily-")
    assert m and m.group(2) == "20261125T020000Z-logical-daily" and m.group(4) == "passed"


LOSS = "2026-11-25T10:10:00.000000Z"


def test_rpo_is_zero_when_the_restore_reached_the_loss_position():
    rpo = measure_rpo({"loss_lsn": "0/3000000"}, {"last_replay_lsn": "0/3000000",
                                                   "last_commit_time": "2026-11-25T09:00:00.000000Z"}, LOSS, None)
    assert rpo["seconds"] == 0 and rpo["lost_wal_bytes"] == 0 and rpo["method"].startswith("exact")


def test_rpo_counts_from_the_last_recovered_commit_when_wal_is_missing():
    rpo = measure_rpo({"loss_lsn": "1/10"}, {"last_replay_lsn": "0/FFFFFFF0",
                                              "last_commit_time": "2026-11-25T10:00:00.000000Z"}, LOSS, None)
    assert rpo["seconds"] == 600 and rpo["lost_wal_bytes"] == 0x20 and rpo["method"].startswith("upper bound")
    # No primary and no replayed commit: the base backup's end time bounds it.
    rpo = measure_rpo({}, {"last_replay_lsn": "0/5000000", "last_commit_time": None}, LOSS,
                      "2026-11-25T09:10:00.000000Z")
    assert rpo["seconds"] == 3600 and rpo["lost_wal_bytes"] is None
    assert measure_rpo({}, {}, LOSS, None)["seconds"] is None


def _report(**kw):
    base = {"drill_id": "20261125T101000Z", "cluster": "main", "started_at": LOSS, "host": "db1",
            "agent_version": "1", "backup_id": "B", "data_dir": "/x", "port": 55434, "kept": False,
            "targets": {"rto_minutes": 240, "rpo_minutes": 1}, "prepare_seconds": 1.5,
            "rto": {"seconds": 42.0, "met": True, "phases": {"download": 1.0, "wal_replay": 2.0, "checks": 0.5}},
            "rpo": {"seconds": 600.0, "met": False, "method": "upper bound", "lost_wal_bytes": 123},
            "primary": {"marker_written": True, "marker_lsn": "0/1", "restore_point": "pgb-drill-x",
                        "segment": "000000010000000000000003", "marker_archived": False},
            "checks": [{"name": "n|x", "database": "app", "value": 3, "expect": "> 0", "status": "passed",
                        "detail": ""}],
            "passed": False, "failures": ["RPO 600 s is above the target of 1 min"], "recovery_error": None, "notes": [],
            "chart": True}
    base.update(kw)
    return base


def test_markdown_report_names_the_verdict_targets_phases_and_history():
    report = _report()
    text = render_markdown(report, [report])
    assert text.startswith("# Disaster-recovery drill 20261125T101000Z: FAILED")
    assert "| RPO | **10.0 min (600 s)**, target 1 min: MISSED |" in text
    assert "| RTO | **0.7 min (42 s)**, target 240 min: met |" in text
    assert "| wal replay | 2.0 |" in text and "n\\|x" in text and "![RTO and RPO of every drill](history.png)" in text
    assert "| 20261125T101000Z | 0.7 | 10.0 | FAILED |" in text


def test_history_chart_is_a_png():
    try:
        from pg_backup.charts import ChartUnavailable, drill_history_png
        png = drill_history_png([_report(), _report(rto={"seconds": None}, rpo={"seconds": 5.0})], 240, 1)
    except ChartUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_record_end_drops_the_page_header_of_an_insert_position():
    seg, block = 16 << 20, 8192
    assert record_end("0/2000028", block, seg) == "0/2000000"     # just after a WAL switch
    assert record_end("0/2002018", block, seg) == "0/2002000"     # at a page start
    assert record_end("0/2002100", block, seg) == "0/2002100"     # mid-page: unchanged
    assert record_end("1/28", block, seg) == "1/0"
