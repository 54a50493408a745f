"""Verification: re-hash every stored object against its manifest; ``--deep`` also decrypts,
decompresses and asks pg_restore to read the archive's table of contents."""
from __future__ import annotations

import subprocess
from typing import Any, Dict, List, Optional

from .context import Context
from .errors import IntegrityError, PgBackupError
from .manifest import Manifest, StoredObject
from .pipeline import copy_plaintext_to, drain, iter_plaintext, verify_stored
from .postgres import ClientProcess


def _deep_check(ctx: Context, manifest: Manifest, obj: StoredObject, pg_restore: Optional[str]) -> None:
    what = f"{manifest.backup_id}/{obj.name}"
    chunks = iter_plaintext(ctx.storage, ctx.repo.object_key(manifest.backup_id, obj.name), ctx.gpg,
                            manifest.encryption.fingerprint, what=what, expected_sha256=obj.sha256)
    if obj.role == "database" and pg_restore:
        proc = ClientProcess([pg_restore, "--list"], ctx.pg.env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            copy_plaintext_to(chunks, proc.stdin)
        except BrokenPipeError:
            pass
        if proc.wait() != 0:
            raise IntegrityError(f"{what}: pg_restore cannot read the archive "
                                 f"({proc.stderr_lines[-1] if proc.stderr_lines else 'no detail'})")
        return
    size = drain(chunks)
    if size != obj.raw_size:
        raise IntegrityError(f"{what}: decompressed to {size} bytes, the manifest says {obj.raw_size}")


def verify_backup(ctx: Context, manifest: Manifest, *, deep: bool) -> Dict[str, Any]:
    """Check every object of one backup; never raises for a bad object, reports it instead."""
    results: List[Dict[str, Any]] = []
    pg_restore = None
    if deep:
        ctx.gpg.require_key(manifest.encryption.fingerprint, f"backup {manifest.backup_id}")
        pg_restore = _find_pg_restore(ctx, manifest)
    keys = [ctx.repo.object_key(manifest.backup_id, o.name) for o in manifest.objects]
    ctx.storage.make_readable(keys, progress=lambda d, t, m: ctx.progress.note(f"archived objects: {d}/{t} ({m})"))
    for obj in manifest.objects:
        entry: Dict[str, Any] = {"object": obj.name, "size": obj.size, "sha256": obj.sha256, "ok": True}
        what = f"{manifest.backup_id}/{obj.name}"
        ctx.progress.stage(f"verifying {what}{' (deep)' if deep else ''}")
        try:
            verify_stored(ctx.storage, ctx.repo.object_key(manifest.backup_id, obj.name), obj.size, obj.sha256,
                          what=what)
            if deep:
                _deep_check(ctx, manifest, obj, pg_restore)
        except IntegrityError as exc:
            entry.update(ok=False, error=str(exc))
            ctx.progress.warn(str(exc))
        results.append(entry)
    return {"backup_id": manifest.backup_id, "deep": deep, "ok": all(r["ok"] for r in results), "objects": results}


def _find_pg_restore(ctx: Context, manifest: Manifest) -> Optional[str]:
    """Any pg_restore at least as new as the dump; deep verify needs no running server of that version."""
    try:
        return ctx.pg.tool("pg_restore", manifest.server_version_num // 10000)
    except PgBackupError:
        ctx.progress.warn("no suitable pg_restore found: deep verify only decrypts and decompresses")
        return None
