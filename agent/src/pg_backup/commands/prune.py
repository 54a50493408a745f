"""``prune``: apply retention, remove the debris of interrupted backups, then the WAL nothing needs."""
from __future__ import annotations

from ..context import Context
from . import CommandResult


def prune(ctx: Context, *, dry_run: bool) -> CommandResult:
    from ..prune import run_prune

    res = run_prune(ctx, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    return CommandResult(res, [f"{verb} {len(res['deleted'])} backup(s), kept {len(res['kept'])}; "
                               f"{len(res['incomplete_removed'])} incomplete backup(s) and "
                               f"{len(res['uploads_aborted'])} unfinished upload(s) "
                               f"{'to clean up' if dry_run else 'cleaned up'}"])
