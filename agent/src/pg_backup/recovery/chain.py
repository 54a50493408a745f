"""An incremental backup's chain, read from the manifests alone: which backups a restore of it
needs (:func:`load_chain`) and why a chain cannot be restored (:func:`chain_problem`, which the
recoverable window uses to skip such a base backup). No storage object is read but manifests.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from ..context import Context
from ..errors import IntegrityError, NotFoundError
from ..manifest import Manifest


def chain_problem(manifest: Manifest, known: Dict[str, Manifest]) -> Optional[str]:
    """Why the chain of ``manifest`` cannot be restored from the backups in ``known`` (by id), or
    None when every member is there and each one is the parent of the next."""
    if manifest.incremental is None:
        return None
    members = list(manifest.incremental.members)
    if not members or members[0] != manifest.incremental.root or members[-1] != manifest.incremental.parent:
        return f"its manifest's chain is inconsistent (members {members}, root {manifest.incremental.root}, " \
               f"parent {manifest.incremental.parent})"
    missing = [m for m in members if m not in known]
    if missing:
        return f"member{'s' if len(missing) > 1 else ''} {', '.join(missing)} of its chain " \
               f"{'are' if len(missing) > 1 else 'is'} missing from the repository"
    chain = [known[m] for m in members] + [manifest]
    if chain[0].incremental is not None:
        return f"its chain's first member {chain[0].backup_id} is not a full backup"
    for parent, child in zip(chain, chain[1:]):
        info = child.incremental
        if info is None or info.parent != parent.backup_id:
            return f"{child.backup_id} in its chain is not incremental to {parent.backup_id}"
        if parent.system_identifier and child.system_identifier and parent.system_identifier != child.system_identifier:
            return f"{parent.backup_id} and {child.backup_id} in its chain come from different clusters " \
                   f"(system identifiers {parent.system_identifier}, {child.system_identifier})"
        if info.parent_stop_lsn and parent.stop_lsn and info.parent_stop_lsn != parent.stop_lsn:
            return f"{child.backup_id} was taken against a {parent.backup_id} that ended at {info.parent_stop_lsn}, " \
                   f"but the stored one ended at {parent.stop_lsn}"
    return None


def load_chain(ctx: Context, manifest: Manifest) -> List[Manifest]:
    """Every backup a restore of ``manifest`` needs, oldest (the full backup) first, ending with it.
    A missing member is NotFoundError (exit 7), an inconsistent chain IntegrityError (exit 4)."""
    if manifest.incremental is None:
        return [manifest]
    known: Dict[str, Manifest] = {}
    for member in manifest.incremental.members:
        try:
            known[member] = ctx.repo.load_manifest(member)
        except NotFoundError:
            pass
    problem = chain_problem(manifest, known)
    if problem is None:
        return [known[m] for m in manifest.incremental.members] + [manifest]
    if "missing" in problem:
        raise NotFoundError(f"incremental backup {manifest.backup_id} cannot be restored: {problem}",
                            hint="choose an older backup with --backup-id (without it, pitr falls back to a "
                                 "usable one by itself); see 'pg-backup list'")
    raise IntegrityError(f"incremental backup {manifest.backup_id} cannot be restored: {problem}")
