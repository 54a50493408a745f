"""``verify --restore``: prove a backup restores, by restoring it.

Logical backups: every database of the backup is restored (the ordinary restore code, checksums
first) into a scratch database with a unique name (``pgb_verify_<backup time>_<random>_<n>``) on the
configured server; the original databases are never touched. Physical backups: the recovery service
restores the base backup (and the WAL it needs to be consistent) into a scratch data directory under
``verify.scratch_dir`` and starts it on ``verify.scratch_port`` with archiving off.

Then: row counts are compared with those recorded at backup time (``backup.row_counts``), and every
``verify.checks`` query runs in the restored copy of its database. Scratch databases and data
directories are removed afterwards (kept when ``verify.keep_failed`` is set and the verification
failed). The outcome goes to the audit log (by the CLI) and to the repository catalog under
``<cluster>/audit/verifications/`` so ``health`` can find the last successful verification from
storage alone.
"""
from __future__ import annotations

import os
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from ..context import Context
from ..erasure.replay import check_skips, expected_row_counts
from ..errors import NotFoundError, PgBackupError, UsageError
from ..manifest import Manifest, iso
from ..recovery.flow import recover, socket_host
from ..recovery.server import scratch_postgres
from ..recovery.targets import consistent_target
from ..restore import drop_database, run_restore
from .checks import compare_row_counts, run_checks
from .outcome import Outcome, jsonable
from .records import outcome_document, record_verification
from .scratch import database_names, remove_scratch_server


@dataclass
class RestoreVerification:
    """One ``verify --restore``: what it found, and its document as recorded in the repository (with
    the record's key as ``record``, None when it could not be stored)."""

    outcome: Outcome
    document: Dict[str, Any]


# -- choosing the backup ---------------------------------------------------------------------------

def select_backup(ctx: Context, backup_id: Optional[str], *, tier: Optional[str] = None, random_pick: bool = False,
                  kind: Optional[str] = None) -> Manifest:
    """The named backup, or the newest (``random_pick``: a random one) of the tier and kind asked for."""
    if backup_id:
        if tier or random_pick:
            raise UsageError("name a BACKUP_ID or choose with --tier/--random, not both")
        manifest = ctx.repo.load_manifest(backup_id)
        if kind and manifest.kind != kind:
            raise UsageError(f"backup {backup_id} is a {manifest.kind} backup, not {kind}")
        return manifest
    candidates = [m for m in ctx.repo.manifests()
                  if (not tier or m.tier == tier) and (not kind or m.kind == kind)]
    if not candidates:
        what = " ".join(filter(None, [tier, kind])) or "committed"
        raise NotFoundError(f"no {what} backup in {ctx.repo.location} to verify",
                            hint="see 'pg-backup list'")
    if random_pick:
        return random.SystemRandom().choice(candidates)
    return candidates[-1]  # manifests() is oldest first


# -- logical ---------------------------------------------------------------------------------------

def _scratch_name(manifest: Manifest, token: str, n: int) -> str:
    stamp = manifest.backup_id.split("-")[0].lower()
    return f"pgb_verify_{stamp}_{token}_{n}"


def _verify_logical(ctx: Context, manifest: Manifest, outcome: Outcome, skips: Dict[str, str]) -> None:
    if not manifest.databases:
        outcome.notes.append("the backup holds no database (globals only): nothing to restore")
    token = secrets.token_hex(3)
    created: List[str] = []
    database_map: Dict[str, str] = {}
    major = ctx.pg.server_info().major
    try:
        for n, db in enumerate(manifest.databases, start=1):
            scratch = _scratch_name(manifest, token, n)
            entry: Dict[str, Any] = {"name": db.name, "scratch_database": scratch, "restored": False}
            outcome.databases.append(entry)
            ctx.progress.stage(f"verify {manifest.backup_id}: restoring database {db.name!r} into scratch "
                               f"database {scratch!r}")
            created.append(scratch)
            res = run_restore(ctx, manifest.backup_id, database=db.name, target=scratch, no_owner=True,
                              skip_erasures=skips)
            entry.update(restored=True, restore_seconds=res["duration_seconds"])
            database_map[db.name] = scratch
            entry["erasures"] = res["erasures"]  # applied before the checks; the expected counts lose those rows
            entry["row_counts"] = compare_row_counts(ctx.pg, scratch, expected_row_counts(db.row_counts,
                                                     res["erasures"], db.name), outcome, db.name)
            if not entry["row_counts"]["recorded"]:
                outcome.notes.append(f"database {db.name!r}: {entry['row_counts']['detail']}")
        outcome.notes.append("restored without ownership and privileges (pg_restore --no-owner --no-acl): roles "
                             "are globals, which a scratch restore on this server leaves alone")
        ctx.progress.stage(f"verify {manifest.backup_id}: running {len(ctx.settings.verify.checks)} check(s)")
        run_checks(ctx.pg, ctx.settings.verify.checks, database_map, outcome, where="the restored copy")
    finally:
        keep = ctx.settings.verify.keep_failed and not outcome.passed
        for name in created:
            if keep:
                outcome.kept.append(f"database {name}")
                continue
            # run_restore already dropped a database it failed to fill; IF EXISTS makes this safe.
            drop_database(ctx, name, major)


# -- physical --------------------------------------------------------------------------------------

def _verify_physical(ctx: Context, manifest: Manifest, outcome: Outcome, skips: Dict[str, str]) -> None:
    root = ctx.scratch_root()
    data_dir = os.path.join(root, f"verify-{manifest.backup_id}-{secrets.token_hex(3)}")
    port = ctx.settings.verify.scratch_port
    started_server = False
    try:
        ctx.progress.stage(f"verify {manifest.backup_id}: restoring the base backup into {data_dir} "
                           f"(port {port}, archiving off)")
        result = recover(ctx, consistent_target(), data_dir, port=port, start=True, archiving=False,
                         backup_id=manifest.backup_id, skip_erasures=skips)
        started_server = True
        outcome.databases.append({"data_dir": data_dir, "port": result.port, "restored": True,
                                  "erasures": result.erasures,
                                  "reached": jsonable(result.reached),
                                  "phases": {k: round(v, 3) for k, v in (result.phases or {}).items()}})
        pg = scratch_postgres(ctx, socket_host(result), result.port)
        names = database_names(pg)
        recorded = {d.name: d.row_counts for d in manifest.databases}
        if any(v is not None for v in recorded.values()):
            for name, counts in recorded.items():
                if name in names:
                    compare_row_counts(pg, name, counts, outcome, name)
        else:
            outcome.notes.append("row counts are not recorded for physical backups; only the checks ran")
        run_checks(pg, ctx.settings.verify.checks, {n: n for n in names}, outcome, where="the restored server")
    finally:
        if ctx.settings.verify.keep_failed and not outcome.passed:
            outcome.kept.append(f"data directory {data_dir}" + (f" (server running on port {port})"
                                                                 if started_server else ""))
        else:
            remove_scratch_server(data_dir)


# -- the service -----------------------------------------------------------------------------------

def verify_restore(ctx: Context, backup_id: Optional[str], *, tier: Optional[str] = None,
                   random_pick: bool = False, kind: Optional[str] = None,
                   skip_erasures: Optional[Dict[str, str]] = None) -> RestoreVerification:
    """Restore one backup (named, or chosen by tier/kind, newest or random), check it, clean up and
    record the outcome. A failure of the restore itself is kept in the outcome, not raised: it is a
    verdict to record like any other. ``skip_erasures`` ({erasure id: reason}): records handed over
    without re-application (audited when used, like restore's ``--skip-erasure``)."""
    skips = dict(skip_erasures or {})
    check_skips(ctx, skips)
    manifest = select_backup(ctx, backup_id, tier=tier, random_pick=random_pick, kind=kind)
    if manifest.kind not in ("logical", "physical"):
        raise UsageError(f"backup {manifest.backup_id} is of unknown kind {manifest.kind!r}")
    ctx.gpg.require_key(manifest.encryption.fingerprint, f"backup {manifest.backup_id}")
    started = ctx.clock()
    t0 = time.monotonic()
    outcome = Outcome(manifest.backup_id, manifest.kind, manifest.tier, iso(started))
    ctx.progress.stage(f"verify --restore {manifest.backup_id} ({manifest.kind}, {manifest.tier})")
    try:
        if manifest.kind == "logical":
            _verify_logical(ctx, manifest, outcome, skips)
        else:
            _verify_physical(ctx, manifest, outcome, skips)
    except PgBackupError as exc:
        outcome.error, outcome.error_exit_code = str(exc), exc.exit_code
    finished = ctx.clock()
    doc = outcome_document(outcome, started, finished, time.monotonic() - t0)
    doc["record"] = record_verification(ctx.repo, doc, finished, ctx.progress.warn)
    return RestoreVerification(outcome, doc)
