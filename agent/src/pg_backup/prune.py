"""Prune: apply retention to committed backups and clean up the debris of interrupted ones."""
from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List

from . import retention
from .context import Context


def run_prune(ctx: Context, *, dry_run: bool) -> Dict[str, Any]:
    settings = ctx.settings.retention
    now = ctx.clock()
    manifests = ctx.repo.manifests()
    refs = [retention.BackupRef(m.backup_id, m.kind, m.tier, m.started) for m in manifests]
    plan = retention.plan(refs, settings, now)
    grace = dt.timedelta(hours=settings.incomplete_grace_hours)
    deleted: List[Dict[str, Any]] = []
    for backup_id, reason in plan.delete.items():
        ctx.progress.stage(f"{'would delete' if dry_run else 'deleting'} {backup_id}: {reason}")
        if not dry_run:
            ctx.repo.delete_backup(backup_id)
        deleted.append({"backup_id": backup_id, "reason": reason})
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
    return {"dry_run": dry_run, "kept": [{"backup_id": k, "reason": r} for k, r in plan.keep.items()],
            "deleted": deleted, "incomplete_removed": leftovers, "uploads_aborted": aborted, "wal": wal}


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
