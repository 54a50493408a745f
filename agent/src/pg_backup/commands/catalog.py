"""``list`` and ``show``: the catalog, which is nothing but the repository's manifests."""
from __future__ import annotations

import json
from typing import Optional

from ..context import Context
from ..progress import human_bytes
from . import CommandResult


def list_backups(ctx: Context, *, tier: Optional[str]) -> CommandResult:
    from ..recovery.window import recoverable_window

    every = ctx.repo.manifests()
    manifests = [m for m in every if not tier or m.tier == tier]
    lines = [f"{'BACKUP ID':<38} {'TIER':<8} {'STARTED (UTC)':<20} {'DBS':>3} {'STORED':>10}  KEY"]
    for m in manifests:
        lines.append(f"{m.backup_id:<38} {m.tier:<8} {m.started:%Y-%m-%d %H:%M:%S} {len(m.databases):>4} "
                     f"{human_bytes(m.stored_bytes):>10}  {m.encryption.fingerprint}")
    if not manifests:
        lines = [f"no backups in {ctx.repo.location}"]
    window = recoverable_window(ctx, every) if any(m.kind == "physical" for m in every) else None
    if window is not None:
        lines.append(f"point-in-time recovery window: {window.describe()}")
    elif any(m.kind == "physical" for m in every):
        lines.append("point-in-time recovery window: none (no physical backup has its WAL in the archive)")
    return CommandResult({"repository": ctx.repo.location, "backups": [m.summary() for m in manifests],
                          "recoverable_window": window.to_dict() if window else None}, lines)


def show(ctx: Context, *, backup_id: str) -> CommandResult:
    m = ctx.repo.load_manifest(backup_id)
    doc = json.loads(m.to_json())
    return CommandResult({"manifest": doc}, [json.dumps(doc, indent=2, ensure_ascii=False)])
