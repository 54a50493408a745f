"""Checksum verification of objects in an archived storage class (S3 GLACIER, DEEP_ARCHIVE).

Reading such an object needs a retrieval that takes minutes to 48 hours and costs money, so
``verify`` never asks for one on its own (GLACIER_IR and every other class are read as usual). What
the store reports without a retrieval is compared with the manifest instead: that the object
exists, its size, and its SHA-256 where the store keeps one for the whole object (an S3 additional
checksum). The backup is then "verified by metadata; content check pending a retrieval".

``verify --retrieve`` requests the retrieval of every archived object of every backup it verifies
in one pass and returns at once (the backups are "pending"); a later ``verify`` reads the objects
whose retrieval has finished (the store reports them restored) and checks their content as usual.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..manifest import StoredObject
from ..storage.base import ObjectInfo, Storage

#: ``ObjectInfo.archive_state`` values of an object that cannot be read now.
UNREADABLE_STATES = ("archived", "restoring")


def is_unreadable(info: Optional[ObjectInfo]) -> bool:
    return info is not None and info.archive_state in UNREADABLE_STATES


def metadata_entry(storage: Storage, key: str, obj: StoredObject, info: ObjectInfo, what: str) -> Dict[str, Any]:
    """The verification entry of one archived object, from what the store reports about it."""
    entry: Dict[str, Any] = {"object": obj.name, "size": obj.size, "sha256": obj.sha256, "ok": True,
                             "checked": "metadata", "storage_class": info.storage_class,
                             "archive_state": info.archive_state, "compared": ["size"]}
    if info.size != obj.size:
        entry.update(ok=False, error=f"{what}: the store reports {info.size} bytes, the manifest says {obj.size} "
                                     f"({info.storage_class}, not retrieved)")
        return entry
    stored = storage.stored_sha256(key)
    if stored is not None:
        entry["compared"].append("sha256")
        if stored != obj.sha256:
            entry.update(ok=False, error=f"{what}: the store's SHA-256 {stored} differs from the manifest's "
                                         f"{obj.sha256} ({info.storage_class}, not retrieved)")
    return entry


def archived_summary(entries: List[Dict[str, Any]], requested: List[str], retrieve: bool) -> Optional[Dict[str, Any]]:
    """What a backup's report says about its archived objects (None when it has none): how many,
    in which classes, what was compared, and where the retrieval stands (``not requested``,
    ``requested`` by this run, or ``in progress`` from an earlier one)."""
    cold = [e for e in entries if e.get("checked") == "metadata"]
    if not cold:
        return None
    if retrieve and requested:
        retrieval = "requested"
    elif any(e["archive_state"] == "restoring" for e in cold):
        retrieval = "in progress"
    else:
        retrieval = "not requested"
    return {"objects": len(cold), "storage_classes": sorted({e["storage_class"] for e in cold}),
            "compared": sorted({c for e in cold for c in e["compared"]}), "retrieval": retrieval}


def describe(summary: Dict[str, Any]) -> str:
    """One line's tail for ``verify``'s text output."""
    compared = " and ".join("the store's SHA-256" if c == "sha256" else "sizes" for c in summary["compared"])
    state = {"requested": "retrieval requested now; verify again once it is done",
             "in progress": "retrieval in progress; verify again once it is done",
             "not requested": "verify --retrieve requests it"}[summary["retrieval"]]
    return (f"verified by metadata ({compared}); content check pending a retrieval of {summary['objects']} "
            f"object(s) in {', '.join(summary['storage_classes'])} ({state})")
