"""When each stored backup expires under the current retention, by the retention planner itself.

No second statement of the policy: the planner (:func:`pg_backup.retention.plan`) is asked at every
future instant where its answer can change (a tier's limit passing a backup, a physical backup
becoming the base of the point-in-time window), and a backup expires at the first of them at which
the plan deletes it. The future assumes the schedules keep running: one newer backup of every
(kind, tier) is imagined just after ``now``, so "the newest backup of its tier is always kept" does
not hold a backup forever (it does only if the schedule stops, which health reports). ``prune``
deletes an expired backup at its next run after that instant.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

from .. import retention
from ..config import RetentionSettings

_SUCCESSOR = "~next-"


@dataclass(frozen=True)
class Expiry:
    expires_at: Optional[dt.datetime]    # None: the plan keeps it at every instant considered
    basis: str                           # why it is kept until then (the plan's own reason)
    kept_now: Optional[str]              # the plan's reason today; None when prune would delete it today


def tier_limit_passes(settings: RetentionSettings, tier: str, started: dt.datetime) -> dt.datetime:
    """The first whole second at which ``retention.cutoffs`` no longer covers ``started`` (bisection to the
    microsecond, then rounded up: one second earlier the planner still keeps it)."""
    low = started
    high = started + dt.timedelta(days=retention.expiry_days(settings)[tier] + 2)
    while high - low > dt.timedelta(microseconds=1):
        mid = low + (high - low) / 2
        if retention.cutoffs(settings, mid)[tier] > started:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0) + dt.timedelta(seconds=1) if high.microsecond else high


def expiries(refs: Iterable[retention.BackupRef], settings: RetentionSettings, now: dt.datetime) -> Dict[str, Expiry]:
    real = sorted(refs, key=lambda r: (r.started, r.backup_id))
    successors = [retention.BackupRef(f"{_SUCCESSOR}{kind}-{tier}", kind, tier, now + dt.timedelta(microseconds=1))
                  for kind, tier in sorted({(r.kind, r.tier) for r in real})]
    every = real + successors
    today = retention.plan(every, settings, now)
    events: List[dt.datetime] = sorted(
        {tier_limit_passes(settings, r.tier, r.started) for r in every}
        | {r.started + dt.timedelta(hours=settings.wal_hours) for r in every if r.kind == "physical"})
    result: Dict[str, Expiry] = {}
    for r in real:
        if r.backup_id in today.delete:
            result[r.backup_id] = Expiry(now, today.delete[r.backup_id], None)
    last_reason = dict(today.keep)
    for when in (e for e in events if e > now):
        if len(result) == len(real):
            break
        plan = retention.plan(every, settings, when)
        for r in real:
            if r.backup_id in result:
                continue
            if r.backup_id in plan.delete:
                result[r.backup_id] = Expiry(when, last_reason[r.backup_id], today.keep[r.backup_id])
            else:
                last_reason[r.backup_id] = plan.keep[r.backup_id]
    for r in real:
        if r.backup_id not in result:
            result[r.backup_id] = Expiry(None, last_reason[r.backup_id], today.keep[r.backup_id])
    return result
