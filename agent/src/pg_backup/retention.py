"""Grandfather-father-son retention as a pure function of manifests, settings and a clock.

Each backup carries the tier it was taken for; a tier keeps every backup younger than its
retention (calendar months for the monthly tier, so "84 months" is exactly 7 years), and the
newest committed backup of every (kind, tier) is kept whatever its age, so a host whose schedule
stopped never loses its last backup to the calendar. Physical and logical backups are tiered the
same way but separately (per kind); in addition the physical backup that the point-in-time window
(``retention.wal_hours``) starts from is kept. Ages come from the manifest's start time,
never from file or object times (which copies, restores and migrations change).

Incremental physical backups: a backup that a retained backup's chain needs (its full backup and the
incremental ones in between) is kept too, whatever its own tier says; so tiers apply to whole
chains (a monthly incremental keeps its weekly full as long as the monthly tier keeps it), and a
chain is only ever cut from its newest end, never in the middle.
"""
from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

from .config import RetentionSettings


@dataclass(frozen=True)
class BackupRef:
    backup_id: str
    kind: str
    tier: str
    started: dt.datetime
    needs: Tuple[str, ...] = ()     # an incremental backup's chain: the backups its restore needs, oldest first


@dataclass
class RetentionPlan:
    keep: Dict[str, str] = field(default_factory=dict)      # backup_id -> reason
    delete: Dict[str, str] = field(default_factory=dict)    # backup_id -> reason


def subtract_months(ts: dt.datetime, months: int) -> dt.datetime:
    """The same wall-clock instant ``months`` calendar months earlier (day clamped to month length)."""
    index = ts.year * 12 + (ts.month - 1) - months
    year, month = divmod(index, 12)
    day = min(ts.day, calendar.monthrange(year, month + 1)[1])
    return ts.replace(year=year, month=month + 1, day=day)


def cutoffs(settings: RetentionSettings, now: dt.datetime) -> Dict[str, dt.datetime]:
    """The oldest start time each tier still keeps."""
    return {
        "daily": now - dt.timedelta(days=settings.daily_days),
        "weekly": now - dt.timedelta(weeks=settings.weekly_weeks),
        "monthly": subtract_months(now, settings.monthly_months),
    }


def plan(backups: Iterable[BackupRef], settings: RetentionSettings, now: dt.datetime) -> RetentionPlan:
    refs = sorted(backups, key=lambda b: (b.started, b.backup_id))
    limits = cutoffs(settings, now)
    newest: Dict[Tuple[str, str], str] = {}
    for ref in refs:
        newest[(ref.kind, ref.tier)] = ref.backup_id
    window_base = pitr_window_base(refs, settings, now)
    result = RetentionPlan()
    for ref in refs:
        limit = limits[ref.tier]
        if ref.started >= limit:
            result.keep[ref.backup_id] = f"{ref.tier} backup within retention (since {limit:%Y-%m-%d %H:%M}Z)"
        elif newest[(ref.kind, ref.tier)] == ref.backup_id:
            result.keep[ref.backup_id] = f"newest {ref.kind} {ref.tier} backup (always kept)"
        elif ref.backup_id == window_base:
            result.keep[ref.backup_id] = (f"base of the point-in-time recovery window (the newest physical backup "
                                          f"started {settings.wal_hours} h or more ago)")
        else:
            result.delete[ref.backup_id] = f"{ref.tier} backup older than {_describe(settings, ref.tier)}"
    _keep_chains(refs, result)
    return result


def _keep_chains(refs: List[BackupRef], result: RetentionPlan) -> None:
    """Move every backup a kept backup's chain needs from ``delete`` to ``keep`` (newest first, so the
    reason names the newest backup that needs it)."""
    for ref in reversed(refs):
        if ref.backup_id not in result.keep:
            continue
        for member in ref.needs:
            if member in result.delete:
                del result.delete[member]
                result.keep[member] = f"needed by {ref.backup_id} (its incremental chain)"


def deletion_order(refs: Iterable[BackupRef], doomed: Iterable[str]) -> List[str]:
    """The backups to delete, newest first: a chain is cut from its end, so an interrupted prune never
    leaves an incremental backup whose parent is gone."""
    wanted = set(doomed)
    return [r.backup_id for r in sorted(refs, key=lambda b: (b.started, b.backup_id), reverse=True)
            if r.backup_id in wanted]


def pitr_window_base(refs: Iterable[BackupRef], settings: RetentionSettings, now: dt.datetime) -> Optional[str]:
    """The physical backup recovery to ``now - wal_hours`` starts from: the newest one (of any tier)
    started at or before then. Retention keeps it, so the window the WAL is kept for stays usable
    whatever the tiers' own limits are (the WAL side anchors on the same backup)."""
    edge = now - dt.timedelta(hours=settings.wal_hours)
    older = [r for r in refs if r.kind == "physical" and r.started <= edge]
    return max(older, key=lambda r: (r.started, r.backup_id)).backup_id if older else None


def _describe(settings: RetentionSettings, tier: str) -> str:
    return {"daily": f"{settings.daily_days} days", "weekly": f"{settings.weekly_weeks} weeks",
            "monthly": f"{settings.monthly_months} months"}[tier]


def expiry_days(settings: RetentionSettings) -> Dict[str, int]:
    """Upper bound in days of each tier's retention: what storage lifecycle rules must never undercut."""
    return {"daily": settings.daily_days, "weekly": settings.weekly_weeks * 7,
            "monthly": (settings.monthly_months * 31)}
