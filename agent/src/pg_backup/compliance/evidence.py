"""The evidence part of a compliance report: restore verifications and drills against the targets,
the erasure register's completion dates, the audit trail of the period and where the data lives."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Callable, Dict, List, Optional

from ..audit import read_remote
from ..errors import PgBackupError
from ..erasure.register import erasure_id_time
from ..manifest import Manifest, iso, parse_iso
from ..verification.records import VerificationRecord, drill_history

#: Operations the audit trail of a report lists (who backed up, restored, pruned, verified, erased).
AUDITED_OPERATIONS = ("backup", "restore", "pitr", "prune", "verify", "drill", "erasure-add")
#: How far back before the period's end a ``verify`` counts for the checksum state of a backup.
CHECKSUM_LOOKBACK_DAYS = 92


def audit_trail(records: List[Dict[str, Any]], since: dt.datetime) -> Dict[str, Any]:
    rows = []
    for r in records:
        if r.get("operation") not in AUDITED_OPERATIONS or str(r.get("started_at") or "") < iso(since):
            continue
        rows.append({"started_at": r.get("started_at"), "operation": r.get("operation"),
                     "who": f"{r.get('os_user', '?')}@{r.get('host', '?')}", "result": r.get("result"),
                     "exit_code": r.get("exit_code"), "backup_id": r.get("backup_id") or _verified(r),
                     "erasure_id": r.get("erasure_id"), "restored_into": r.get("restored_into"),
                     "erasures_skipped": r.get("erasures_skipped"), "error": r.get("error")})
    counts: Dict[str, int] = {}
    for row in rows:
        counts[row["operation"]] = counts.get(row["operation"], 0) + 1
    return {"records": rows, "count": len(rows), "by_operation": counts}


def _verify_targets(record: Dict[str, Any]) -> Optional[List[str]]:
    """What a ``verify`` run named on its command line: ``["*"]`` for ``--all``, a backup id, or None."""
    args = [str(a) for a in record.get("arguments") or []]
    if record.get("operation") != "verify" or "verify" not in args:
        return None
    tail = args[args.index("verify") + 1:]
    named = [a for a in tail if not a.startswith("-")]
    return ["*"] if "--all" in tail else named[:1] or None


def _verified(record: Dict[str, Any]) -> Optional[str]:
    targets = _verify_targets(record)
    return None if not targets else "all backups" if targets == ["*"] else targets[0]


def checksum_checks(records: List[Dict[str, Any]], verifications: List[VerificationRecord]) -> List[Dict[str, Any]]:
    """Conclusive checks of stored objects: ``verify`` runs (the audit trail: exit 0 passed, 4 failed; a
    ``--all`` run counts for every backup finished before it) and every ``verify --restore``."""
    checks = [{"backup_id": v.backup_id, "at": v.when, "passed": v.passed, "by": "verify --restore"}
              for v in verifications]
    for r in records:
        if r.get("operation") != "verify" or r.get("exit_code") not in (0, 4) or not r.get("started_at"):
            continue
        args = [str(a) for a in r.get("arguments") or []]
        if "--restore" in args:
            continue                       # recorded under audit/verifications/ already
        for backup_id in _verify_targets(r) or []:
            checks.append({"backup_id": backup_id, "at": parse_iso(r["started_at"]), "passed": r["exit_code"] == 0,
                           "by": "verify --deep" if "--deep" in args else "verify"})
    return checks


def verification_section(storage: Any, verifications: List[VerificationRecord], period_since: dt.datetime,
                         rto_target_minutes: float) -> Dict[str, Any]:
    in_period = [v for v in verifications if v.when >= period_since]
    last: Optional[Dict[str, Any]] = None
    if verifications:
        newest = verifications[-1]
        last = {"backup_id": newest.backup_id, "at": iso(newest.when), "passed": newest.passed, "key": newest.key}
        try:
            doc = json.loads(storage.get_bytes(newest.key))
            seconds = doc.get("duration_seconds")
            last.update(kind=doc.get("kind"), tier=doc.get("tier"), duration_seconds=seconds,
                        databases=doc.get("databases"), failures=doc.get("failures") or [],
                        within_rto_target=None if seconds is None else seconds <= rto_target_minutes * 60)
        except (PgBackupError, ValueError) as exc:
            last["detail_error"] = str(exc)
    return {"last": last, "in_period": len(in_period), "passed_in_period": len([v for v in in_period if v.passed]),
            "failed_in_period": len([v for v in in_period if not v.passed]), "rto_target_minutes": rto_target_minutes}


def drill_section(repo: Any, warn: Callable[[str], None], period_since: dt.datetime, rto_target: float,
                  rpo_target: float) -> Dict[str, Any]:
    history = drill_history(repo, warn)
    rows = [{"drill_id": h["drill_id"], "started_at": h.get("started_at"), "passed": bool(h.get("passed")),
             "rto_seconds": (h.get("rto") or {}).get("seconds"), "rto_met": (h.get("rto") or {}).get("met"),
             "rpo_seconds": (h.get("rpo") or {}).get("seconds"), "rpo_met": (h.get("rpo") or {}).get("met"),
             "rto_target_minutes": (h.get("targets") or {}).get("rto_minutes"),
             "rpo_target_minutes": (h.get("targets") or {}).get("rpo_minutes"),
             "backup_id": h.get("backup_id")} for h in history]
    return {"last": rows[-1] if rows else None, "count": len(rows),
            "in_period": len([r for r in rows if str(r["started_at"] or "") >= iso(period_since)]),
            "targets": {"rto_minutes": rto_target, "rpo_minutes": rpo_target}, "history": rows}


def contains_erasure(m: Manifest, erasure_id: str) -> bool:
    """Whether backup ``m`` still holds the data erasure ``erasure_id`` removed: the register it claims
    (``erasure_through``, docs/erasure.md) predates the erasure; a manifest from before the register
    holds what it started before."""
    if "erasure_through" in m.extra:
        claimed = m.extra["erasure_through"]
        return claimed is None or claimed < erasure_id
    return m.started < erasure_id_time(erasure_id)


def erasure_section(erasure_ids: List[str], manifests: List[Manifest], backups: Dict[str, Dict[str, Any]],
                    wal_hours: Optional[int], now: dt.datetime) -> Dict[str, Any]:
    """For each record, the backups that still hold the erased data and the date on which the last of
    them is gone (its expiry, or its Object Lock retain-until date if later; with a WAL archive, not
    before the point-in-time window has moved past the erasure). Record contents are not read: they
    name data subjects, and a host in public-key mode cannot decrypt them ('erasure list' shows them)."""
    rows = []
    for erasure_id in erasure_ids:
        recorded = erasure_id_time(erasure_id)
        holding = [m.backup_id for m in manifests if contains_erasure(m, erasure_id)]
        dates = [backups[b]["deletable_from"] for b in holding]
        if wal_hours is not None:
            dates.append(iso(recorded + dt.timedelta(hours=wal_hours)))
        complete: Optional[str] = None if any(d is None for d in dates) else max(dates, default=iso(recorded))
        rows.append({"erasure_id": erasure_id, "recorded_at": iso(recorded), "backups_holding_data": holding,
                     "complete_at": complete, "complete": complete is not None and complete <= iso(now)})
    dated = [r["complete_at"] for r in rows]
    return {"count": len(rows), "records": rows,
            "complete_everywhere_at": None if any(d is None for d in dated) else max(dated, default=None)}


def locality_section(settings: Any, storage: Any, hostname: str) -> Dict[str, Any]:
    """Where the backups are: the storage's own description (``check``: a bucket reports its real region)
    against the region the configuration requires (health checks the same)."""
    probe = storage.check(wait=False)
    configured, actual = settings.repository.required_region(), probe.get("region")
    if not probe.get("bucket"):
        return {"type": "local", "location": storage.location, "host": hostname, "configured_region": None,
                "actual_region": None, "matches": None,
                "note": "a local repository: the data stays on this host (and wherever its file system is copied)"}
    return {"type": "s3", "location": storage.location, "bucket": probe.get("bucket"), "endpoint": probe.get("endpoint"),
            "configured_region": configured, "actual_region": actual,
            "matches": None if not configured or not actual else configured == actual}


def read_audit(repo: Any, since: dt.datetime, until: dt.datetime,
               warn: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """Audit records from CHECKSUM_LOOKBACK_DAYS before the end (for checksum states) to the end."""
    return read_remote(repo, min(since, until - dt.timedelta(days=CHECKSUM_LOOKBACK_DAYS)), until, warn)
