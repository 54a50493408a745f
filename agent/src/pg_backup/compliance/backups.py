"""The backups part of a compliance report: every stored backup by tier with its dates, size, key,
checksum state, storage class, Object Lock and expiry, and the oldest recoverable point per database."""
from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List, Optional

from .. import retention
from ..manifest import Manifest, iso
from ..storage.base import ObjectInfo
from .expiry import Expiry, expiries

TIERS = ("daily", "weekly", "monthly")


def backup_refs(manifests: List[Manifest]) -> List[retention.BackupRef]:
    """The planner's view of the manifests: exactly what ``prune`` hands it."""
    return [retention.BackupRef(m.backup_id, m.kind, m.tier, m.started,
                                tuple(m.incremental.members) if m.incremental else ()) for m in manifests]


def stored_objects(storage: Any, prefix: str, locked: bool) -> List[ObjectInfo]:
    """The objects of one backup; with Object Lock on the bucket each is inspected for its retention."""
    listed = list(storage.list(prefix))
    if not locked:
        return listed
    return [storage.head(o.key) or o for o in listed]


def checksum_state(m: Manifest, checks: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The newest conclusive check of ``m``'s stored objects (``verify`` re-hash or ``verify --restore``)."""
    mine = [c for c in checks if c["backup_id"] == m.backup_id
            or (c["backup_id"] == "*" and c["at"] >= m.finished)]
    if not mine:
        return {"state": "not verified", "at": None, "by": None}
    last = max(mine, key=lambda c: c["at"])
    return {"state": "passed" if last["passed"] else "FAILED", "at": iso(last["at"]), "by": last["by"]}


def _lock(objects: List[ObjectInfo]) -> Optional[Dict[str, Any]]:
    locked = [o for o in objects if o.lock_mode and o.lock_until]
    if not locked:
        return None
    # The backup can be deleted only when its last object can: the latest retain-until date counts.
    last = max(locked, key=lambda o: o.lock_until)
    return {"mode": last.lock_mode, "retain_until": iso(last.lock_until),
            "objects_locked": len(locked), "objects": len(objects)}


def backup_entry(m: Manifest, objects: List[ObjectInfo], expiry: Expiry, checks: List[Dict[str, Any]]) -> Dict[str, Any]:
    data = [o for o in objects if not o.key.endswith("/manifest.json")] or objects
    classes = sorted({o.storage_class or "STANDARD" for o in data})
    lock = _lock(objects)
    return {
        "backup_id": m.backup_id, "kind": m.kind, "tier": m.tier, "host": m.hostname,
        "started_at": m.started_at, "finished_at": m.finished_at,
        "size_bytes": m.stored_bytes, "raw_bytes": m.raw_bytes, "objects": len(m.objects),
        "databases": [d.name for d in m.databases],
        "server_version": m.server_version,
        "encryption": {"mode": m.encryption.mode, "cipher": m.encryption.cipher,
                       "key_fingerprint": m.encryption.fingerprint},
        "incremental_of": m.incremental.parent if m.incremental else None,
        "checksum": checksum_state(m, checks),
        "storage_class": ", ".join(classes) if classes else None,
        "object_lock": lock,
        "expires_at": iso(expiry.expires_at) if expiry.expires_at else None,
        "expiry_basis": expiry.basis, "kept_now_because": expiry.kept_now,
        "deletable_from": _deletable(expiry.expires_at, lock),
        "erasure_through": m.extra.get("erasure_through"),
    }


def _deletable(expires: Optional[dt.datetime], lock: Optional[Dict[str, Any]]) -> Optional[str]:
    """When the backup is really gone: its expiry, or later if Object Lock still protects it then."""
    if expires is None:
        return None
    if lock and lock["retain_until"] > iso(expires):
        return lock["retain_until"]
    return iso(expires)


def tiers_section(ctx: Any, manifests: List[Manifest], checks: List[Dict[str, Any]], locked: bool,
                  now: dt.datetime) -> Dict[str, Any]:
    plan = expiries(backup_refs(manifests), ctx.settings.retention, now)
    tiers: Dict[str, Any] = {t: {"count": 0, "size_bytes": 0, "backups": []} for t in TIERS}
    for m in manifests:
        objects = stored_objects(ctx.storage, ctx.repo.backup_prefix(m.backup_id), locked)
        entry = backup_entry(m, objects, plan[m.backup_id], checks)
        tier = tiers.setdefault(m.tier, {"count": 0, "size_bytes": 0, "backups": []})
        tier["backups"].append(entry)
        tier["count"] += 1
        tier["size_bytes"] += entry["size_bytes"]
    return tiers


def recoverable_section(manifests: List[Manifest], window: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The oldest point each database can be brought back to: its oldest logical backup, or the start of
    the point-in-time window (which covers every database of the cluster), whichever is older."""
    rows: Dict[str, Dict[str, Any]] = {}
    for m in manifests:
        if m.kind != "logical":
            continue
        for d in m.databases:
            rows.setdefault(d.name, {"database": d.name, "oldest_point": m.started_at, "backup_id": m.backup_id,
                                     "kind": "logical", "logical_backups": 0})
            rows[d.name]["logical_backups"] += 1
    if window:
        for row in rows.values():
            if window["start_time"] < row["oldest_point"]:
                row.update(oldest_point=window["start_time"], backup_id=window["start_backup_id"], kind="pitr")
    result = sorted(rows.values(), key=lambda r: r["database"])
    if window:
        result.append({"database": "(whole cluster)", "oldest_point": window["start_time"],
                       "backup_id": window["start_backup_id"], "kind": "pitr", "logical_backups": None})
    return {"databases": result, "pitr_window": window}
