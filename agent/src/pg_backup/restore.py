"""Logical restore: checksums first, a new database by default, replacement only when asked.

The backup is always restored under a temporary name and given its name only at the end, once the
erasure register has been re-applied to it (docs/erasure.md): nobody connects to a database that
still holds erased rows. Replacing never drops the current database before the new one is complete:
the current database is renamed aside, the restored one takes its name, and only then is the old
one dropped. Every identifier goes through psycopg.sql.Identifier.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from .context import Context
from .erasure.replay import check_skips, reapply
from .errors import NotFoundError, PostgresError, RefusedError, UsageError
from .manifest import DatabaseInfo, Manifest, StoredObject
from .pipeline import copy_plaintext_to, iter_plaintext, verify_stored
from .postgres.client import conninfo_quote
from .postgres.tools import ClientProcess, tool_major

MAX_IDENTIFIER = 63


def _sql():  # type: ignore[no-untyped-def]
    from psycopg import sql

    return sql


def _short_name(base: str, tag: str) -> str:
    """``base`` plus a tag, cut so the whole stays within PostgreSQL's 63-byte identifier limit."""
    suffix = f"_{tag}"
    raw = base.encode()[: MAX_IDENTIFIER - len(suffix.encode())]
    return raw.decode(errors="ignore") + suffix


def find_backup_database(manifest: Manifest, name: Optional[str]) -> DatabaseInfo:
    if name is None:
        if len(manifest.databases) == 1:
            return manifest.databases[0]
        raise UsageError(f"backup {manifest.backup_id} holds {len(manifest.databases)} databases; name one with "
                         f"--database ({', '.join(d.name for d in manifest.databases)})")
    db = manifest.database(name)
    if db is None:
        raise NotFoundError(f"backup {manifest.backup_id} has no database {name!r}",
                            hint=f"it has: {', '.join(d.name for d in manifest.databases) or 'none'}")
    return db


def verify_objects(ctx: Context, manifest: Manifest, objects: Sequence[StoredObject]) -> None:
    ctx.storage.make_readable([ctx.repo.object_key(manifest.backup_id, o.name) for o in objects],
                              progress=lambda d, t, m: ctx.progress.note(f"archived objects: {d}/{t} readable ({m})"))
    for obj in objects:
        ctx.progress.stage(f"verifying checksum of {obj.name}")
        verify_stored(ctx.storage, ctx.repo.object_key(manifest.backup_id, obj.name), obj.size, obj.sha256,
                      what=f"{manifest.backup_id}/{obj.name}")


def _plaintext(ctx: Context, manifest: Manifest, obj: StoredObject):  # type: ignore[no-untyped-def]
    return iter_plaintext(ctx.storage, ctx.repo.object_key(manifest.backup_id, obj.name), ctx.gpg,
                          manifest.encryption.fingerprint, what=f"{manifest.backup_id}/{obj.name}",
                          expected_sha256=obj.sha256)


def restore_globals(ctx: Context, manifest: Manifest, obj: StoredObject, server_major: int) -> List[str]:
    """Replay roles and tablespaces; objects that already exist are reported, not fatal."""
    psql = ctx.pg.tool("psql", server_major)
    ctx.progress.stage("restoring globals (roles, tablespaces)")
    proc = ClientProcess([psql, "-X", "-q", "-v", "ON_ERROR_STOP=0", "-f", "-"], ctx.pg.env(),
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        copy_plaintext_to(_plaintext(ctx, manifest, obj), proc.stdin)
    except BrokenPipeError:
        pass
    finally:
        rc = proc.wait()
    if rc != 0:
        raise PostgresError(f"psql failed restoring globals: {proc.stderr_lines[-1] if proc.stderr_lines else rc}")
    errors = [ln for ln in proc.stderr_lines if "ERROR" in ln]
    return [f"globals: {ln}" for ln in errors]


def run_restore(ctx: Context, backup_id: str, *, database: Optional[str], target: Optional[str] = None,
                replace: bool = False, tables: Sequence[str] = (), schemas: Sequence[str] = (),
                jobs: int = 1, with_globals: bool = False, no_owner: bool = False,
                skip_erasures: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    if jobs < 1:
        raise UsageError("--jobs must be at least 1")
    t0 = time.monotonic()
    manifest = ctx.repo.load_manifest(backup_id)
    if manifest.kind != "logical":
        raise UsageError(f"backup {backup_id} is a {manifest.kind} base backup, not a logical one; nothing was changed",
                         hint=f"recover it with 'pg-backup pitr --backup-id {backup_id} --data-dir DIR ...'")
    db = find_backup_database(manifest, database)
    target = target or db.name
    if len(target.encode()) > MAX_IDENTIFIER:
        raise UsageError(f"target database name {target!r} is longer than {MAX_IDENTIFIER} bytes")
    ctx.gpg.require_key(manifest.encryption.fingerprint, f"backup {manifest.backup_id}")
    check_skips(ctx, skip_erasures or {})
    exists = ctx.pg.database_exists(target)
    if exists and not replace:
        raise RefusedError(f"database {target!r} already exists; nothing was changed",
                           hint="restore under another name with --target-database NEW, or pass --replace to "
                                "replace it (it is renamed aside and dropped only after the restore succeeds)")
    info = ctx.pg.server_info()
    dump_obj = manifest.object_named(db.object)
    globals_obj = manifest.globals_object() if with_globals else None
    if with_globals and globals_obj is None:
        raise UsageError(f"backup {manifest.backup_id} has no globals object; restore without --with-globals")
    verify_objects(ctx, manifest, [o for o in (globals_obj, dump_obj) if o is not None])

    notes: List[str] = []
    if globals_obj is not None:
        notes += restore_globals(ctx, manifest, globals_obj, info.major)

    pg_restore = _pg_restore_for(ctx, manifest, info.major)
    work_db = _short_name(target, "pgb_" + secrets.token_hex(3))
    owner = db.owner if ctx.pg.role_exists(db.owner) else None
    if owner is None:
        notes.append(f"role {db.owner!r} does not exist here; the database is owned by {ctx.settings.postgres.user!r}")
    _create_database(ctx, work_db, db.encoding, db.collate, db.ctype, owner)
    try:
        _pg_restore_into(ctx, manifest, dump_obj, pg_restore, work_db, tables, schemas, jobs, no_owner, notes)
        # Right before the hand-over (the rename below): records added while pg_restore ran are read too.
        erasures = reapply(ctx, ctx.pg, {db.name: work_db}, what=f"restore of {manifest.backup_id} into {target!r}",
                           selective=bool(tables or schemas), skips=skip_erasures)
    except BaseException:
        ctx.progress.note(f"restore failed: dropping the incomplete database {work_db!r}")
        drop_database(ctx, work_db, info.major)
        raise
    replaced_aside = None
    if exists:
        replaced_aside = _swap_in(ctx, work_db, target, info.major)
    else:
        _rename(ctx, work_db, target, info.major)
    return {"backup_id": manifest.backup_id, "database": db.name, "target_database": target,
            "replaced": bool(exists), "old_database_dropped": replaced_aside is not None,
            "tables": list(tables), "schemas": list(schemas), "jobs": jobs,
            "with_globals": bool(globals_obj), "duration_seconds": round(time.monotonic() - t0, 3), "notes": notes,
            "erasures": erasures}


def _pg_restore_for(ctx: Context, manifest: Manifest, server_major: int) -> str:
    """pg_restore must read the archive's format version: at least the pg_dump major that wrote it."""
    dump_major = 0
    if manifest.pg_dump_version:
        digits = [int(tok.split(".")[0]) for tok in manifest.pg_dump_version.split() if tok[:1].isdigit()]
        dump_major = digits[0] if digits else 0
    tool = ctx.pg.tool("pg_restore", server_major)
    major = tool_major(tool) or 0
    if major < dump_major:
        raise PostgresError(f"{tool} is version {major} but backup {manifest.backup_id} was written by pg_dump "
                            f"{dump_major}", hint=f"install postgresql-client-{dump_major} and set postgres.bin_dir")
    return tool


def _create_database(ctx: Context, name: str, encoding: str, collate: str, ctype: str, owner: Optional[str]) -> None:
    sql = _sql()
    query = sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
        sql.Identifier(name), sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype))
    if owner:
        query = sql.SQL("{} OWNER {}").format(query, sql.Identifier(owner))
    ctx.progress.stage(f"creating database {name!r}")
    with ctx.pg.connect() as conn:
        try:
            conn.execute(query)
        except Exception as exc:  # psycopg.Error; keep the one server line
            raise PostgresError(f"cannot create database {name!r}: {str(exc).strip().splitlines()[0]}",
                                hint="a locale missing on this host can be generated with locale-gen") from None


def _pg_restore_into(ctx: Context, manifest: Manifest, obj: StoredObject, pg_restore: str, dbname: str,
                     tables: Sequence[str], schemas: Sequence[str], jobs: int, no_owner: bool,
                     notes: List[str]) -> None:
    cmd = [pg_restore, "--exit-on-error", "--dbname", f"dbname={conninfo_quote(dbname)}"]
    for t in tables:
        cmd += ["--table", t]
    for s in schemas:
        cmd += ["--schema", s]
    if no_owner:
        cmd += ["--no-owner", "--no-acl"]
    env = ctx.pg.env(dbname)
    what = f"{manifest.backup_id}/{obj.name} into database {dbname!r}"
    if jobs == 1:
        ctx.progress.stage(f"restoring {what}")
        proc = ClientProcess(cmd, env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            copy_plaintext_to(_plaintext(ctx, manifest, obj), proc.stdin)
        except BrokenPipeError:
            pass  # pg_restore stopped reading: its own error (checked next) says why
        except BaseException:
            proc.kill()
            raise
        proc.check(what)
        return
    spool_root = ctx.settings.spool_path
    os.makedirs(spool_root, mode=0o700, exist_ok=True)
    os.chmod(spool_root, 0o700)
    spool = tempfile.mkdtemp(prefix="restore-", dir=spool_root)
    note = (f"--jobs {jobs} needs a seekable file: spooling the decrypted dump into private directory {spool} "
            f"(0700), removed afterwards")
    ctx.progress.note(note)
    notes.append(note)
    try:
        path = os.path.join(spool, "dump")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        copy_plaintext_to(_plaintext(ctx, manifest, obj), os.fdopen(fd, "wb"))
        ctx.progress.stage(f"restoring {what} with {jobs} jobs")
        ClientProcess(cmd + ["--jobs", str(jobs), path], env, stdout=subprocess.DEVNULL).check(what)
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def _terminate_sessions(conn, name: str) -> None:  # type: ignore[no-untyped-def]
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                 (name,))


def drop_database(ctx: Context, name: str, server_major: int) -> None:
    sql = _sql()
    try:
        with ctx.pg.connect() as conn:
            if server_major >= 13:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            else:
                _terminate_sessions(conn, name)
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    except Exception as exc:
        ctx.progress.warn(f"could not drop database {name!r}: {exc}; drop it by hand")


def _rename(ctx: Context, work_db: str, target: str, server_major: int) -> None:
    """Hand a restored database over under its name (nobody else knew the temporary one)."""
    sql = _sql()
    ctx.progress.stage(f"naming the restored database {target!r}")
    try:
        with ctx.pg.connect() as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(work_db),
                                                                          sql.Identifier(target)))
    except Exception as exc:  # psycopg.Error: e.g. the name was taken meanwhile
        drop_database(ctx, work_db, server_major)
        raise PostgresError(f"cannot name the restored database {target!r}: {str(exc).strip().splitlines()[0]}; "
                            f"the restored copy was dropped") from None


def _swap_in(ctx: Context, restored: str, target: str, server_major: int) -> str:
    """Rename the current database aside, give the restored one its name, then drop the old one."""
    sql = _sql()
    aside = _short_name(target, "pgb_old_" + secrets.token_hex(3))
    ctx.progress.stage(f"replacing database {target!r} (old one renamed to {aside!r} until the swap is done)")
    with ctx.pg.connect() as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(target)))
        _terminate_sessions(conn, target)
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(target), sql.Identifier(aside)))
        try:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(restored),
                                                                          sql.Identifier(target)))
        except Exception:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(aside), sql.Identifier(target)))
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(target)))
            raise
    drop_database(ctx, aside, server_major)
    return aside
