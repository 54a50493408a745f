"""Health: one evaluation (a pure function of manifests, audit records, probes and a clock), several
renderings (text, JSON, Nagios with perfdata, Prometheus textfile).

This covers the logical-backup checks; WAL archiving and restore-verification checks join the same
evaluation when those features land (DESIGN §8).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from .config import TIERS, HealthSettings
from .manifest import Manifest

ORDER = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
NAGIOS_CODES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}


@dataclass
class Check:
    name: str
    status: str
    message: str
    value: Optional[float] = None
    warning: Optional[float] = None
    critical: Optional[float] = None
    labels: Dict[str, str] = field(default_factory=dict)


@dataclass
class Probes:
    """What the evaluation needs from the outside world, gathered by the caller."""

    storage: Optional[Dict[str, Any]] = None      # Storage.check() result
    storage_error: Optional[str] = None
    configured_region: Optional[str] = None
    disk_free_fraction: Optional[float] = None
    last_runs: Dict[str, Dict[str, Any]] = field(default_factory=dict)   # operation[:tier] -> audit record


def worst(statuses: List[str]) -> str:
    # "unknown" ranks below critical for alerting but above ok.
    rank = {"ok": 0, "unknown": 1, "warning": 2, "critical": 3}
    return max(statuses, key=lambda s: rank[s]) if statuses else "unknown"


def evaluate(manifests: List[Manifest], settings: HealthSettings, probes: Probes, now: dt.datetime,
             max_age_override: Optional[Dict[str, float]] = None) -> List[Check]:
    checks: List[Check] = []
    limits = {t: float(getattr(settings.max_age_hours, t)) for t in TIERS}
    limits.update(max_age_override or {})
    for tier in TIERS:
        of_tier = [m for m in manifests if m.tier == tier and m.kind == "logical"]
        limit = limits[tier]
        if not of_tier:
            status = "critical" if tier == "daily" else "warning"
            checks.append(Check(f"freshness_{tier}", status, f"no {tier} backup in the repository",
                                None, limit, 2 * limit, {"tier": tier}))
            continue
        newest = max(of_tier, key=lambda m: m.started_at)
        age = (now - newest.started).total_seconds() / 3600
        status = "critical" if age > 2 * limit else "warning" if age > limit else "ok"
        checks.append(Check(f"freshness_{tier}", status,
                            f"newest {tier} backup {newest.backup_id} is {age:.1f} h old (limit {limit:g} h)",
                            round(age, 3), limit, 2 * limit, {"tier": tier}))
        checks.append(_size_check(of_tier, newest, tier, settings.size_change_percent))
    for key, record in sorted(probes.last_runs.items()):
        if record.get("result") == "failure":
            status = "critical" if key.startswith("backup") else "warning"
            checks.append(Check(f"last_run_{key.replace(':', '_')}", status,
                                f"last {key} at {record.get('started_at')} failed: {record.get('error', 'no detail')}",
                                labels={"operation": key}))
        else:
            checks.append(Check(f"last_run_{key.replace(':', '_')}", "ok",
                                f"last {key} at {record.get('started_at')} succeeded", labels={"operation": key}))
    if probes.storage_error:
        checks.append(Check("storage", "critical", f"storage unreachable: {probes.storage_error}"))
    elif probes.storage is not None:
        actual = probes.storage.get("region")
        if probes.configured_region and actual and actual != probes.configured_region:
            checks.append(Check("storage", "critical", f"bucket is in region {actual}, configured "
                                f"{probes.configured_region}: backups are outside the required data locality"))
        else:
            checks.append(Check("storage", "ok", "storage reachable" + (f" (region {actual})" if actual else "")))
    if probes.disk_free_fraction is not None:
        free = probes.disk_free_fraction * 100
        limit = float(settings.min_free_disk_percent)
        checks.append(Check("local_disk", "warning" if free < limit else "ok",
                            f"{free:.1f} % free on the agent's state directory (minimum {limit:g} %)",
                            round(free, 2), limit, None))
    return checks


def _size_check(of_tier: List[Manifest], newest: Manifest, tier: str, percent: int) -> Check:
    previous = sorted((m for m in of_tier if m.started_at < newest.started_at), key=lambda m: m.started_at)[-7:]
    if not previous:
        return Check(f"size_{tier}", "ok", f"first {tier} backup: nothing to compare its size with",
                     newest.stored_bytes, labels={"tier": tier})
    median = statistics.median(m.stored_bytes for m in previous)
    change = 0.0 if median == 0 else (newest.stored_bytes - median) / median * 100
    status = "warning" if abs(change) > percent else "ok"
    return Check(f"size_{tier}", status,
                 f"newest {tier} backup is {newest.stored_bytes} bytes, {change:+.0f} % from the median of the "
                 f"previous {len(previous)} ({median:.0f} bytes; limit ±{percent} %)",
                 round(change, 2), float(percent), None, {"tier": tier})


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
            key = f"backup:{tier}" if tier else op
        if record.get("result") == "skipped":
            continue
        runs[key] = record
    return runs


# -- renderings ------------------------------------------------------------------------------------

def document(cluster: str, checks: List[Check]) -> Dict[str, Any]:
    return {"cluster": cluster, "status": worst([c.status for c in checks]),
            "checks": [{k: v for k, v in asdict(c).items() if k != "labels" or v} for c in checks]}


def render_text(doc: Dict[str, Any]) -> List[str]:
    lines = [f"cluster {doc['cluster']}: {doc['status'].upper()}"]
    for c in sorted(doc["checks"], key=lambda c: -ORDER[c["status"]]):
        lines.append(f"  {c['status'].upper():<8} {c['name']}: {c['message']}")
    return lines


def render_nagios(doc: Dict[str, Any]) -> str:
    bad = [c for c in doc["checks"] if c["status"] != "ok"]
    summary = "; ".join(c["message"] for c in bad) if bad else f"{len(doc['checks'])} checks ok"
    perf = []
    for c in doc["checks"]:
        if c.get("value") is None:
            continue
        unit = "h" if c["name"].startswith("freshness") else "%" if c["name"] != "size" else ""
        warn = "" if c.get("warning") is None else f"{c['warning']:g}"
        crit = "" if c.get("critical") is None else f"{c['critical']:g}"
        perf.append(f"'{c['name']}'={c['value']:g}{unit};{warn};{crit}")
    return f"PG-BACKUP {doc['status'].upper()} - {doc['cluster']}: {summary}" + (" | " + " ".join(perf) if perf else "")


def render_prometheus(doc: Dict[str, Any], manifests: List[Manifest], now: dt.datetime) -> str:
    cluster = doc["cluster"].replace("\\", "\\\\").replace('"', '\\"')
    out = [
        "# HELP pg_backup_health_status Overall health: 0 ok, 1 warning, 2 critical, 3 unknown.",
        "# TYPE pg_backup_health_status gauge",
        f'pg_backup_health_status{{cluster="{cluster}"}} {ORDER[doc["status"]]}',
        "# HELP pg_backup_check_status Status of one health check: 0 ok, 1 warning, 2 critical, 3 unknown.",
        "# TYPE pg_backup_check_status gauge",
    ]
    for c in doc["checks"]:
        out.append(f'pg_backup_check_status{{cluster="{cluster}",check="{c["name"]}"}} {ORDER[c["status"]]}')
    out += ["# HELP pg_backup_last_backup_timestamp_seconds Start time of the newest backup of a tier.",
            "# TYPE pg_backup_last_backup_timestamp_seconds gauge"]
    newest: Dict[str, Manifest] = {}
    for m in manifests:
        if m.tier not in newest or m.started_at > newest[m.tier].started_at:
            newest[m.tier] = m
    for tier, m in sorted(newest.items()):
        out.append(f'pg_backup_last_backup_timestamp_seconds{{cluster="{cluster}",tier="{tier}"}} '
                   f'{m.started.timestamp():.0f}')
    out += ["# HELP pg_backup_last_backup_age_seconds Age of the newest backup of a tier.",
            "# TYPE pg_backup_last_backup_age_seconds gauge"]
    for tier, m in sorted(newest.items()):
        out.append(f'pg_backup_last_backup_age_seconds{{cluster="{cluster}",tier="{tier}"}} '
                   f'{(now - m.started).total_seconds():.0f}')
    out += ["# HELP pg_backup_last_backup_stored_bytes Stored (compressed, encrypted) size of the newest backup of a tier.",
            "# TYPE pg_backup_last_backup_stored_bytes gauge"]
    for tier, m in sorted(newest.items()):
        out.append(f'pg_backup_last_backup_stored_bytes{{cluster="{cluster}",tier="{tier}"}} {m.stored_bytes}')
    out += ["# HELP pg_backup_backups Committed backups in the repository, per tier.",
            "# TYPE pg_backup_backups gauge"]
    for tier in TIERS:
        out.append(f'pg_backup_backups{{cluster="{cluster}",tier="{tier}"}} '
                   f'{sum(1 for m in manifests if m.tier == tier)}')
    return "\n".join(out) + "\n"
