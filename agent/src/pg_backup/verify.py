"""Verification: re-hash every stored object against its manifest; ``--deep`` also decrypts,
decompresses and asks pg_restore to read the archive's table of contents (logical), or extracts a
physical base backup into a private scratch directory and runs pg_verifybackup against
PostgreSQL's own backup_manifest, with the backup's WAL fetched from the archive (physical)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from .context import Context
from .errors import IntegrityError, NotFoundError, PgBackupError
from .manifest import Manifest, StoredObject
from .pipeline import copy_plaintext_to, drain, iter_plaintext, verify_stored
from .postgres.tools import ClientProcess, same_major_tool
from .progress import PhaseTimer


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


def verify_backup(ctx: Context, manifest: Manifest, *, deep: bool, retrieve: bool = False) -> Dict[str, Any]:
    """Check every object of one backup; never raises for a bad object, reports it instead. Objects in
    an archived storage class are checked by what the store reports (verification/archived.py), never
    retrieved and waited for; ``retrieve`` requests their retrieval without waiting."""
    from .verification.archived import archived_summary, is_unreadable, metadata_entry

    results: List[Dict[str, Any]] = []
    pg_restore = None
    physical = manifest.kind == "physical"
    keys = {o.name: ctx.repo.object_key(manifest.backup_id, o.name) for o in manifest.objects}
    infos = {name: ctx.storage.head(key) for name, key in keys.items()}
    cold = [name for name, info in infos.items() if is_unreadable(info)]
    requested = ctx.storage.request_retrieval([keys[n] for n in cold]) if cold and retrieve else []
    deep_now = deep and not cold
    if deep_now:
        ctx.gpg.require_key(manifest.encryption.fingerprint, f"backup {manifest.backup_id}")
        pg_restore = None if physical else _find_pg_restore(ctx, manifest)
    for obj in manifest.objects:
        what = f"{manifest.backup_id}/{obj.name}"
        info = infos[obj.name]
        if obj.name in cold and info is not None:
            ctx.progress.stage(f"verifying {what} by metadata ({info.storage_class}, not retrieved)")
            entry = metadata_entry(ctx.storage, keys[obj.name], obj, info, what)
            if not entry["ok"]:
                ctx.progress.warn(entry["error"])
            results.append(entry)
            continue
        entry = {"object": obj.name, "size": obj.size, "sha256": obj.sha256, "ok": True, "checked": "content"}
        ctx.progress.stage(f"verifying {what}{' (deep)' if deep_now else ''}")
        try:
            if info is None:
                raise IntegrityError(f"{what}: the object is missing from {ctx.repo.location}")
            verify_stored(ctx.storage, keys[obj.name], obj.size, obj.sha256, what=what)
            if deep_now and not physical:
                _deep_check(ctx, manifest, obj, pg_restore)
        except IntegrityError as exc:
            entry.update(ok=False, error=str(exc))
            ctx.progress.warn(str(exc))
        results.append(entry)
    report: Dict[str, Any] = {"backup_id": manifest.backup_id, "deep": deep_now, "ok": True, "objects": results,
                              "archived": archived_summary(results, requested, retrieve)}
    report["content"] = "pending retrieval" if report["archived"] else "verified"
    if deep and cold:
        report["deep_skipped"] = "archived objects are not retrieved: the deep check waits for their retrieval"
    if manifest.is_incremental:
        report["chain"] = _check_chain(ctx, manifest, results)
    if deep_now and physical:
        if all(r["ok"] for r in results):
            report["pg_verifybackup"] = verify_physical_deep(ctx, manifest, results)
        else:
            report["pg_verifybackup"] = {"ran": False, "detail": "skipped: a stored object does not match the "
                                                                  "manifest, or the chain is incomplete"}
    report["ok"] = all(r["ok"] for r in results)
    return report


def _check_chain(ctx: Context, manifest: Manifest, results: List[Dict[str, Any]]) -> List[str]:
    """An incremental backup restores only with its whole chain: a missing or inconsistent member
    fails the verification (a ``chain`` entry among the objects). Returns the chain's ids."""
    from .recovery.chain import load_chain

    try:
        return [m.backup_id for m in load_chain(ctx, manifest)]
    except PgBackupError as exc:
        results.append({"object": "chain", "size": 0, "sha256": "", "ok": False, "error": exc.message})
        ctx.progress.warn(exc.message)
        return manifest.chain_ids()


def _verifybackup_binary(ctx: Context, major: int) -> Tuple[Optional[str], bool]:
    """(pg_verifybackup, can parse this major's WAL): the same major's tool parses its WAL (pg_waldump
    beside it); a newer one can still check the files of a 15 or 16 backup against the manifest, but
    not of a 17+ one (its backup_manifest names the system identifier, which a newer major's tool
    reads from a pg_control whose layout it does not know: README, PostgreSQL versions)."""
    path = same_major_tool(ctx.settings.postgres, major, "pg_verifybackup")
    if path:
        return path, os.path.exists(os.path.join(os.path.dirname(path), "pg_waldump"))
    if major >= 17:
        return None, False
    try:
        path = ctx.pg.tool("pg_verifybackup", major)
        return (path, False) if os.path.exists(path) else (None, False)
    except PgBackupError:
        return None, False


def verify_physical_deep(ctx: Context, manifest: Manifest, results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Decrypt and extract the base backup into a private 0700 scratch directory, fetch the WAL it
    needs from the archive, and let pg_verifybackup check every file (and parse that WAL) against
    PostgreSQL's own backup_manifest. An incremental backup: every member of its chain is checked and
    extracted, pg_verifybackup checks each member against its own backup_manifest, then the chain is
    combined (pg_combinebackup) and the combined data directory is checked like a full backup. The
    scratch directory is removed afterwards, whatever happened."""
    from .physical.layout import BASE_OBJECT

    major = manifest.server_version_num // 10000
    tool, parses_wal = _verifybackup_binary(ctx, major)
    entry = next((r for r in results if r["object"] == BASE_OBJECT), results[0] if results else {})
    if tool is None:
        ctx.progress.warn(f"no pg_verifybackup for PostgreSQL {major}: deep verify only decrypted the archives")
        return {"ran": False, "detail": f"pg_verifybackup {major} not found"}
    root = ctx.scratch_root()
    scratch = tempfile.mkdtemp(prefix=f"deep-{manifest.backup_id}-", dir=root)
    os.chmod(scratch, 0o700)
    data_dir, wal_dir = os.path.join(scratch, "data"), os.path.join(scratch, "wal")
    outcome: Dict[str, Any] = {"ran": False, "wal": "not parsed"}
    try:
        os.mkdir(wal_dir, 0o700)
        ctx.progress.stage(f"verifying {manifest.backup_id} (deep): extracting into private directory {scratch}")
        if manifest.is_incremental:
            _combine_for_verify(ctx, manifest, tool, scratch, data_dir, outcome)
        else:
            os.mkdir(data_dir, 0o700)
            _extract_for_verify(ctx, manifest, data_dir)
        cmd = [tool, "--quiet"]
        if parses_wal:
            missing = _fetch_backup_wal(ctx, manifest, wal_dir)
            if missing:
                outcome["wal"] = f"not parsed: {missing}"
                cmd.append("--no-parse-wal")
            else:
                outcome["wal"] = "parsed"
                cmd.append(f"--wal-directory={wal_dir}")
        else:
            outcome["wal"] = f"not parsed: no pg_waldump {major} beside {tool}"
            cmd.append("--no-parse-wal")
        ctx.progress.stage(f"verifying {manifest.backup_id} (deep): pg_verifybackup, WAL {outcome['wal']}")
        problems = _run_verifybackup(ctx, cmd, data_dir)
        outcome.update(ran=True, ok=not problems, detail=problems[-5:])
        if problems:
            problem = f"{manifest.backup_id}: pg_verifybackup found problems: {'; '.join(problems[:3])}"
            entry.update(ok=False, error=problem)
            ctx.progress.warn(problem)
    except PgBackupError as exc:
        # A member missing, a tampered one, pg_combinebackup refusing the chain: it cannot be restored.
        entry.update(ok=False, error=str(exc))
        ctx.progress.warn(str(exc))
        outcome["detail"] = str(exc)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return outcome


def _run_verifybackup(ctx: Context, cmd: List[str], data_dir: str) -> List[str]:
    """pg_verifybackup's output lines when it found problems, [] when it passed."""
    proc = subprocess.run(cmd + [data_dir], capture_output=True, text=True, errors="replace", check=False,
                          env=ctx.pg.env())
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return [] if proc.returncode == 0 else (lines or [f"exit code {proc.returncode}"])


def _extract_for_verify(ctx: Context, manifest: Manifest, data_dir: str) -> None:
    from .physical.layout import BACKUP_MANIFEST_OBJECT, BASE_OBJECT
    from .recovery.archives import Checked, archive_extractions, extract_all

    key = lambda name: ctx.repo.object_key(manifest.backup_id, name)  # noqa: E731
    jobs = archive_extractions(manifest, BASE_OBJECT, data_dir)
    for ts in manifest.tablespaces:
        dest = os.path.join(data_dir, "pg_tblspc", str(ts["oid"]))
        os.makedirs(dest, mode=0o700, exist_ok=True)
        jobs += archive_extractions(manifest, ts["object"], dest)
    where = {(manifest.backup_id, j.name): (ctx.storage, key(j.name)) for j in jobs}
    extract_all(ctx, Checked(where), jobs, PhaseTimer(), ctx.progress, writeback=False)
    for other in (o for o in manifest.objects if o.role == "config"):
        size = drain(iter_plaintext(ctx.storage, key(other.name), ctx.gpg, manifest.encryption.fingerprint,
                                    what=f"{manifest.backup_id}/{other.name}", expected_sha256=other.sha256))
        if size != other.raw_size:
            raise IntegrityError(f"{manifest.backup_id}/{other.name}: decompressed to {size} bytes, the manifest "
                                 f"says {other.raw_size}")
    obj = manifest.object_named(BACKUP_MANIFEST_OBJECT)
    fd = os.open(os.path.join(data_dir, "backup_manifest"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    copy_plaintext_to(iter_plaintext(ctx.storage, key(obj.name), ctx.gpg, manifest.encryption.fingerprint,
                                     what=f"{manifest.backup_id}/{obj.name}", expected_sha256=obj.sha256),
                      os.fdopen(fd, "wb"))


def _combine_for_verify(ctx: Context, manifest: Manifest, tool: str, scratch: str, data_dir: str,
                        outcome: Dict[str, Any]) -> None:
    """Check and extract every member of the chain, let pg_verifybackup check each one against its
    own backup_manifest, then combine them into ``data_dir`` (with a backup_manifest of the result)."""
    from .recovery.chain import load_chain
    from .recovery.combine import combine_chain

    chain = load_chain(ctx, manifest)
    outcome["chain"] = [m.backup_id for m in chain]
    work = os.path.join(scratch, "chain")
    os.mkdir(work, 0o700)
    combine_chain(ctx, chain, work, data_dir, timer=PhaseTimer(), progress=ctx.progress, write_manifest=True)
    for n, m in enumerate(chain):
        problems = _run_verifybackup(ctx, [tool, "--quiet", "--no-parse-wal"], os.path.join(work, f"member-{n}"))
        if problems:
            raise IntegrityError(f"{m.backup_id} (member {n + 1} of the chain of {manifest.backup_id}): "
                                 f"pg_verifybackup found problems: {'; '.join(problems[:3])}")
    outcome["members_verified"] = len(chain)


def _fetch_backup_wal(ctx: Context, manifest: Manifest, wal_dir: str) -> Optional[str]:
    """Fetch start_wal..stop_wal (the WAL pg_verifybackup parses) from the archive; the reason if not."""
    from .wal.fetch import fetch_to
    from .wal.names import next_segment

    if not (manifest.start_wal and manifest.stop_wal and manifest.wal_segment_size):
        return "the manifest names no WAL range"
    name, size = manifest.start_wal, manifest.wal_segment_size
    for _ in range(4096):
        try:
            fetch_to(ctx, name, os.path.join(wal_dir, name))
        except NotFoundError:
            return f"{name} is not in the WAL archive"
        if name == manifest.stop_wal:
            return None
        name = next_segment(name, size)
    return "the WAL range is implausibly long"


def _find_pg_restore(ctx: Context, manifest: Manifest) -> Optional[str]:
    """Any pg_restore at least as new as the dump; deep verify needs no running server of that version."""
    try:
        return ctx.pg.tool("pg_restore", manifest.server_version_num // 10000)
    except PgBackupError:
        ctx.progress.warn("no suitable pg_restore found: deep verify only decrypts and decompresses")
        return None
