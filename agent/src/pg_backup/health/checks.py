"""The health evaluation: a pure function of manifests, probes and a clock (DESIGN §8).

:func:`evaluate` turns what :mod:`.probes` gathered (:class:`Probes`) into :class:`Check` results;
nothing here reads storage, PostgreSQL or a file, so every condition is tested with an injected clock.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import re
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..config import TIERS, HealthSettings
from ..manifest import Manifest
from ..postgres.archiver import archiving_off
from ..wal.names import segment_end
from .keys import KeyProbe, key_checks
from .summarizer import SummarizerProbe, summarizer_checks


@dataclass
class Check:
    name: str
    status: str
    message: str
    value: Optional[float] = None
    warning: Optional[float] = None
    critical: Optional[float] = None
    labels: Dict[str, str] = field(default_factory=dict)
    unit: Optional[str] = None          # of value/warning/critical: "h", "s", "%", "B" or None (a count)


@dataclass
class ArchiverProbe:
    """PostgreSQL's own view of archiving (pg_stat_archiver), when the server answers."""

    in_recovery: bool = False
    archive_mode: str = "off"
    archive_command: str = ""
    archive_library: str = ""
    archived_count: int = 0
    failed_count: int = 0
    last_archived_wal: Optional[str] = None
    last_archived_time: Optional[dt.datetime] = None
    last_failed_wal: Optional[str] = None
    last_failed_time: Optional[dt.datetime] = None
    stats_reset: Optional[dt.datetime] = None
    current_lsn: Optional[int] = None          # pg_current_wal_lsn() as a byte position (primary only)
    wal_segment_size: int = 16 << 20
    previous_failed_count: Optional[int] = None   # seen by the previous health run (state file)
    previous_stats_reset: Optional[str] = None


@dataclass
class WalProbe:
    """The WAL archive in storage."""

    segments: int = 0
    newest_segment: Optional[str] = None
    newest_modified: Optional[dt.datetime] = None
    gaps: List[str] = field(default_factory=list)          # human descriptions of missing ranges
    missing_segments: int = 0
    conflicts: List[str] = field(default_factory=list)     # human descriptions of conflicting pushes
    error: Optional[str] = None


@dataclass
class Probes:
    """What the evaluation needs from the outside world, gathered by the caller."""

    storage: Optional[Dict[str, Any]] = None      # Storage.check() result
    storage_error: Optional[str] = None
    configured_region: Optional[str] = None
    disk_free_fraction: Optional[float] = None
    last_runs: Dict[str, Dict[str, Any]] = field(default_factory=dict)   # operation[:tier] -> audit record
    archiver: Optional[ArchiverProbe] = None
    archiver_error: Optional[str] = None          # PostgreSQL unreachable
    wal: Optional[WalProbe] = None                # None: WAL archiving is not in use
    verifications: Optional[List[Any]] = None     # verification.records.VerificationRecord, oldest first
    verifications_error: Optional[str] = None
    last_drill: Optional[Dict[str, Any]] = None  # the newest drill's report.json (metrics only)
    summarizer: Optional[SummarizerProbe] = None  # None: incremental backups are not configured
    keys: List[KeyProbe] = field(default_factory=list)   # the OpenPGP keys the host writes with
    untrusted: List[str] = field(default_factory=list)   # records left out: no trusted signature (docs/signing.md)


def worst(statuses: List[str]) -> str:
    # "unknown" ranks below critical for alerting but above ok.
    rank = {"ok": 0, "unknown": 1, "warning": 2, "critical": 3}
    return max(statuses, key=lambda s: rank[s]) if statuses else "unknown"


def evaluate(manifests: List[Manifest], settings: HealthSettings, probes: Probes, now: dt.datetime,
             max_age_override: Optional[Dict[str, float]] = None, *, archive_timeout_seconds: int = 60,
             rpo_target_minutes: int = 60) -> List[Check]:
    checks: List[Check] = []
    limits = {t: float(getattr(settings.max_age_hours, t)) for t in TIERS}
    limits.update(max_age_override or {})
    logical = [m for m in manifests if m.kind == "logical"]
    physical = [m for m in manifests if m.kind == "physical"]
    if logical or not physical:
        for tier in TIERS:
            checks += _tier_checks([m for m in logical if m.tier == tier], tier, "", limits[tier], settings, now,
                                   missing="critical" if tier == "daily" else "warning")
    for tier in TIERS:
        of_tier = [m for m in physical if m.tier == tier]
        if of_tier or (tier == "daily" and physical):
            checks += _tier_checks(of_tier, tier, "physical_", limits[tier], settings, now, missing="critical")
    checks += _last_run_checks(probes.last_runs)
    checks += _wal_checks(probes, now, settings, archive_timeout_seconds, rpo_target_minutes, bool(physical))
    checks += _storage_checks(probes)
    checks += _disk_check(probes, settings)
    checks += _verification_checks(probes, now, settings, bool(manifests))
    if probes.untrusted:
        checks.append(Check("untrusted_records", "warning",
                            f"{len(probes.untrusted)} record(s) without a trusted signature were ignored "
                            f"({'; '.join(probes.untrusted[:3])}{' ...' if len(probes.untrusted) > 3 else ''}): "
                            f"forged, or written by someone with only write access to the bucket",
                            float(len(probes.untrusted)), 1, None))
    checks += [Check(**fields) for fields in key_checks(probes.keys, now)]
    checks += [Check(**fields) for fields in summarizer_checks(probes.summarizer)]
    return checks


# -- backups ---------------------------------------------------------------------------------------

def _tier_checks(of_tier: List[Manifest], tier: str, prefix: str, limit: float, settings: HealthSettings,
                 now: dt.datetime, *, missing: str) -> List[Check]:
    kind = "physical " if prefix else ""
    labels = {"tier": tier, "kind": "physical"} if prefix else {"tier": tier}
    if not of_tier:
        return [Check(f"freshness_{prefix}{tier}", missing, f"no {kind}{tier} backup in the repository",
                      None, limit, 2 * limit, labels, "h")]
    newest = max(of_tier, key=lambda m: m.started_at)
    age = (now - newest.started).total_seconds() / 3600
    status = "critical" if age > 2 * limit else "warning" if age > limit else "ok"
    checks = [Check(f"freshness_{prefix}{tier}", status,
                    f"newest {kind}{tier} backup {newest.backup_id} is {age:.1f} h old (limit {limit:g} h)",
                    round(age, 3), limit, 2 * limit, labels, "h")]
    checks.append(_size_check(of_tier, newest, tier, settings.size_change_percent, prefix))
    if not prefix:
        checks += _database_size_checks(of_tier, newest, tier, settings.size_change_percent)
    return checks


def _previous(of_tier: List[Manifest], newest: Manifest) -> List[Manifest]:
    # Full backups compare with full ones, incremental with incremental ones (a chain's sizes differ by design).
    return sorted((m for m in of_tier if m.started_at < newest.started_at and m.is_incremental == newest.is_incremental),
                  key=lambda m: m.started_at)[-7:]


def size_baseline(of_tier: List[Manifest], newest: Manifest) -> Optional[float]:
    """The stored size the size check compares ``newest`` with (the median of up to 7 before it), or None."""
    previous = _previous(of_tier, newest)
    return statistics.median(m.stored_bytes for m in previous) if previous else None


def _change(value: float, history: List[float]) -> Tuple[float, float]:
    median = statistics.median(history)
    return median, (0.0 if median == 0 else (value - median) / median * 100)


def _size_check(of_tier: List[Manifest], newest: Manifest, tier: str, percent: int, prefix: str = "") -> Check:
    previous = _previous(of_tier, newest)
    kind = "physical " if prefix else ""
    labels = {"tier": tier, "kind": "physical"} if prefix else {"tier": tier}
    if not previous:
        return Check(f"size_{prefix}{tier}", "ok", f"first {kind}{tier} backup: nothing to compare its size with",
                     newest.stored_bytes, labels=labels, unit="B")
    median, change = _change(newest.stored_bytes, [m.stored_bytes for m in previous])
    status = "warning" if abs(change) > percent else "ok"
    return Check(f"size_{prefix}{tier}", status,
                 f"newest {kind}{tier} backup is {newest.stored_bytes} bytes, {change:+.0f} % from the median of the "
                 f"previous {len(previous)} ({median:.0f} bytes; limit ±{percent} %)",
                 round(change, 2), float(percent), None, labels, "%")


def database_check_name(tier: str, database: str) -> str:
    """``size_<tier>_db_<name>``: the name made safe for Nagios labels and Prometheus label values;
    a short hash keeps two names that differ only in unsafe characters apart."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", database)[:40]
    if safe != database:
        safe += "_" + hashlib.sha256(database.encode()).hexdigest()[:6]
    return f"size_{tier}_db_{safe}"


def database_sizes(m: Manifest) -> Dict[str, int]:
    sizes = {}
    for db in m.databases:
        try:
            sizes[db.name] = m.object_named(db.object).size
        except Exception:  # a malformed manifest: verify reports it; health just skips it
            continue
    return sizes


def _database_size_checks(of_tier: List[Manifest], newest: Manifest, tier: str, percent: int) -> List[Check]:
    """Each database of the newest backup against the median of the same database in the previous
    backups of the tier: a database that lost half its rows shows even when others grew."""
    previous = _previous(of_tier, newest)
    history = [database_sizes(m) for m in previous]
    checks = []
    for name, size in sorted(database_sizes(newest).items()):
        past = [h[name] for h in history if name in h]
        labels = {"tier": tier, "database": name}
        check_name = database_check_name(tier, name)
        if not past:
            checks.append(Check(check_name, "ok", f"database {name!r}: first {tier} backup of it, nothing to compare",
                                size, labels=labels, unit="B"))
            continue
        median, change = _change(size, past)
        status = "warning" if abs(change) > percent else "ok"
        checks.append(Check(check_name, status,
                            f"database {name!r} in the newest {tier} backup is {size} bytes, {change:+.0f} % from "
                            f"its median of the previous {len(past)} ({median:.0f} bytes; limit ±{percent} %)",
                            round(change, 2), float(percent), None, labels, "%"))
    return checks


def _last_run_checks(last_runs: Dict[str, Dict[str, Any]]) -> List[Check]:
    checks = []
    for key, record in sorted(last_runs.items()):
        if record.get("result") == "failure":
            status = "critical" if key.startswith("backup") else "warning"
            checks.append(Check(f"last_run_{key.replace(':', '_')}", status,
                                f"last {key} at {record.get('started_at')} failed: {record.get('error', 'no detail')}",
                                labels={"operation": key}))
        else:
            checks.append(Check(f"last_run_{key.replace(':', '_')}", "ok",
                                f"last {key} at {record.get('started_at')} succeeded", labels={"operation": key}))
    return checks


def _storage_checks(probes: Probes) -> List[Check]:
    checks = []
    if probes.storage_error:
        checks.append(Check("storage", "critical", f"storage unreachable: {probes.storage_error}"))
    elif probes.storage is not None:
        actual = probes.storage.get("region")
        if probes.configured_region and actual and actual != probes.configured_region:
            checks.append(Check("storage", "critical", f"bucket is in region {actual}, configured "
                                f"{probes.configured_region}: backups are outside the required data locality"))
        else:
            checks.append(Check("storage", "ok", "storage reachable" + (f" (region {actual})" if actual else "")))
        if probes.storage.get("verify_tls") is False:
            checks.append(Check("storage_tls", "warning", "repository.s3.verify_tls is false: the endpoint's "
                                "certificate is not checked (set ca_bundle to the CA that signed it instead)"))
    return checks


def _disk_check(probes: Probes, settings: HealthSettings) -> List[Check]:
    if probes.disk_free_fraction is None:
        return []
    free = probes.disk_free_fraction * 100
    limit = float(settings.min_free_disk_percent)
    return [Check("local_disk", "warning" if free < limit else "ok",
                  f"{free:.1f} % free on the agent's state directory (minimum {limit:g} %)",
                  round(free, 2), limit, None, unit="%")]


# -- WAL -------------------------------------------------------------------------------------------

def _wal_checks(probes: Probes, now: dt.datetime, settings: HealthSettings, archive_timeout: int,
                rpo_minutes: int, have_physical: bool) -> List[Check]:
    wal, arch = probes.wal, probes.archiver
    in_use = have_physical or (wal is not None and (wal.segments > 0 or wal.error is not None)) or (
        arch is not None and arch.archive_mode != "off")
    if not in_use:
        return []
    checks = [_archiver_check(probes)]
    if wal is None:
        return checks
    if wal.error:
        checks.append(Check("wal_newest_age", "unknown", f"cannot read the WAL archive: {wal.error}", unit="s"))
        return checks
    warn = float(settings.wal_age_factor * archive_timeout)
    crit = float(rpo_minutes * 60)
    if wal.newest_segment is None or wal.newest_modified is None:
        checks.append(Check("wal_newest_age", "critical" if have_physical else "warning",
                            "no WAL segment in the archive: point-in-time recovery is impossible", None, warn, crit,
                            unit="s"))
    else:
        age = max(0.0, (now - wal.newest_modified).total_seconds())
        pending = None
        if arch is not None and arch.current_lsn is not None and not arch.in_recovery:
            pending = arch.current_lsn - segment_end(wal.newest_segment, arch.wal_segment_size)
        status = "critical" if age > crit else "warning" if age > warn else "ok"
        message = (f"newest archived WAL {wal.newest_segment} is {age:.0f} s old (warning beyond {warn:g} s = "
                   f"health.wal_age_factor x wal.archive_timeout_seconds; critical beyond the RPO target {crit:g} s)")
        if status != "ok" and pending is not None and pending <= 0:
            status = "ok"
            message = (f"newest archived WAL {wal.newest_segment} is {age:.0f} s old, but the server wrote no WAL "
                       f"since: nothing is waiting to be archived (idle)")
        elif pending is not None and pending > 0:
            message += f"; {pending} byte(s) of WAL written since its end are not archived yet"
        checks.append(Check("wal_newest_age", status, message, round(age, 1), warn, crit, unit="s"))
    n = wal.missing_segments or len(wal.gaps)
    if wal.gaps:
        checks.append(Check("wal_gaps", "critical",
                            f"{len(wal.gaps)} gap(s) in the WAL archive since the oldest base backup "
                            f"({'; '.join(wal.gaps[:3])}{' ...' if len(wal.gaps) > 3 else ''}): recovery cannot "
                            f"replay past the first one", n, None, 1))
    else:
        checks.append(Check("wal_gaps", "ok", "no gap in the WAL archive since the oldest base backup", 0, None, 1))
    if wal.conflicts:
        checks.append(Check("wal_conflicts", "critical",
                            f"{len(wal.conflicts)} WAL push(es) met different content under an archived name "
                            f"({'; '.join(wal.conflicts[:3])}): two clusters may archive into one prefix",
                            len(wal.conflicts), None, 1))
    else:
        checks.append(Check("wal_conflicts", "ok", "no conflicting WAL push recorded", 0, None, 1))
    return checks


def utc_text(t: Optional[dt.datetime]) -> str:
    """A time as messages show it; also the form the state file remembers ``stats_reset`` in."""
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if t else "never"


def _archiver_check(probes: Probes) -> Check:
    arch = probes.archiver
    if arch is None:
        return Check("wal_archiver", "unknown", f"cannot ask PostgreSQL about archiving: "
                                               f"{probes.archiver_error or 'not probed'}")
    if arch.in_recovery:
        return Check("wal_archiver", "ok", "the server is a standby: archiving is checked on the primary",
                     arch.failed_count, unit="c")
    off = archiving_off(vars(arch))
    if off == "archive_mode off":
        return Check("wal_archiver", "critical", "archive_mode is off: no WAL is archived, so point-in-time "
                     "recovery past the newest base backup is impossible", arch.failed_count, unit="c")
    if off:
        return Check("wal_archiver", "critical", f"archive_mode is {arch.archive_mode} but archive_command is "
                     f"empty: no WAL is archived (pg_wal keeps growing until one is set), so point-in-time recovery "
                     f"past the newest base backup is impossible", arch.failed_count, unit="c")
    failing = arch.last_failed_time is not None and (
        arch.last_archived_time is None or arch.last_failed_time > arch.last_archived_time)
    if failing:
        return Check("wal_archiver", "critical",
                     f"archive_command is failing: {arch.failed_count} failure(s), last on {arch.last_failed_wal} at "
                     f"{utc_text(arch.last_failed_time)}; last success {arch.last_archived_wal or 'none'} at "
                     f"{utc_text(arch.last_archived_time)} (see the PostgreSQL log for pg-backup wal-push errors)",
                     arch.failed_count, unit="c")
    same_epoch = arch.previous_stats_reset == (utc_text(arch.stats_reset) if arch.stats_reset else None)
    if arch.previous_failed_count is not None and same_epoch and arch.failed_count > arch.previous_failed_count:
        return Check("wal_archiver", "warning",
                     f"{arch.failed_count - arch.previous_failed_count} archive failure(s) since the previous health "
                     f"check (last on {arch.last_failed_wal} at {utc_text(arch.last_failed_time)}); archiving has "
                     f"succeeded since", arch.failed_count, unit="c")
    return Check("wal_archiver", "ok", f"archiving works: last archived {arch.last_archived_wal or 'nothing yet'} at "
                 f"{utc_text(arch.last_archived_time)}, {arch.failed_count} failure(s) since the statistics were reset",
                 arch.failed_count, unit="c")


# -- restore verification --------------------------------------------------------------------------

def _verification_checks(probes: Probes, now: dt.datetime, settings: HealthSettings, have_backups: bool) -> List[Check]:
    limit_s = float(settings.restore_verification_max_age_days * 86400)
    if probes.verifications_error:
        return [Check("restore_verification", "unknown",
                      f"cannot read the recorded verifications: {probes.verifications_error}", None, limit_s, None,
                      unit="s")]
    if probes.verifications is None:
        return []
    records = probes.verifications
    passed = [r for r in records if r.passed]
    if records and not records[-1].passed:
        last = records[-1]
        return [Check("restore_verification", "critical",
                      f"the last restore verification ({last.backup_id} at {utc_text(last.when)}) FAILED: the "
                      f"backups may not restore; see {last.key}", _age_s(now, passed[-1].when) if passed else None, limit_s,
                      None, unit="s")]
    if not passed:
        return [Check("restore_verification", "warning" if have_backups else "ok",
                      "no successful restore verification recorded: run 'pg-backup verify --restore' (the schedule "
                      "role runs it monthly) or a drill" if have_backups else "no backups to verify yet",
                      None, limit_s, None, unit="s")]
    last = passed[-1]
    age = _age_s(now, last.when)
    status = "warning" if age > limit_s else "ok"
    return [Check("restore_verification", status,
                  f"last successful restore verification: {last.backup_id} at {utc_text(last.when)}, "
                  f"{age / 86400:.1f} days ago (limit {settings.restore_verification_max_age_days} days)",
                  round(age, 1), limit_s, None, unit="s")]


def _age_s(now: dt.datetime, when: dt.datetime) -> float:
    return max(0.0, (now - when).total_seconds())
