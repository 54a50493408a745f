"""``verify``: re-hash stored objects against their manifests (``--deep``: also read them through).

Objects in an archived storage class are checked by what the store reports about them and the
backup is reported "pending" its content check; ``--retrieve`` requests all their retrievals in one
pass without waiting (see :mod:`pg_backup.verification.archived`)."""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..context import Context
from ..errors import EXIT_INTEGRITY, UsageError
from . import CommandResult


def _line(report: Dict[str, Any], deep: bool) -> str:
    from ..verification.archived import describe

    head = f"{report['backup_id']}: {'OK' if report['ok'] else 'FAILED'} ({len(report['objects'])} object(s)" \
           f"{', deep' if report['deep'] else ''})"
    if report["archived"] and report["ok"]:
        return f"{head}: {describe(report['archived'])}" + ("; deep check skipped" if deep else "")
    return head


def verify(ctx: Context, *, backup_id: Optional[str], all_backups: bool, deep: bool,
           retrieve: bool = False) -> CommandResult:
    from ..verify import verify_backup

    if bool(all_backups) == bool(backup_id):
        raise UsageError("name one BACKUP_ID or pass --all")
    manifests = ctx.repo.manifests() if all_backups else [ctx.repo.load_manifest(backup_id)]
    reports = [verify_backup(ctx, m, deep=deep, retrieve=retrieve) for m in manifests]
    bad = [o["error"] for r in reports for o in r["objects"] if not o["ok"]]
    lines = [_line(r, deep) for r in reports]
    pending = [r for r in reports if r["archived"]]
    if not reports:
        lines = ["no backups to verify"]
    elif pending:
        s3 = ctx.settings.repository.s3
        if retrieve:
            lines.append(f"{len(pending)} backup(s) pending a retrieval ({s3.restore_tier} tier, readable for "
                         f"{s3.restore_days} day(s) once retrieved): run verify again later to check their content")
        else:
            lines.append(f"{len(pending)} backup(s) verified by metadata only; `pg-backup verify --retrieve` "
                         f"requests their retrieval in one pass without waiting, and a later verify checks "
                         f"their content")
    result = CommandResult({"backups": reports, "verified": len(reports),
                            "failed": len([r for r in reports if not r["ok"]]),
                            "pending": len(pending)}, lines)
    if bad:
        result.exit_code = EXIT_INTEGRITY
        result.error = f"integrity failure: {bad[0]}" + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
    return result
