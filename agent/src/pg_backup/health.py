"""Health: one evaluation (a pure function of manifests, probes and a clock), several renderings
(text, JSON, Nagios with perfdata, Prometheus textfile). DESIGN §8.

:func:`gather` collects the probes (storage, the WAL archive, PostgreSQL's archiver, the recorded
restore verifications, local disk, the audit log); :func:`evaluate` turns them into checks; the
``render_*`` functions print the same verdict in each format.

Checks (names are stable: monitoring keys on them)
  freshness_<tier>, size_<tier>                   newest logical backup per tier: age and size change
  size_<tier>_db_<database>                       one database's dump against its own history
  freshness_physical_<tier>, size_physical_<tier> the same for physical base backups (when there are any)
  last_run_<operation>                            the newest audit record of backup/prune/verify
  wal_archiver                                    pg_stat_archiver: failing now, or failures since the last run
  wal_newest_age                                  age of the newest archived segment (RPO at risk)
  wal_gaps, wal_conflicts                         missing segments since the oldest base backup; pushes
                                                  that met different content under the same name
  storage, local_disk                             reachable and in the configured region; free space
  restore_verification                            age of the last successful 'verify --restore' (or drill)
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .config import TIERS, HealthSettings
from .manifest import Manifest

ORDER = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
NAGIOS_CODES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
STATE_FILE = "health-state.json"


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
    verifications: Optional[List[Any]] = None     # verify_restore.VerificationRecord, oldest first
    verifications_error: Optional[str] = None
    last_drill: Optional[Dict[str, Any]] = None  # the newest drill's report.json (metrics only)


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
    return sorted((m for m in of_tier if m.started_at < newest.started_at), key=lambda m: m.started_at)[-7:]


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


def _database_sizes(m: Manifest) -> Dict[str, int]:
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
    history = [_database_sizes(m) for m in previous]
    checks = []
    for name, size in sorted(_database_sizes(newest).items()):
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

def lsn_to_int(text: str) -> int:
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def segment_end(name: str, segment_size: int) -> int:
    """Byte position just past the end of WAL segment ``name`` (TTTTTTTTXXXXXXXXYYYYYYYY)."""
    log, seg = int(name[8:16], 16), int(name[16:24], 16)
    per_log = 0x100000000 // segment_size
    return (log * per_log + seg + 1) * segment_size


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


def _iso(t: Optional[dt.datetime]) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if t else "never"


def _archiver_check(probes: Probes) -> Check:
    arch = probes.archiver
    if arch is None:
        return Check("wal_archiver", "unknown", f"cannot ask PostgreSQL about archiving: "
                                               f"{probes.archiver_error or 'not probed'}")
    if arch.in_recovery:
        return Check("wal_archiver", "ok", "the server is a standby: archiving is checked on the primary",
                     arch.failed_count, unit="c")
    if arch.archive_mode == "off":
        return Check("wal_archiver", "critical", "archive_mode is off: no WAL is archived, so point-in-time "
                     "recovery past the newest base backup is impossible", arch.failed_count, unit="c")
    failing = arch.last_failed_time is not None and (
        arch.last_archived_time is None or arch.last_failed_time > arch.last_archived_time)
    if failing:
        return Check("wal_archiver", "critical",
                     f"archive_command is failing: {arch.failed_count} failure(s), last on {arch.last_failed_wal} at "
                     f"{_iso(arch.last_failed_time)}; last success {arch.last_archived_wal or 'none'} at "
                     f"{_iso(arch.last_archived_time)} (see the PostgreSQL log for pg-backup wal-push errors)",
                     arch.failed_count, unit="c")
    same_epoch = arch.previous_stats_reset == (_iso(arch.stats_reset) if arch.stats_reset else None)
    if arch.previous_failed_count is not None and same_epoch and arch.failed_count > arch.previous_failed_count:
        return Check("wal_archiver", "warning",
                     f"{arch.failed_count - arch.previous_failed_count} archive failure(s) since the previous health "
                     f"check (last on {arch.last_failed_wal} at {_iso(arch.last_failed_time)}); archiving has "
                     f"succeeded since", arch.failed_count, unit="c")
    return Check("wal_archiver", "ok", f"archiving works: last archived {arch.last_archived_wal or 'nothing yet'} at "
                 f"{_iso(arch.last_archived_time)}, {arch.failed_count} failure(s) since the statistics were reset",
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
                      f"the last restore verification ({last.backup_id} at {_iso(last.when)}) FAILED: the backups may "
                      f"not restore; see {last.key}", _age_s(now, passed[-1].when) if passed else None, limit_s,
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
                  f"last successful restore verification: {last.backup_id} at {_iso(last.when)}, "
                  f"{age / 86400:.1f} days ago (limit {settings.restore_verification_max_age_days} days)",
                  round(age, 1), limit_s, None, unit="s")]


def _age_s(now: dt.datetime, when: dt.datetime) -> float:
    return max(0.0, (now - when).total_seconds())


# -- the audit log ---------------------------------------------------------------------------------

def last_runs_from_audit(path: str, limit_bytes: int = 4 << 20) -> Dict[str, Dict[str, Any]]:
    """The newest audit record per operation (and per tier for backups), from the local log's tail."""
    runs: Dict[str, Dict[str, Any]] = {}
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit_bytes))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return runs
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        op = record.get("operation")
        if op not in ("backup", "prune", "verify"):
            continue
        key = op
        if op == "backup":
            args = record.get("arguments", [])
            tier = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--tier"), None)
            if "--physical" in args:
                key = f"backup:physical_{tier or 'daily'}"
            else:
                key = f"backup:{tier}" if tier else op
        if record.get("result") == "skipped":
            continue
        runs[key] = record
    return runs


# -- renderings ------------------------------------------------------------------------------------

def document(cluster: str, checks: List[Check]) -> Dict[str, Any]:
    return {"cluster": cluster, "status": worst([c.status for c in checks]),
            "checks": [{k: v for k, v in asdict(c).items() if (k not in ("labels", "unit") or v)} for c in checks]}


def render_text(doc: Dict[str, Any]) -> List[str]:
    lines = [f"cluster {doc['cluster']}: {doc['status'].upper()}"]
    for c in sorted(doc["checks"], key=lambda c: -ORDER[c["status"]]):
        lines.append(f"  {c['status'].upper():<8} {c['name']}: {c['message']}")
    return lines


_NAGIOS_UNITS = {"h": ("s", 3600.0), "s": ("s", 1.0), "%": ("%", 1.0), "B": ("B", 1.0), "c": ("c", 1.0)}


def _perf_number(v: Optional[float], factor: float = 1.0) -> str:
    """A plain decimal (no exponent, which Nagios parsers reject), at most 3 decimals."""
    if v is None:
        return ""
    x = v * factor
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.3f}".rstrip("0").rstrip(".")


def render_nagios(doc: Dict[str, Any]) -> str:
    """``PG-BACKUP STATUS - cluster: problems | 'label'=value[UOM];warn;crit ...`` (Nagios plugin API).

    Units are ones Nagios knows: ages in seconds (s), percentages (%), bytes (B), counters (c)."""
    bad = [c for c in doc["checks"] if c["status"] != "ok"]
    summary = "; ".join(c["message"] for c in bad) if bad else f"{len(doc['checks'])} checks ok"
    summary = summary.replace("|", "/").replace("\n", " ")
    perf = []
    for c in doc["checks"]:
        if c.get("value") is None:
            continue
        uom, factor = _NAGIOS_UNITS.get(c.get("unit") or "", ("", 1.0))
        label = c["name"].replace("'", "_").replace("=", "_")
        perf.append(f"'{label}'={_perf_number(c['value'], factor)}{uom};{_perf_number(c.get('warning'), factor)};"
                    f"{_perf_number(c.get('critical'), factor)}")
    return f"PG-BACKUP {doc['status'].upper()} - {doc['cluster']}: {summary}" + (" | " + " ".join(perf) if perf else "")


def _label_value(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Metrics:
    """Prometheus text format 0.0.4: each family once, HELP and TYPE first, then its samples."""

    def __init__(self, cluster: str):
        self.cluster = cluster
        self.out: List[str] = []

    def family(self, name: str, kind: str, help_text: str,
               samples: Iterable[Tuple[Dict[str, str], Optional[float]]]) -> None:
        rows = [(labels, value) for labels, value in samples if value is not None]
        if not rows:
            return
        self.out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in rows:
            pairs = ",".join(f'{k}="{_label_value(v)}"' for k, v in {"cluster": self.cluster, **labels}.items())
            self.out.append(f"{name}{{{pairs}}} {_perf_number(value)}")

    def text(self) -> str:
        return "\n".join(self.out) + "\n"


def render_prometheus(doc: Dict[str, Any], manifests: List[Manifest], now: dt.datetime,
                      probes: Optional[Probes] = None) -> str:
    """Metrics for node_exporter's textfile collector; every name starts with ``pg_backup_`` and
    carries a ``cluster`` label; ``promtool check metrics`` accepts the output."""
    m = _Metrics(doc["cluster"])
    m.family("pg_backup_health_status", "gauge", "Overall health: 0 ok, 1 warning, 2 critical, 3 unknown.",
             [({}, ORDER[doc["status"]])])
    m.family("pg_backup_check_status", "gauge", "Status of one health check: 0 ok, 1 warning, 2 critical, 3 unknown.",
             [({"check": c["name"]}, ORDER[c["status"]]) for c in doc["checks"]])
    newest: Dict[Tuple[str, str], Manifest] = {}
    for b in manifests:
        key = (b.kind, b.tier)
        if key not in newest or b.started_at > newest[key].started_at:
            newest[key] = b
    keys = sorted(newest)
    m.family("pg_backup_last_backup_timestamp_seconds", "gauge", "Start time of the newest backup of a kind and tier.",
             [({"kind": k, "tier": t}, round(newest[(k, t)].started.timestamp())) for k, t in keys])
    m.family("pg_backup_last_backup_age_seconds", "gauge", "Age of the newest backup of a kind and tier.",
             [({"kind": k, "tier": t}, round((now - newest[(k, t)].started).total_seconds())) for k, t in keys])
    m.family("pg_backup_last_backup_stored_bytes", "gauge",
             "Stored (compressed, encrypted) size of the newest backup of a kind and tier.",
             [({"kind": k, "tier": t}, newest[(k, t)].stored_bytes) for k, t in keys])
    m.family("pg_backup_last_backup_database_stored_bytes", "gauge",
             "Stored size of each database's dump in the newest logical backup of a tier.",
             [({"tier": t, "database": name}, size) for k, t in keys if k == "logical"
              for name, size in sorted(_database_sizes(newest[(k, t)]).items())])
    kinds = sorted({b.kind for b in manifests} | {"logical"})
    m.family("pg_backup_backups", "gauge", "Committed backups in the repository, per kind and tier.",
             [({"kind": k, "tier": t}, sum(1 for b in manifests if b.kind == k and b.tier == t))
              for k in kinds for t in TIERS])
    if probes is not None:
        _probe_metrics(m, probes, now)
    return m.text()


def _parse_time(text: Any) -> Optional[dt.datetime]:
    try:
        return dt.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def _ts(t: Optional[dt.datetime]) -> Optional[float]:
    return round(t.timestamp(), 3) if t else None


def _probe_metrics(m: _Metrics, p: Probes, now: dt.datetime) -> None:
    m.family("pg_backup_storage_up", "gauge", "1 if the repository answered, 0 if not.",
             [({}, 0 if p.storage_error else 1)] if (p.storage or p.storage_error) else [])
    if p.disk_free_fraction is not None:
        m.family("pg_backup_disk_free_ratio", "gauge", "Free fraction of the filesystem of the agent's state directory.",
                 [({}, round(p.disk_free_fraction, 4))])
    if p.wal is not None and p.wal.error is None:
        w = p.wal
        m.family("pg_backup_wal_segments", "gauge", "WAL segments in the archive.", [({}, w.segments)])
        m.family("pg_backup_wal_newest_archived_timestamp_seconds", "gauge",
                 "Time the newest archived WAL segment was stored.", [({}, _ts(w.newest_modified))])
        m.family("pg_backup_wal_newest_archived_age_seconds", "gauge", "Age of the newest archived WAL segment.",
                 [({}, round(max(0.0, (now - w.newest_modified).total_seconds()), 1) if w.newest_modified else None)])
        m.family("pg_backup_wal_gaps", "gauge", "Gaps (missing ranges) in the WAL archive since the oldest base backup.",
                 [({}, len(w.gaps))])
        m.family("pg_backup_wal_conflicts", "gauge", "Recorded WAL pushes that met different content under one name.",
                 [({}, len(w.conflicts))])
    a = p.archiver
    if a is not None:
        m.family("pg_backup_archiver_archived_total", "counter",
                 "WAL files PostgreSQL archived successfully (pg_stat_archiver.archived_count).", [({}, a.archived_count)])
        m.family("pg_backup_archiver_failed_total", "counter",
                 "Failed archive attempts (pg_stat_archiver.failed_count).", [({}, a.failed_count)])
        m.family("pg_backup_archiver_last_archived_timestamp_seconds", "gauge",
                 "Time of PostgreSQL's last successful archive.", [({}, _ts(a.last_archived_time))])
        m.family("pg_backup_archiver_last_failed_timestamp_seconds", "gauge",
                 "Time of PostgreSQL's last failed archive attempt.", [({}, _ts(a.last_failed_time))])
    d = p.last_drill
    if d:
        started = d.get("started_at")
        m.family("pg_backup_last_drill_timestamp_seconds", "gauge", "Start time of the newest disaster-recovery drill.",
                 [({}, _ts(_parse_time(started)))])
        m.family("pg_backup_last_drill_rto_seconds", "gauge", "RTO measured by the newest drill.",
                 [({}, (d.get("rto") or {}).get("seconds"))])
        m.family("pg_backup_last_drill_rpo_seconds", "gauge", "RPO measured by the newest drill.",
                 [({}, (d.get("rpo") or {}).get("seconds"))])
        m.family("pg_backup_last_drill_success", "gauge", "1 if the newest drill met its targets and checks, else 0.",
                 [({}, 1 if d.get("passed") else 0)])
    if p.verifications:
        passed = [r for r in p.verifications if r.passed]
        m.family("pg_backup_last_restore_verification_timestamp_seconds", "gauge",
                 "Time of the last successful restore verification.", [({}, _ts(passed[-1].when) if passed else None)])
        m.family("pg_backup_last_restore_verification_success", "gauge",
                 "1 if the newest restore verification passed, 0 if it failed.",
                 [({}, 1 if p.verifications[-1].passed else 0)])


# -- gathering the probes --------------------------------------------------------------------------

def gather(ctx: Any) -> Tuple[List[Manifest], Probes]:
    """Everything :func:`evaluate` needs, from storage, PostgreSQL and local files. Never raises for
    an unreachable part: what cannot be probed becomes an error the evaluation reports."""
    from .errors import PgBackupError

    settings = ctx.settings
    probes = Probes(last_runs=last_runs_from_audit(settings.audit_log_path))
    manifests: List[Manifest] = []
    try:
        probes.storage = ctx.storage.check()
        manifests = ctx.repo.manifests()
    except PgBackupError as exc:
        probes.storage_error = exc.message
    if settings.repository.type == "s3":
        probes.configured_region = settings.repository.s3.region
    try:
        st = os.statvfs(settings.paths.state_dir)
        probes.disk_free_fraction = st.f_bavail / st.f_blocks if st.f_blocks else None
    except OSError:
        pass
    if probes.storage_error is None:
        probes.wal = probe_wal_archive(ctx, manifests)
        try:
            from .verify_restore import verification_history

            probes.verifications = verification_history(ctx.storage, ctx.repo.root)
        except PgBackupError as exc:
            probes.verifications_error = exc.message
        probes.last_drill = _newest_drill(ctx)
    try:
        probes.archiver = probe_archiver(ctx)
    except PgBackupError as exc:
        probes.archiver_error = exc.message
    return manifests, probes


def _newest_drill(ctx: Any) -> Optional[Dict[str, Any]]:
    from .drill import DRILLS_DIR
    from .errors import PgBackupError

    try:
        keys = [o.key for o in ctx.storage.list(f"{ctx.repo.root}{DRILLS_DIR}") if o.key.endswith("/report.json")]
        if not keys:
            return None
        doc = json.loads(ctx.storage.get_bytes(max(keys)))
        return doc if isinstance(doc, dict) else None
    except (PgBackupError, ValueError):
        return None


def probe_archiver(ctx: Any) -> ArchiverProbe:
    """pg_stat_archiver and the WAL position; remembers failed_count for the next run's comparison."""
    with ctx.pg.connect() as conn:
        row = conn.execute(
            "SELECT pg_is_in_recovery(), current_setting('archive_mode'), current_setting('archive_command'),"
            " archived_count, failed_count, last_archived_wal, last_archived_time, last_failed_wal,"
            " last_failed_time, stats_reset,"
            " CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,"
            " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')"
            " FROM pg_stat_archiver").fetchone()
    arch = ArchiverProbe(in_recovery=row[0], archive_mode=row[1], archive_command=row[2] or "",
                         archived_count=int(row[3]), failed_count=int(row[4]), last_archived_wal=row[5],
                         last_archived_time=row[6], last_failed_wal=row[7], last_failed_time=row[8], stats_reset=row[9],
                         current_lsn=lsn_to_int(row[10]) if row[10] else None, wal_segment_size=int(row[11]))
    state = _read_state(ctx.settings.paths.state_dir)
    arch.previous_failed_count = state.get("archiver_failed_count")
    arch.previous_stats_reset = state.get("archiver_stats_reset")
    _write_state(ctx.settings.paths.state_dir, {"archiver_failed_count": arch.failed_count,
                                                "archiver_stats_reset": _iso(arch.stats_reset) if arch.stats_reset
                                                else None})
    return arch


def _read_state(state_dir: str) -> Dict[str, Any]:
    try:
        with open(os.path.join(state_dir, STATE_FILE), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_state(state_dir: str, data: Dict[str, Any]) -> None:
    """Best effort (0600, atomic rename): health must work on a read-only state directory too."""
    path = os.path.join(state_dir, STATE_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def probe_wal_archive(ctx: Any, manifests: List[Manifest]) -> Optional[WalProbe]:
    """The WAL archive's newest segment, gaps since the oldest base backup and conflicting pushes;
    None when the repository has no WAL archive code or no WAL at all and no physical backup."""
    try:
        from .walarchive import WalArchive
    except ImportError:
        return None
    from .errors import PgBackupError

    probe = WalProbe()
    try:
        archive = WalArchive(ctx.storage, ctx.cluster)
        entries = [e for e in archive.entries() if getattr(e, "kind", "segment") == "segment"]
        probe.segments = len(entries)
        if not entries and not any(m.kind == "physical" for m in manifests):
            return None
        newest = archive.newest_segment()
        if newest is not None:
            probe.newest_segment, probe.newest_modified = newest.name, newest.modified
        probe.gaps, probe.missing_segments = _describe_gaps(archive, manifests)
        probe.conflicts = _conflicts(archive)
    except PgBackupError as exc:
        probe.error = exc.message
    return probe


def _describe_gaps(archive: Any, manifests: List[Manifest]) -> Tuple[List[str], int]:
    physical = [m for m in manifests if m.kind == "physical" and m.start_wal]
    since = min((m.start_wal for m in physical), default=None)  # type: ignore[type-var]
    gaps = archive.gaps(since) if since else archive.gaps()
    described, missing = [], 0
    for gap in gaps:
        first, last = (gap if isinstance(gap, tuple) else (gap, gap))
        described.append(f"{first}..{last}" if first != last else str(first))
        missing += 1
    return described, missing


def _conflicts(archive: Any) -> List[str]:
    finder = getattr(archive, "conflicts", None)
    if finder is None:
        return []
    return [str(c) for c in finder()]
