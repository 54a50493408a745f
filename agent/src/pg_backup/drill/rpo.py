"""Step 4 of a drill: how far the restore got, and the RPO it measures against the loss."""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..manifest import iso, parse_iso
from ..postgres.client import Postgres
from ..wal.names import parse_lsn


def restored_position(pg: Postgres) -> Dict[str, Any]:
    with pg.connect() as conn:
        lsn, commit_time, now = conn.execute(
            "SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(), now()").fetchone()
    return {"last_replay_lsn": lsn, "last_commit_time": iso(commit_time) if commit_time else None,
            "server_time": iso(now)}


def measure_rpo(primary: Dict[str, Any], restored: Dict[str, Any], loss_time: str,
                fallback_commit_time: Optional[str]) -> Dict[str, Any]:
    """RPO from the loss position/time on the primary and the replay position/last commit of the restore."""
    rpo: Dict[str, Any] = {"loss_time": loss_time, "loss_lsn": primary.get("loss_lsn"),
                           "last_replay_lsn": restored.get("last_replay_lsn"),
                           "last_commit_time": restored.get("last_commit_time") or fallback_commit_time}
    loss_lsn, replay_lsn = primary.get("loss_lsn"), restored.get("last_replay_lsn")
    if loss_lsn and replay_lsn:
        missing = parse_lsn(loss_lsn) - parse_lsn(replay_lsn)
        rpo["lost_wal_bytes"] = max(0, missing)
        if missing <= 0:
            rpo.update(seconds=0.0, method="exact: the restore replayed WAL up to the primary's position at the loss")
            return rpo
    else:
        rpo["lost_wal_bytes"] = None
    last = rpo["last_commit_time"]
    if last is None:
        rpo.update(seconds=None, method="unknown: no commit time in the restore and no base backup time")
        return rpo
    rpo["seconds"] = round(max(0.0, (parse_iso(loss_time) - parse_iso(last)).total_seconds()), 3)
    rpo["method"] = ("upper bound: time from the last commit present in the restore to the loss"
                     + ("" if loss_lsn else " (the primary gave no WAL position)"))
    return rpo
