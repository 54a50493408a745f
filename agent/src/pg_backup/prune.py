"""Prune: apply retention to committed backups and clean up the debris of interrupted ones."""
from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List

from . import retention
from .context import Context
from .manifest import Manifest, chain_root, missing_members


def run_prune(ctx: Context, *, dry_run: bool) -> Dict[str, Any]:
    settings = ctx.settings.retention
    now = ctx.clock()
    manifests = ctx.repo.manifests()
    refs = [retention.BackupRef(m.backup_id, m.kind, m.tier, m.started,
                                tuple(m.incremental.members) if m.incremental else ()) for m in manifests]
    plan = retention.plan(refs, settings, now)
    by_id = {m.backup_id: m for m in manifests}
    grace = dt.timedelta(hours=settings.incomplete_grace_hours)
    deleted: List[Dict[str, Any]] = []
    for backup_id in retention.deletion_order(refs, plan.delete):
        reason = plan.delete[backup_id]
        ctx.progress.stage(f"{'would delete' if dry_run else 'deleting'} {backup_id}{_chain_text(by_id[backup_id])}: "
                           f"{reason}")
        if not dry_run:
            ctx.repo.delete_backup(backup_id)
        deleted.append(dict(_chain_fields(by_id[backup_id]), backup_id=backup_id, reason=reason))
    broken = [{"backup_id": m.backup_id, "missing": missing_members(m, by_id)} for m in manifests
              if missing_members(m, by_id)]
    for b in broken:
        ctx.progress.warn(f"{b['backup_id']} cannot be restored: its chain lacks {', '.join(b['missing'])} "
                          f"(removed out of band); prune keeps it by its own tier, 'backup --physical --full' "
                          f"starts a new chain")
    leftovers: List[Dict[str, Any]] = []
    for left in ctx.repo.leftovers():
        if left.newest and now - left.newest < grace:
            continue
        ctx.progress.stage(f"{'would remove' if dry_run else 'removing'} incomplete backup {left.backup_id} "
                           f"({len(left.keys)} object(s) without a manifest)")
        if not dry_run:
            ctx.storage.delete(left.keys)
        leftovers.append({"backup_id": left.backup_id, "objects": len(left.keys), "bytes": left.size})
    aborted: List[Dict[str, Any]] = []
    for upload in ctx.repo.incomplete_uploads():
        if now - upload.started < grace:
            continue
        ctx.progress.stage(f"{'would abort' if dry_run else 'aborting'} unfinished upload {upload.key}")
        if not dry_run:
            ctx.storage.abort_incomplete(upload)
        aborted.append({"key": upload.key, "started_at": upload.started.isoformat()})
    # WAL last: only once the backups this plan deletes are gone (a failure above keeps all WAL).
    wal = prune_wal(ctx, [m for m in manifests if m.backup_id not in plan.delete], now, dry_run=dry_run)
    return {"dry_run": dry_run, "kept": [dict(_chain_fields(by_id[k]), backup_id=k, reason=r)
                                         for k, r in plan.keep.items()],
            "deleted": deleted, "broken_chains": broken, "incomplete_removed": leftovers, "uploads_aborted": aborted,
            "wal": wal}


def _chain_fields(m: Manifest) -> Dict[str, Any]:
    """Where a backup sits in its chain, for prune's report (physical backups only)."""
    if m.kind != "physical":
        return {}
    return {"chain_root": chain_root(m), "depth": m.incremental.depth if m.incremental else 0}


def _chain_text(m: Manifest) -> str:
    if not m.incremental:
        return " (full)" if m.kind == "physical" else ""
    return f" (incremental {m.incremental.depth} of the chain of {m.incremental.root})"


def prune_wal(ctx: Context, retained: List[Any], now: dt.datetime, *, dry_run: bool) -> Dict[str, Any]:
    """Delete archived WAL that no retained physical backup and no point in the PITR window needs
    (DESIGN §6; the plan is :func:`pg_backup.wal.archive.plan_wal_retention`, from manifests only)."""
    from .wal.archive import PhysicalRef, plan_wal_retention

    archive = ctx.wal_archive
    entries = archive.entries()
    if not entries:
        return {"deleted": 0, "kept": 0, "bytes": 0, "reason": "no WAL archived"}
    physical = [PhysicalRef(m.backup_id, m.started, m.timeline, m.start_wal, m.stop_wal)
                for m in retained if m.kind == "physical"]
    plan = plan_wal_retention(entries, physical, ctx.settings.retention.wal_hours, now, archive.segment_size())
    doomed = plan.delete
    size = sum(e.size for e in doomed)
    if doomed:
        ctx.progress.stage(f"{'would delete' if dry_run else 'deleting'} {len(doomed)} WAL file(s) "
                           f"({doomed[0].name} .. {doomed[-1].name}); {plan.reason}")
        if not dry_run:
            ctx.storage.delete([e.key for e in doomed])
    else:
        ctx.progress.stage(f"WAL: nothing to delete; {plan.reason}")
    return {"deleted": len(doomed), "kept": plan.keep, "bytes": size, "anchor": plan.anchor,
            "keep_from": plan.keep_from, "first_deleted": doomed[0].name if doomed else None,
            "last_deleted": doomed[-1].name if doomed else None, "reason": plan.reason}
