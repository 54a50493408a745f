"""``pitr --no-start``: the erasure register cannot be applied to a server that does not run.

A data directory recovered from an old backup still holds every row erased since. Handing it over
unstarted would hand those rows over, so ``pitr --no-start`` refuses (exit 9, before any work) when
the register holds records it would have to apply, unless the operator either skips them by name
(``--skip-erasure ID --skip-reason TEXT``, audited) or defers them explicitly
(``--defer-erasure``). Deferring writes a marker, ``pg-backup-erasure-pending.json`` (0600), into the
data directory and prints the one command that applies the register once the server runs:

    pg-backup erasure replay --data-dir DIR

which waits for the server in DIR to finish its recovery, applies every record (oldest first, one
transaction per database, as after any PITR; a failure stops the server), and removes the marker.
"""
from __future__ import annotations

import json
import os
import shlex
from typing import Any, Dict, List, Mapping, Optional

from ..context import Context
from ..errors import NotFoundError, PostgresError, RefusedError, UsageError
from ..manifest import iso

MARKER = "pg-backup-erasure-pending.json"


def pending_ids(ctx: Context, skips: Mapping[str, str]) -> List[str]:
    """The register's records a recovery would have to apply (every record not skipped by name)."""
    return [i for i in ctx.repo.erasure_ids() if i not in skips]


def replay_command(data_dir: str, config: Optional[str]) -> str:
    return " ".join(["pg-backup"] + (["--config", shlex.quote(config)] if config else []) +
                    ["erasure", "replay", "--data-dir", shlex.quote(data_dir)])


def refuse_unstarted(ctx: Context, skips: Mapping[str, str], *, defer: bool, no_start: bool) -> List[str]:
    """Before a ``pitr``: the records an unstarted recovery would leave unapplied; RefusedError when
    there are some and the operator did not pass ``--defer-erasure``."""
    if defer and not no_start:
        raise UsageError("--defer-erasure applies to pitr --no-start (a started recovery applies the register itself)")
    if not no_start:
        return []
    pending = pending_ids(ctx, skips)
    if pending and not defer:
        raise RefusedError(
            f"pitr --no-start would hand over a data directory holding the rows of {len(pending)} recorded "
            f"erasure(s) (the register cannot be applied to a server that does not run); nothing was restored",
            hint="pass --defer-erasure to leave a pending-erasure marker and apply the register with "
                 "'pg-backup erasure replay --data-dir DIR' once the server runs, or drop --no-start "
                 "(or skip records by name: --skip-erasure ID --skip-reason TEXT, audited)")
    return pending


def write_marker(data_dir: str, *, backup_id: str, target: str, pending: List[str], skips: Mapping[str, str],
                 created: str, command: str) -> str:
    """The pending-erasure marker in the recovered data directory (0600, never overwritten silently)."""
    path = os.path.join(data_dir, MARKER)
    doc = {"created_at": created, "backup_id": backup_id, "target": target, "pending": pending,
           "skips": dict(skips), "command": command,
           "note": "the erasure register is NOT applied to this data directory: run the command once the server "
                   "runs, before anyone uses it"}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    return path


def deferred_document(path: str, pending: List[str], command: str) -> Dict[str, Any]:
    """``erasures`` of a deferred pitr's result."""
    return {"deferred": True, "pending": pending, "marker": path, "command": command,
            "applied": [], "skipped": [], "not_applicable": []}


def read_marker(data_dir: str) -> Dict[str, Any]:
    path = os.path.join(data_dir, MARKER)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise NotFoundError(f"no pending-erasure marker in {data_dir} ({MARKER})",
                            hint="erasure replay applies the register to a server recovered with "
                                 "'pitr --no-start --defer-erasure'") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path} is not a pending-erasure marker")
    return doc


def replay_pending(ctx: Context, data_dir: str, *, skips: Mapping[str, str],
                   timeout: Optional[float]) -> Dict[str, Any]:
    """Apply the register to the server running from ``data_dir`` (recovered with a deferred
    erasure), then remove the marker. Waits for the server to finish its recovery first."""
    from ..postgres.server import postmaster_pid
    from ..progress import PhaseTimer
    from ..recovery.server import scratch_postgres, wait_for_promotion
    from .replay import reapply_after_recovery

    data_dir = os.path.abspath(data_dir)
    marker = read_marker(data_dir)
    if postmaster_pid(data_dir) is None:
        raise PostgresError(f"no server runs from {data_dir}: the register can only be applied to a running server",
                            hint=f"start it (pg_ctl -D {data_dir} start), then run this command again")
    ctx.progress.stage(f"erasure replay: waiting for the server in {data_dir} to finish its recovery")
    reached, (port, sock, addr) = wait_for_promotion(ctx, data_dir, PhaseTimer(), ctx.progress, timeout)
    if port is None:
        raise PostgresError(f"the server in {data_dir} does not say where it listens (postmaster.pid)")
    merged = {**{str(k): str(v) for k, v in (marker.get("skips") or {}).items()}, **skips}
    doc = reapply_after_recovery(ctx, scratch_postgres(ctx, sock or addr or "127.0.0.1", port), data_dir,
                                 skips=merged)
    os.unlink(os.path.join(data_dir, MARKER))
    doc.update(data_dir=data_dir, reached=reached, marker_removed=True, deferred_at=marker.get("created_at"))
    return doc


def stamp(ctx: Context) -> str:
    return iso(ctx.clock())
