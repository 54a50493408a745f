"""The one verdict of :func:`~.checks.evaluate` in every format: the JSON document, text lines, a
Nagios plugin line with perfdata, a Prometheus textfile."""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..config import TIERS
from ..manifest import Manifest
from .checks import Check, Probes, database_sizes, size_baseline, worst
from .keys import expiry_samples

ORDER = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
NAGIOS_CODES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}


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


# Every metric the Prometheus output can carry: name -> (type, help). _Metrics.family accepts only these
# names, so this table is the complete list; the monitoring role's alerting rules and Grafana dashboard
# are checked against it (tests/roles/test_alert_rules.py), so the three cannot drift apart.
METRICS: Dict[str, Tuple[str, str]] = {
    "pg_backup_health_status": ("gauge", "Overall health: 0 ok, 1 warning, 2 critical, 3 unknown."),
    "pg_backup_health_timestamp_seconds": ("gauge", "Time this health evaluation ran."),
    "pg_backup_check_status": ("gauge", "Status of one health check: 0 ok, 1 warning, 2 critical, 3 unknown."),
    "pg_backup_last_backup_timestamp_seconds": ("gauge", "Start time of the newest backup of a kind and tier."),
    "pg_backup_last_backup_age_seconds": ("gauge", "Age of the newest backup of a kind and tier."),
    "pg_backup_backup_max_age_seconds": ("gauge", "Age beyond which the newest backup of a kind and tier is "
                                                  "overdue (health.max_age_hours; critical at twice that)."),
    "pg_backup_last_backup_stored_bytes": ("gauge", "Stored (compressed, encrypted) size of the newest backup of a "
                                                    "kind and tier."),
    "pg_backup_size_band_lower_bytes": ("gauge", "Lower end of the expected stored size of the newest backup of a kind "
                                                 "and tier: the median of the previous ones minus "
                                                 "health.size_change_percent."),
    "pg_backup_size_band_upper_bytes": ("gauge", "Upper end of the expected stored size of the newest backup of a kind "
                                                 "and tier: the median of the previous ones plus "
                                                 "health.size_change_percent."),
    "pg_backup_last_backup_database_stored_bytes": ("gauge", "Stored size of each database's dump in the newest "
                                                             "logical backup of a tier."),
    "pg_backup_backups": ("gauge", "Committed backups in the repository, per kind and tier."),
    "pg_backup_storage_up": ("gauge", "1 if the repository answered, 0 if not."),
    "pg_backup_disk_free_ratio": ("gauge", "Free fraction of the filesystem of the agent's state directory."),
    "pg_backup_wal_segments": ("gauge", "WAL segments in the archive."),
    "pg_backup_wal_newest_archived_timestamp_seconds": ("gauge", "Time the newest archived WAL segment was stored."),
    "pg_backup_wal_newest_archived_age_seconds": ("gauge", "Age of the newest archived WAL segment."),
    "pg_backup_wal_gaps": ("gauge", "Gaps (missing ranges) in the WAL archive since the oldest base backup."),
    "pg_backup_wal_conflicts": ("gauge", "Recorded WAL pushes that met different content under one name."),
    "pg_backup_archiver_archived_total": ("counter", "WAL files PostgreSQL archived successfully "
                                                     "(pg_stat_archiver.archived_count)."),
    "pg_backup_archiver_failed_total": ("counter", "Failed archive attempts (pg_stat_archiver.failed_count)."),
    "pg_backup_archiver_last_archived_timestamp_seconds": ("gauge", "Time of PostgreSQL's last successful archive."),
    "pg_backup_archiver_last_failed_timestamp_seconds": ("gauge", "Time of PostgreSQL's last failed archive attempt."),
    "pg_backup_last_drill_timestamp_seconds": ("gauge", "Start time of the newest disaster-recovery drill."),
    "pg_backup_last_drill_rto_seconds": ("gauge", "RTO measured by the newest drill."),
    "pg_backup_last_drill_rpo_seconds": ("gauge", "RPO measured by the newest drill."),
    "pg_backup_drill_rto_target_seconds": ("gauge", "RTO target of the newest drill (drill.rto_target_minutes)."),
    "pg_backup_drill_rpo_target_seconds": ("gauge", "RPO target of the newest drill (drill.rpo_target_minutes)."),
    "pg_backup_last_drill_success": ("gauge", "1 if the newest drill met its targets and checks, else 0."),
    "pg_backup_last_restore_verification_timestamp_seconds": ("gauge", "Time of the last successful restore "
                                                                       "verification."),
    "pg_backup_last_restore_verification_success": ("gauge", "1 if the newest restore verification passed, 0 if it "
                                                             "failed."),
    "pg_backup_audit_chain_breaks": ("gauge", "Breaks found in the audit hash chain (gaps, deleted or edited records) "
                                              "since the last verified head; 0 when intact."),
    "pg_backup_key_expiry_seconds": ("gauge", "Seconds until an OpenPGP key the host writes with expires (negative "
                                              "once expired; absent for a key that never expires)."),
}


class _Metrics:
    """Prometheus text format 0.0.4: each family once, HELP and TYPE first (from :data:`METRICS`), then
    its samples."""

    def __init__(self, cluster: str):
        self.cluster = cluster
        self.out: List[str] = []

    def family(self, name: str, samples: Iterable[Tuple[Dict[str, str], Optional[float]]]) -> None:
        kind, help_text = METRICS[name]
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
    """Metrics for node_exporter's textfile collector; every name is in :data:`METRICS`, starts with
    ``pg_backup_`` and carries a ``cluster`` label; ``promtool check metrics`` accepts the output."""
    m = _Metrics(doc["cluster"])
    m.family("pg_backup_health_status", [({}, ORDER[doc["status"]])])
    m.family("pg_backup_health_timestamp_seconds", [({}, round(now.timestamp(), 3))])
    m.family("pg_backup_check_status", [({"check": c["name"]}, ORDER[c["status"]]) for c in doc["checks"]])
    newest: Dict[Tuple[str, str], Manifest] = {}
    for b in manifests:
        key = (b.kind, b.tier)
        if key not in newest or b.started_at > newest[key].started_at:
            newest[key] = b
    keys = sorted(newest)
    m.family("pg_backup_last_backup_timestamp_seconds",
             [({"kind": k, "tier": t}, round(newest[(k, t)].started.timestamp())) for k, t in keys])
    m.family("pg_backup_last_backup_age_seconds",
             [({"kind": k, "tier": t}, round((now - newest[(k, t)].started).total_seconds())) for k, t in keys])
    limits = _tier_limits(doc)
    m.family("pg_backup_backup_max_age_seconds",
             [({"kind": k, "tier": t}, limits[("freshness", k, t)] * 3600) for k, t in sorted(
                 {(k, t) for kind_of, k, t in limits if kind_of == "freshness"})])
    m.family("pg_backup_last_backup_stored_bytes",
             [({"kind": k, "tier": t}, newest[(k, t)].stored_bytes) for k, t in keys])
    bands = []
    for k, t in keys:
        baseline = size_baseline([b for b in manifests if (b.kind, b.tier) == (k, t)], newest[(k, t)])
        if baseline is not None and ("size", k, t) in limits:
            bands.append((k, t, baseline, limits[("size", k, t)] / 100))
    m.family("pg_backup_size_band_lower_bytes",
             [({"kind": k, "tier": t}, round(max(0.0, base * (1 - r)))) for k, t, base, r in bands])
    m.family("pg_backup_size_band_upper_bytes", [({"kind": k, "tier": t}, round(base * (1 + r))) for k, t, base, r in bands])
    m.family("pg_backup_last_backup_database_stored_bytes",
             [({"tier": t, "database": name}, size) for k, t in keys if k == "logical"
              for name, size in sorted(database_sizes(newest[(k, t)]).items())])
    kinds = sorted({b.kind for b in manifests} | {"logical"})
    m.family("pg_backup_backups",
             [({"kind": k, "tier": t}, sum(1 for b in manifests if b.kind == k and b.tier == t))
              for k in kinds for t in TIERS])
    m.family("pg_backup_audit_chain_breaks", [({}, c.get("value")) for c in doc["checks"] if c["name"] == "audit_chain"])
    if probes is not None:
        _probe_metrics(m, probes, now)
    return m.text()


def _tier_limits(doc: Dict[str, Any]) -> Dict[Tuple[str, str, str], float]:
    """(check, kind, tier) -> the warning limit of the freshness_* (hours) and size_* (percent) checks
    of a tier, as the evaluation used them."""
    limits = {}
    for c in doc["checks"]:
        labels = c.get("labels") or {}
        what = c["name"].split("_", 1)[0]
        if what in ("freshness", "size") and "tier" in labels and "database" not in labels \
                and c.get("warning") is not None:
            limits[(what, labels.get("kind", "logical"), labels["tier"])] = float(c["warning"])
    return limits


def _parse_time(text: Any) -> Optional[dt.datetime]:
    try:
        return dt.datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def _ts(t: Optional[dt.datetime]) -> Optional[float]:
    return round(t.timestamp(), 3) if t else None


def _minutes_as_seconds(v: Any) -> Optional[float]:
    return float(v) * 60 if isinstance(v, (int, float)) else None


def _probe_metrics(m: _Metrics, p: Probes, now: dt.datetime) -> None:
    m.family("pg_backup_storage_up", [({}, 0 if p.storage_error else 1)] if (p.storage or p.storage_error) else [])
    if p.disk_free_fraction is not None:
        m.family("pg_backup_disk_free_ratio", [({}, round(p.disk_free_fraction, 4))])
    if p.wal is not None and p.wal.error is None:
        w = p.wal
        m.family("pg_backup_wal_segments", [({}, w.segments)])
        m.family("pg_backup_wal_newest_archived_timestamp_seconds", [({}, _ts(w.newest_modified))])
        m.family("pg_backup_wal_newest_archived_age_seconds",
                 [({}, round(max(0.0, (now - w.newest_modified).total_seconds()), 1) if w.newest_modified else None)])
        m.family("pg_backup_wal_gaps", [({}, len(w.gaps))])
        m.family("pg_backup_wal_conflicts", [({}, len(w.conflicts))])
    a = p.archiver
    if a is not None:
        m.family("pg_backup_archiver_archived_total", [({}, a.archived_count)])
        m.family("pg_backup_archiver_failed_total", [({}, a.failed_count)])
        m.family("pg_backup_archiver_last_archived_timestamp_seconds", [({}, _ts(a.last_archived_time))])
        m.family("pg_backup_archiver_last_failed_timestamp_seconds", [({}, _ts(a.last_failed_time))])
    d = p.last_drill
    if d:
        targets = d.get("targets") or {}
        m.family("pg_backup_last_drill_timestamp_seconds", [({}, _ts(_parse_time(d.get("started_at"))))])
        m.family("pg_backup_last_drill_rto_seconds", [({}, (d.get("rto") or {}).get("seconds"))])
        m.family("pg_backup_last_drill_rpo_seconds", [({}, (d.get("rpo") or {}).get("seconds"))])
        m.family("pg_backup_drill_rto_target_seconds", [({}, _minutes_as_seconds(targets.get("rto_minutes")))])
        m.family("pg_backup_drill_rpo_target_seconds", [({}, _minutes_as_seconds(targets.get("rpo_minutes")))])
        m.family("pg_backup_last_drill_success", [({}, 1 if d.get("passed") else 0)])
    if p.verifications:
        passed = [r for r in p.verifications if r.passed]
        m.family("pg_backup_last_restore_verification_timestamp_seconds",
                 [({}, _ts(passed[-1].when) if passed else None)])
        m.family("pg_backup_last_restore_verification_success", [({}, 1 if p.verifications[-1].passed else 0)])
    m.family("pg_backup_key_expiry_seconds", expiry_samples(p.keys, now))
