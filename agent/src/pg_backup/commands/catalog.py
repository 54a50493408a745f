"""``list`` and ``show``: the catalog, which is nothing but the repository's manifests.

Besides each backup's tier, start and key, both show what an operator sizes and restores by (what
``pgbackrest info`` shows): how long the backup took, the original size against the stored one, the
WAL and LSN range of a physical backup, and the chains of incremental backups (each incremental
backup's parent and depth, each chain's total, and a chain whose member is gone).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from ..context import Context
from ..errors import EXIT_INTEGRITY, EXIT_OK, IntegrityError
from ..manifest import Manifest, chain_root, missing_members
from ..progress import human_bytes, human_duration
from . import CommandResult


def duration_seconds(m: Manifest) -> float:
    return round(max(0.0, (m.finished - m.started).total_seconds()), 3)


def backup_type(m: Manifest) -> str:
    if m.kind != "physical":
        return m.kind
    return f"incr {m.incremental.depth}" if m.incremental else "full"


def chains(manifests: List[Manifest]) -> List[Dict[str, Any]]:
    """Each chain of physical backups (a full backup and the incremental ones on it), oldest first."""
    known = {m.backup_id for m in manifests}
    grouped: Dict[str, List[Manifest]] = {}
    for m in manifests:
        if m.kind == "physical":
            grouped.setdefault(chain_root(m), []).append(m)
    result = []
    for root, members in grouped.items():
        missing = sorted({b for m in members for b in missing_members(m, known)})
        result.append({"root": root, "backups": [m.backup_id for m in members],
                       "incremental": sum(1 for m in members if m.incremental),
                       "stored_bytes": sum(m.stored_bytes for m in members),
                       "raw_bytes": sum(m.raw_bytes for m in members), "missing": missing})
    return result


def _summary(m: Manifest, known: set) -> Dict[str, Any]:
    doc = m.summary()
    doc["duration_seconds"] = duration_seconds(m)
    if m.kind == "physical":
        doc["chain_root"] = chain_root(m)
        doc["missing_members"] = missing_members(m, known)
    return doc


def _physical_detail(m: Manifest, known: set) -> str:
    wal = f"WAL {m.start_wal} .. {m.stop_wal}, LSN {m.start_lsn} .. {m.stop_lsn}, timeline {m.timeline}"
    if not m.incremental:
        return f"    {wal}"
    missing = missing_members(m, known)
    broken = f"; BROKEN: {', '.join(missing)} missing" if missing else ""
    return f"    incremental to {m.incremental.parent} (chain of {m.incremental.root}){broken}; {wal}"


def list_backups(ctx: Context, *, tier: Optional[str]) -> CommandResult:
    from ..recovery.window import recoverable_window

    every = ctx.repo.manifests()
    known = {m.backup_id for m in every}
    manifests = [m for m in every if not tier or m.tier == tier]
    lines = [f"{'BACKUP ID':<38} {'TYPE':<8} {'TIER':<8} {'STARTED (UTC)':<19} {'TOOK':>7} {'ORIGINAL':>10} "
             f"{'STORED':>10} {'DBS':>3}  KEY  SIGNER"]
    for m in manifests:
        lines.append(f"{m.backup_id:<38} {backup_type(m):<8} {m.tier:<8} {m.started:%Y-%m-%d %H:%M:%S} "
                     f"{human_duration(duration_seconds(m)):>7} {human_bytes(m.raw_bytes):>10} "
                     f"{human_bytes(m.stored_bytes):>10} {len(m.databases):>3}  {m.encryption.fingerprint}  "
                     f"{m.extra.get('signer') or 'unsigned'}")
        if m.kind == "physical":
            lines.append(_physical_detail(m, known))
    if not manifests:
        lines = [f"no backups in {ctx.repo.location}"]
    lines += [f"REFUSED {bid}: {why}" for bid, why in sorted(ctx.repo.refused.items())]
    found = chains(every)
    for chain in found:
        if not chain["incremental"] and not chain["missing"]:
            continue
        state = f"; BROKEN: {', '.join(chain['missing'])} missing" if chain["missing"] else ""
        lines.append(f"chain of {chain['root']}: {len(chain['backups'])} backup(s), {chain['incremental']} "
                     f"incremental, {human_bytes(chain['raw_bytes'])} read, {human_bytes(chain['stored_bytes'])} "
                     f"stored{state}")
    window, untrusted = None, None
    try:
        window = recoverable_window(ctx, every) if any(m.kind == "physical" for m in every) else None
    except IntegrityError as exc:
        # A forged wal/archive.json must not hide the backups: list them, flag the window, exit 4 (DESIGN §10).
        untrusted = f"WAL archive untrusted: {exc}; point-in-time recovery from this archive is refused"
        lines.append(f"point-in-time recovery window: UNTRUSTED ({exc})")
    if window is not None:
        lines.append(f"point-in-time recovery window: {window.describe()}")
    elif untrusted is None and any(m.kind == "physical" for m in every):
        lines.append("point-in-time recovery window: none (no physical backup has its WAL in the archive)")
    return CommandResult({"repository": ctx.repo.location, "backups": [_summary(m, known) for m in manifests],
                          "chains": found, "recoverable_window": window.to_dict() if window else None,
                          "wal_archive_untrusted": untrusted, "refused": ctx.repo.refused}, lines,
                         exit_code=EXIT_INTEGRITY if untrusted else EXIT_OK, error=untrusted)


def describe(m: Manifest, known: set) -> List[str]:
    """The human summary ``show`` prints above the manifest."""
    lines = [f"backup {m.backup_id}: {m.kind}" + (f" {backup_type(m)}" if m.kind == "physical" else "")
             + f", tier {m.tier}, cluster {m.cluster} on {m.hostname}",
             f"  started {m.started:%Y-%m-%d %H:%M:%S} UTC, took {human_duration(duration_seconds(m))}; PostgreSQL "
             f"{m.server_version}",
             f"  original {human_bytes(m.raw_bytes)}, stored {human_bytes(m.stored_bytes)} in {len(m.objects)} "
             f"object(s), key {m.encryption.fingerprint}, signed by {m.extra.get('signer') or 'nobody (unsigned)'}"]
    if m.kind == "physical":
        lines.append(f"  WAL {m.start_wal} .. {m.stop_wal}, LSN {m.start_lsn} .. {m.stop_lsn}, timeline {m.timeline}")
    if m.incremental:
        missing = missing_members(m, known)
        lines.append(f"  incremental to {m.incremental.parent}, depth {m.incremental.depth}; a restore combines "
                     f"{' + '.join(m.chain_ids())}")
        if missing:
            lines.append(f"  BROKEN chain: {', '.join(missing)} not in the repository; this backup cannot be restored")
    lines += [f"  note: {n}" for n in m.notes]
    return lines


def show(ctx: Context, *, backup_id: str) -> CommandResult:
    m = ctx.repo.load_manifest(backup_id)
    doc = json.loads(m.to_json())
    members = m.incremental.members if m.incremental else []
    known = {b for b in members if ctx.storage.exists(ctx.repo.manifest_key(b))}
    return CommandResult({"manifest": doc}, describe(m, known) + ["manifest:", json.dumps(doc, indent=2,
                                                                                         ensure_ascii=False)])
