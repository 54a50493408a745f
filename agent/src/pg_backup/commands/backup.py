"""``backup``: a logical backup of every (or the named) database, or a physical base backup."""
from __future__ import annotations

from typing import Optional, Sequence

from ..context import Context
from ..errors import UsageError
from ..progress import human_bytes
from . import CommandResult


def backup(ctx: Context, *, tier: Optional[str], physical: bool, databases: Sequence[str],
           skip_if_standby: bool, incremental: bool = False, full: bool = False) -> CommandResult:
    if skip_if_standby and ctx.pg.server_info().in_recovery:
        where = f"{ctx.settings.postgres.host}:{ctx.settings.postgres.port}"
        return CommandResult({"skipped": True, "reason": "standby"},
                             [f"skipped: the server at {where} is a standby; only the primary backs up"],
                             audit_result="skipped")
    if physical:
        from ..physical.backup import describe_kind, full_reason, run_physical_backup
        from ..physical.incremental import requested_mode

        if databases:
            raise UsageError("--database applies to logical backups; a physical backup holds the whole cluster")
        mode = requested_mode(ctx.settings.physical.incremental, incremental_flag=incremental, full_flag=full)
        m = run_physical_backup(ctx, tier or "daily", mode)
        lines = [f"backup {m.backup_id} complete: physical {describe_kind(m)}, {human_bytes(m.raw_bytes)} read, "
                 f"{human_bytes(m.stored_bytes)} stored, WAL {m.start_wal} .. {m.stop_wal}"]
        reason = full_reason(m)
        if reason:
            lines.append(f"full, not incremental: {reason}")
        return CommandResult({"backup": m.summary(), "backup_id": m.backup_id, "bytes": m.stored_bytes,
                              "incremental": m.incremental is not None, "full_reason": reason}, lines)
    if incremental or full:
        raise UsageError("--incremental and --full apply to physical backups (add --physical)")
    from ..backup import run_backup

    if not tier:
        raise UsageError("backup needs --tier daily, weekly or monthly (or --physical)")
    m = run_backup(ctx, tier, databases)
    return CommandResult({"backup": m.summary(), "backup_id": m.backup_id, "bytes": m.stored_bytes},
                         [f"backup {m.backup_id} complete: {len(m.databases)} database(s), "
                          f"{human_bytes(m.raw_bytes)} dumped, {human_bytes(m.stored_bytes)} stored"])
