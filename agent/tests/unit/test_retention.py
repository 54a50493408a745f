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


# -- incremental chains ------------------------------------------------------------------------------

def _chain_schedule(start: dt.date, end: dt.date, max_chain: int = 6):
    """Physical backups as the schedule role's full + incremental schedules take them: a weekly full on
    Sunday, a monthly full on the 1st, a daily incremental on every other day, each incremental to the
    newest physical backup (a full one once the chain has max_chain incremental backups), as the agent
    chooses its parent. Yields BackupRefs, oldest first."""
    newest = None
    day = start
    while day <= end:
        at = dt.datetime(day.year, day.month, day.day, 2, tzinfo=UTC)
        if day.day == 1:
            tier, full = "monthly", True
        elif day.weekday() == 6:
            tier, full = "weekly", True
        else:
            tier, full = "daily", newest is None or len(newest.needs) >= max_chain
        needs = () if full else newest.needs + (newest.backup_id,)
        newest = BackupRef(make_backup_id(at, "physical", tier), "physical", tier, at, needs)
        yield newest
        day += dt.timedelta(days=1)


def _assert_consistent(kept: dict, result, settings: RetentionSettings, now: dt.datetime) -> None:
    from pg_backup.retention import cutoffs

    limits = cutoffs(settings, now)
    for ref in kept.values():
        missing = [b for b in ref.needs if b not in kept]
        assert not missing, f"{ref.backup_id} kept but its chain lost {missing}"
        if ref.started >= limits[ref.tier]:
            assert ref.backup_id in result.keep, f"{ref.backup_id} is within retention"


def test_seven_years_of_full_and_incremental_chains_never_break_a_chain():
    from pg_backup.retention import cutoffs, deletion_order

    settings = RetentionSettings()  # 30 days / 12 weeks / 84 months
    kept: dict = {}
    start, end = dt.date(2018, 1, 1), dt.date(2025, 12, 31)
    deleted_total = 0
    for ref in _chain_schedule(start, end):
        kept[ref.backup_id] = ref
        now = ref.started + dt.timedelta(minutes=30)
        result = plan(kept.values(), settings, now)
        order = deletion_order(kept.values(), result.delete)
        assert set(order) == set(result.delete)
        position = {b: i for i, b in enumerate(order)}
        for doomed in order:  # a dependent always goes before the backup it depends on
            for member in kept[doomed].needs:
                assert member not in position or position[member] > position[doomed]
        for gone in order:
            del kept[gone]
        deleted_total += len(order)
        _assert_consistent(kept, result, settings, now)
    assert deleted_total > 2000
    now = dt.datetime(2025, 12, 31, 2, 30, tzinfo=UTC)
    limits = cutoffs(settings, now)
    by_tier = {t: [r for r in kept.values() if r.tier == t] for t in ("daily", "weekly", "monthly")}
    assert len(by_tier["monthly"]) == 84                       # every monthly full of 7 years
    assert all(r.started >= limits["weekly"] for r in by_tier["weekly"]) and len(by_tier["weekly"]) == 12
    # Dailies: those of the last 30 days, plus none older (their chains end within a week).
    assert {r.backup_id for r in by_tier["daily"]} == {
        r.backup_id for r in _chain_schedule(start, end) if r.tier == "daily" and r.started >= limits["daily"]}
    # Every kept daily's chain root is kept.
    assert all(r.needs[0] in kept for r in by_tier["daily"])


def test_a_retained_incremental_keeps_its_whole_chain_whatever_the_tiers_say():
    now = dt.datetime(2026, 6, 1, tzinfo=UTC)
    full = BackupRef("full", "physical", "weekly", now - dt.timedelta(weeks=40))
    inc1 = BackupRef("inc1", "physical", "daily", full.started + dt.timedelta(days=1), ("full",))
    inc2 = BackupRef("inc2", "physical", "monthly", full.started + dt.timedelta(days=2), ("full", "inc1"))
    newer = BackupRef("newer", "physical", "weekly", now - dt.timedelta(days=1))
    newer_daily = BackupRef("newer-daily", "physical", "daily", now, ("newer",))
    result = plan([full, inc1, inc2, newer, newer_daily], RetentionSettings(), now)
    assert set(result.keep) == {"full", "inc1", "inc2", "newer", "newer-daily"}
    assert result.keep["full"] == "needed by inc2 (its incremental chain)"
    assert result.keep["inc1"] == "needed by inc2 (its incremental chain)"
    # When the monthly tier lets go of inc2, the whole chain goes, newest first.
    monthly = BackupRef("monthly", "physical", "monthly", now - dt.timedelta(days=2))
    refs = [full, inc1, inc2, newer, newer_daily, monthly]
    later = plan(refs, RetentionSettings(monthly_months=3), now)
    assert set(later.delete) == {"full", "inc1", "inc2"}
    from pg_backup.retention import deletion_order

    assert deletion_order(refs, later.delete) == ["inc2", "inc1", "full"]


def test_the_pitr_window_base_keeps_its_chain():
    now = dt.datetime(2026, 6, 1, tzinfo=UTC)
    settings = RetentionSettings(daily_days=1, weekly_weeks=1, wal_hours=24 * 10)
    full = BackupRef("full", "physical", "weekly", now - dt.timedelta(days=20))
    inc = BackupRef("inc", "physical", "daily", now - dt.timedelta(days=12), ("full",))
    newest = BackupRef("newest", "physical", "daily", now, ())
    weekly = BackupRef("weekly", "physical", "weekly", now - dt.timedelta(hours=1), ())
    result = plan([full, inc, weekly, newest], settings, now)
    assert "base of the point-in-time recovery window" in result.keep["inc"]
    assert result.keep["full"] == "needed by inc (its incremental chain)"
