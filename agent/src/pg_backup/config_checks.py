"""How backups are checked: the ``verify``, ``drill`` and ``health`` sections.

Part of the one schema (:class:`pg_backup.config.Settings`), declared apart to keep modules short.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from .config_options import opt, section


@dataclass
class VerifyCheck:
    name: str = opt("", "Name of the check in reports.")
    database: str = opt("postgres", "Database the query runs in.")
    sql: str = opt("", "A query returning one value (one row, one column).")
    expect: str = opt("> 0", "Expectation on the value: an operator (=, !=, >, >=, <, <=) and a number, a "
                      "'quoted string' or true/false, or 'is null' / 'is not null', e.g. '> 0' or \"= 'ok'\". "
                      "A NULL or a value of another kind never holds.")


@dataclass
class VerifySettings:
    checks: List[VerifyCheck] = opt([], "Checks run after every restore verification and drill, each "
                                    "{name, database, sql, expect}, e.g. the seed's SELECT COUNT(*) FROM "
                                    "domain_events with expect '> 0'.", item=VerifyCheck)
    scratch_port: int = opt(55433, "Port of the scratch server 'verify --restore' starts for physical backups "
                            "(loopback only, archiving off).", minimum=1024, maximum=65535)
    scratch_dir: Optional[str] = opt(None, "Directory for scratch data directories of verifications and drills; "
                                     "default <state_dir>/scratch.")
    keep_failed: bool = opt(False, "Keep the scratch database or data directory of a failed verification for "
                            "inspection instead of removing it.")


@dataclass
class DrillSettings:
    rto_target_minutes: int = opt(240, "Recovery time objective: a drill slower than this fails.",
                                  minimum=1, maximum=7 * 24 * 60)
    rpo_target_minutes: int = opt(60, "Recovery point objective: a drill losing more than this much time of "
                                  "commits fails.", minimum=1, maximum=7 * 24 * 60)
    port: int = opt(55434, "Port of the scratch server a drill restores into (loopback only).",
                    minimum=1024, maximum=65535)


@dataclass
class TierHoursSettings:
    daily: int = opt(26, "A daily backup older than this many hours is a warning (twice as old: critical).",
                     minimum=1, maximum=24 * 400)
    weekly: int = opt(8 * 24, "A weekly backup older than this many hours is a warning (twice as old: critical).",
                      minimum=1, maximum=24 * 400)
    monthly: int = opt(32 * 24, "A monthly backup older than this many hours is a warning (twice as old: "
                       "critical).", minimum=1, maximum=24 * 800)


@dataclass
class HealthSettings:
    max_age_hours: TierHoursSettings = section(TierHoursSettings, "Freshness thresholds per tier (missed schedules).")
    size_change_percent: int = opt(50, "Warn when the newest backup of a tier differs from the median of the "
                                   "previous ones by more than this.", minimum=1, maximum=1000)
    min_free_disk_percent: int = opt(10, "Warn when the filesystem of paths.state_dir has less free space.",
                                     minimum=0, maximum=99)
    wal_age_factor: int = opt(5, "Warn when the newest archived WAL is older than this many times "
                              "wal.archive_timeout_seconds (critical beyond drill.rpo_target_minutes).",
                              minimum=1, maximum=1000)
    restore_verification_max_age_days: int = opt(35, "Warn when the last successful restore verification is "
                                                 "older than this many days (the seed's monthly restore test).",
                                                 minimum=1, maximum=3660)
