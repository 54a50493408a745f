"""Logical backups: every database with pg_dump (custom format, its compression off) plus globals.

One pass per database (DESIGN §3): pg_dump's stdout streams through zstd, gpg and SHA-256 into
storage. The manifest is written after every object is durable, and never when anything failed.
"""
from __future__ import annotations

import re
import socket
import subprocess
import threading
from typing import List, Optional, Sequence

from . import __version__
from .context import Context
from .crypto import CIPHER
from .errors import NotFoundError, UsageError
from .manifest import DatabaseInfo, EncryptionInfo, Manifest, StoredObject, allocate_backup_id, iso
from .pipeline import lower_priority, store_stream
from .postgres.client import DatabaseRow, SnapshotSession
from .postgres.tools import ClientProcess, tool_version
from .storage.base import PutOptions

ENCRYPTED_SUFFIX = ".zst.gpg"


def object_name_for_database(index: int, name: str) -> str:
    """Keys stay ASCII and unambiguous whatever the database is called; the manifest maps them back."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40].strip(".") or "db"
    return f"db-{index:04d}-{safe}.dump{ENCRYPTED_SUFFIX}"


def select_databases(available: List[DatabaseRow], requested: Sequence[str], configured: Sequence[str],
                     excluded: Sequence[str]) -> List[DatabaseRow]:
    by_name = {d.name: d for d in available}
    wanted = list(requested) or list(configured)
    if wanted:
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise NotFoundError(f"database {', '.join(repr(m) for m in missing)} does not exist or does not allow "
                                f"connections", hint=f"databases here: {', '.join(sorted(by_name)) or 'none'}")
        chosen = [by_name[n] for n in dict.fromkeys(wanted)]
    else:
        chosen = list(available)
    return [d for d in chosen if d.name not in set(excluded)]


def run_backup(ctx: Context, tier: str, databases: Sequence[str] = ()) -> Manifest:
    settings = ctx.settings
    if tier not in ("daily", "weekly", "monthly"):
        raise UsageError(f"unknown tier {tier!r}; use daily, weekly or monthly")
    progress = ctx.progress
    # Start-up work that does not need each other runs side by side: psycopg's import (~0.2 s) in a
    # thread while gpg reads the key and storage answers its check.
    warm = threading.Thread(target=warm_up_sql_driver, daemon=True)
    warm.start()
    fingerprint = ctx.gpg.encryption_fingerprint()
    ctx.storage.check()
    warm.join()
    info = ctx.pg.server_info()
    pg_dump = ctx.pg.tool("pg_dump", info.major)
    chosen = select_databases(ctx.pg.databases(), databases, settings.backup.databases,
                              settings.backup.exclude_databases)
    if not chosen and not settings.backup.globals:
        raise UsageError("nothing to back up: no databases selected and backup.globals is false")

    started = ctx.clock()
    backup_id = allocate_backup_id(ctx.repo.exists, started, "logical", tier)
    progress.stage(f"backup {backup_id}: {len(chosen)} database(s) from PostgreSQL {info.version} "
                   f"to {ctx.repo.location}")
    options = ctx.put_options(tier, "logical")
    level, threads = settings.compression.level, settings.compression.threads
    objects: List[StoredObject] = []
    db_infos: List[DatabaseInfo] = []
    notes: List[str] = []

    globals_job: Optional[_GlobalsJob] = None
    if settings.backup.globals:
        cmd = [ctx.pg.tool("pg_dumpall", info.major), "--globals-only"]
        if not info.is_superuser:
            cmd.append("--no-role-passwords")
            notes.append("globals dumped without role passwords (the backup role is not a superuser)")
        progress.stage("globals: roles and tablespaces (alongside the first database)")
        # Small but slow to start (a process and catalog queries): it overlaps the first database.
        globals_job = _GlobalsJob(ctx, cmd, ctx.repo.object_key(backup_id, "globals.sql" + ENCRYPTED_SUFFIX),
                                  level, threads, options)
        globals_job.start()

    try:
        for index, db in enumerate(chosen, start=1):
            name = object_name_for_database(index, db.name)
            progress.stage(f"database {db.name!r} ({index}/{len(chosen)})")
            progress.expect(db.size_bytes, "database size")
            session = SnapshotSession(ctx.pg, db.name)
            try:
                counts = session.row_counts() if settings.backup.row_counts else None
                proc = ClientProcess([pg_dump, "--format=custom", "-Z0", f"--snapshot={session.snapshot_id}"],
                                     ctx.pg.env(db.name), stdout=subprocess.PIPE)
                try:
                    result = store_stream(proc.stdout, ctx.storage, ctx.repo.object_key(backup_id, name), ctx.gpg,
                                          what=f"database {db.name!r}", level=level, threads=threads, options=options,
                                          finish_source=lambda: proc.check(f"database {db.name!r}"),
                                          progress=progress.bytes)
                finally:
                    proc.kill()
            finally:
                session.close()
            objects.append(StoredObject(name, "database", result.size, result.sha256, result.raw_size, database=db.name,
                                        version_id=result.version_id))
            db_infos.append(DatabaseInfo(db.name, name, db.encoding, db.collate, db.ctype, db.owner, db.size_bytes, counts))

    except BaseException:
        if globals_job is not None:
            globals_job.abandon()
        raise
    if globals_job is not None:
        objects.insert(0, globals_job.result())
    manifest = Manifest(
        backup_id=backup_id, kind="logical", tier=tier, cluster=ctx.cluster, hostname=socket.gethostname(),
        agent_version=__version__, server_version=info.version, server_version_num=info.version_num,
        system_identifier=info.system_identifier, started_at=iso(started), finished_at=iso(ctx.clock()),
        encryption=EncryptionInfo("openpgp", settings.encryption.mode, CIPHER, fingerprint),
        compression={"algorithm": "zstd", "level": level}, objects=objects, databases=db_infos,
        pg_dump_version=tool_version(pg_dump), notes=notes)
    ctx.repo.commit_manifest(manifest, options)
    progress.stage(f"backup {backup_id} complete: {len(objects)} object(s)")
    return manifest


def warm_up_sql_driver() -> None:
    try:
        import psycopg  # noqa: F401  (only loads the module; errors surface on first use)
    except ImportError:
        pass


class _GlobalsJob(threading.Thread):
    """pg_dumpall --globals-only through the pipeline, in a thread of its own."""

    def __init__(self, ctx: Context, cmd: List[str], key: str, level: int, threads: int, options: PutOptions):
        super().__init__(daemon=True)
        self.ctx, self.cmd, self.key, self.level, self.threads, self.options = ctx, cmd, key, level, threads, options
        self.proc = ClientProcess(cmd, ctx.pg.env(), stdout=subprocess.PIPE)
        lower_priority(self.proc.proc.pid)
        self._stored: Optional[StoredObject] = None
        self._error: Optional[BaseException] = None

    def run(self) -> None:
        proc = self.proc
        try:
            res = store_stream(proc.stdout, self.ctx.storage, self.key, self.ctx.gpg, what="globals",
                               level=self.level, threads=self.threads, options=self.options,
                               finish_source=lambda: proc.check("globals"), background=True)
            self._stored = StoredObject(self.key.rsplit("/", 1)[-1], "globals", res.size, res.sha256, res.raw_size,
                                        version_id=res.version_id)
        except BaseException as exc:  # re-raised in the caller's thread by result()
            self._error = exc
        finally:
            proc.kill()

    def result(self) -> StoredObject:
        self.join()
        if self._error is not None:
            raise self._error
        assert self._stored is not None
        return self._stored

    def abandon(self) -> None:
        self.proc.kill()
        self.join(timeout=30)

