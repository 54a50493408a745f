"""The one verdict of :func:`~.checks.evaluate` in every format: the JSON document, text lines, a
Nagios plugin line with perfdata, a Prometheus textfile."""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..config import TIERS
from ..manifest import Manifest
from .checks import Check, Probes, database_sizes, worst

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
              for name, size in sorted(database_sizes(newest[(k, t)]).items())])
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
