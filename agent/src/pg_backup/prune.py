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
    return {"dry_run": dry_run, "kept": [{"backup_id": k, "reason": r} for k, r in plan.keep.items()],
            "deleted": deleted, "incomplete_removed": leftovers, "uploads_aborted": aborted}
