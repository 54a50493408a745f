"""``prune``: apply retention, remove the debris of interrupted backups, then the WAL nothing needs."""
from __future__ import annotations

from typing import Any, Dict, List

from ..context import Context
from . import CommandResult


def _where(entry: Dict[str, Any]) -> str:
    if "chain_root" not in entry:
        return ""
    if not entry["depth"]:
        return " (full)"
    return f" (incremental {entry['depth']} of the chain of {entry['chain_root']})"


def _chain_lines(kept: List[Dict[str, Any]]) -> List[str]:
    """One line per kept chain of physical backups that has incremental members."""
    chains: Dict[str, List[Dict[str, Any]]] = {}
    for entry in kept:
        if "chain_root" in entry:
            chains.setdefault(entry["chain_root"], []).append(entry)
    lines = []
    for root, members in chains.items():
        if len(members) > 1 or members[0]["depth"]:
            ids = [m["backup_id"] for m in sorted(members, key=lambda m: m["depth"])]
            lines.append(f"  kept chain of {root}: {' <- '.join(ids)}")
    return lines


def prune(ctx: Context, *, dry_run: bool) -> CommandResult:
    from ..prune import run_prune

    res = run_prune(ctx, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    lines = [f"{verb} {len(res['deleted'])} backup(s), kept {len(res['kept'])}; "
             f"{len(res['incomplete_removed'])} incomplete backup(s) and "
             f"{len(res['uploads_aborted'])} unfinished upload(s) "
             f"{'to clean up' if dry_run else 'cleaned up'}"]
    lines += [f"  {verb} {d['backup_id']}{_where(d)}: {d['reason']}" for d in res["deleted"]]
    lines += _chain_lines(res["kept"])
    lines += [f"  BROKEN chain: {b['backup_id']} lacks {', '.join(b['missing'])} (cannot be restored)"
              for b in res["broken_chains"]]
    return CommandResult(res, lines)
