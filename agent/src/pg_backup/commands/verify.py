"""``verify``: re-hash stored objects against their manifests (``--deep``: also read them through)."""
from __future__ import annotations

from typing import Optional

from ..context import Context
from ..errors import EXIT_INTEGRITY, UsageError
from . import CommandResult


def verify(ctx: Context, *, backup_id: Optional[str], all_backups: bool, deep: bool) -> CommandResult:
    from ..verify import verify_backup

    if bool(all_backups) == bool(backup_id):
        raise UsageError("name one BACKUP_ID or pass --all")
    manifests = ctx.repo.manifests() if all_backups else [ctx.repo.load_manifest(backup_id)]
    reports = [verify_backup(ctx, m, deep=deep) for m in manifests]
    bad = [o["error"] for r in reports for o in r["objects"] if not o["ok"]]
    lines = [f"{r['backup_id']}: {'OK' if r['ok'] else 'FAILED'} ({len(r['objects'])} object(s)"
             f"{', deep' if deep else ''})" for r in reports]
    if not reports:
        lines = ["no backups to verify"]
    result = CommandResult({"backups": reports, "verified": len(reports),
                            "failed": len([r for r in reports if not r["ok"]])}, lines)
    if bad:
        result.exit_code = EXIT_INTEGRITY
        result.error = f"integrity failure: {bad[0]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
    return result
