"""Retention is a pure function: these tests are its specification."""
from __future__ import annotations

import datetime as dt

from pg_backup.config import RetentionSettings
from pg_backup.manifest import make_backup_id
from pg_backup.retention import BackupRef, plan, subtract_months

UTC = dt.timezone.utc


def _schedule(start: dt.date, end: dt.date):
    """The seed's cron schedule: daily 02:00, weekly Sunday 03:00, monthly on the 1st 04:00 (UTC)."""
    day = start
    while day <= end:
        yield "daily", dt.datetime(day.year, day.month, day.day, 2, tzinfo=UTC)
        if day.weekday() == 6:
            yield "weekly", dt.datetime(day.year, day.month, day.day, 3, tzinfo=UTC)
        if day.day == 1:
            yield "monthly", dt.datetime(day.year, day.month, day.day, 4, tzinfo=UTC)
        day += dt.timedelta(days=1)


def test_eight_years_of_scheduled_backups_keep_exactly_the_gfs_set():
    settings = RetentionSettings()  # 30 days / 12 weeks / 84 months
    kept: dict = {}
    start, end = dt.date(2018, 1, 1), dt.date(2025, 12, 31)
    # Prune runs after every backup, as the schedule role does; the clock advances with the backups.
    for tier, when in _schedule(start, end):
        ref = BackupRef(make_backup_id(when, "logical", tier), "logical", tier, when)
        kept[ref.backup_id] = ref
        result = plan(kept.values(), settings, when + dt.timedelta(minutes=30))
        for gone in result.delete:
            del kept[gone]
    now = dt.datetime(2025, 12, 31, 4, 30, tzinfo=UTC)
    expected = set()
    for tier, when in _schedule(start, end):
        if tier == "daily" and when >= now - dt.timedelta(days=30):
            expected.add(make_backup_id(when, "logical", tier))
        if tier == "weekly" and when >= now - dt.timedelta(weeks=12):
            expected.add(make_backup_id(when, "logical", tier))
        if tier == "monthly" and when >= dt.datetime(2018, 12, 31, 4, 30, tzinfo=UTC):
            expected.add(make_backup_id(when, "logical", tier))
    assert set(kept) == expected
    tiers = [r.tier for r in kept.values()]
    assert tiers.count("daily") == 30
    assert tiers.count("weekly") == 12
    assert tiers.count("monthly") == 84  # 2019-01 .. 2025-12: exactly 7 years


def test_newest_backup_of_a_tier_survives_when_the_schedule_stopped():
    old = dt.datetime(2020, 1, 1, 2, tzinfo=UTC)
    refs = [BackupRef(make_backup_id(old - dt.timedelta(days=d), "logical", "daily"), "logical", "daily",
                      old - dt.timedelta(days=d)) for d in range(3)]
    result = plan(refs, RetentionSettings(), dt.datetime(2026, 1, 1, tzinfo=UTC))
    assert list(result.keep) == [refs[0].backup_id]
    assert "always kept" in result.keep[refs[0].backup_id]
    assert set(result.delete) == {refs[1].backup_id, refs[2].backup_id}


def test_retention_boundary_is_inclusive_and_uses_start_time():
    now = dt.datetime(2026, 3, 31, 12, tzinfo=UTC)
    at_limit = BackupRef("a", "logical", "daily", now - dt.timedelta(days=30))
    past_limit = BackupRef("b", "logical", "daily", now - dt.timedelta(days=30, seconds=1))
    newer = BackupRef("c", "logical", "daily", now)
    result = plan([at_limit, past_limit, newer], RetentionSettings(), now)
    assert "a" in result.keep and "b" in result.delete


def test_kinds_are_retained_independently():
    now = dt.datetime(2026, 1, 1, tzinfo=UTC)
    old = now - dt.timedelta(days=400)
    refs = [BackupRef("logical-old", "logical", "daily", old), BackupRef("physical-old", "physical", "daily", old),
            BackupRef("logical-new", "logical", "daily", now)]
    result = plan(refs, RetentionSettings(), now)
    assert "physical-old" in result.keep  # newest physical daily, however old
    assert "logical-old" in result.delete


def test_subtract_months_clamps_to_month_end():
    assert subtract_months(dt.datetime(2026, 3, 31, tzinfo=UTC), 1) == dt.datetime(2026, 2, 28, tzinfo=UTC)
    assert subtract_months(dt.datetime(2026, 1, 15, tzinfo=UTC), 84) == dt.datetime(2019, 1, 15, tzinfo=UTC)
    assert subtract_months(dt.datetime(2024, 2, 29, tzinfo=UTC), 12) == dt.datetime(2023, 2, 28, tzinfo=UTC)
