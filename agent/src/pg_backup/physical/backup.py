"""``backup --physical``: a full or incremental base backup into the repository.

Each archive the server sends (``base.tar``, one ``<oid>.tar`` per extra tablespace, and PostgreSQL's
own ``backup_manifest``) goes through the one-pass pipeline (zstd → OpenPGP → SHA-256 → storage) as
an object of its own; nothing touches the local disk except, on PostgreSQL 17+, a private copy of
the plaintext ``backup_manifest`` that the next incremental backup uploads (:mod:`.incremental`).

Commit rule: the manifest is written only once the backup's last WAL segment (``stop_wal``) is in
this repository's WAL archive; a base backup without that segment cannot be made consistent.
"""
from __future__ import annotations

import io
import socket
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, Dict, List, Optional, Tuple

from .. import __version__
from ..config import TIERS
from ..context import Context
from ..crypto import CIPHER
from ..errors import PostgresError, RefusedError, UsageError
from ..manifest import DatabaseInfo, EncryptionInfo, Manifest, StoredObject, allocate_backup_id, iso
from ..pipeline import store_stream
from ..postgres.archiver import archiver_state
from ..wal.names import format_lsn, wal_range
from .archiving import check_archiving_configured, secure_backup_wal, start_backup_wal_push
from .config_files import config_archive
from .incremental import SHA_KEY, Decision, ManifestCopy, decide
from .layout import BASE_OBJECT, CONFIG_OBJECT, ENCRYPTED_SUFFIX, object_for, part_name, split_records
from .stream import MIN_INCREMENTAL_MAJOR, MIN_SERVER_MAJOR, BaseBackupStream, TablespaceHeader
from .tarsplit import TarSplitter

MAX_RATE_RANGE = (32, 1048576)  # what the server accepts for MAX_RATE (kB/s)


def _server_facts(ctx: Context) -> Dict[str, Any]:
    with ctx.pg.connect() as conn:
        state = archiver_state(conn)
        state["segment_size"] = int(conn.execute(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'").fetchone()[0])
        state["tablespaces"] = {int(r[0]): r[1] for r in conn.execute(
            "SELECT oid, spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')")}
        state["checkpoint"] = conn.execute(
            "SELECT current_setting('checkpoint_timeout'), current_setting('checkpoint_completion_target')").fetchone()
        state["files"] = dict(zip(("data_directory", "postgresql.conf", "pg_hba.conf", "pg_ident.conf"), conn.execute(
            "SELECT current_setting('data_directory'), current_setting('config_file'), current_setting('hba_file'),"
            " current_setting('ident_file')").fetchone()))
    return state


def _after_stop(ctx: Context) -> Tuple[str, int]:
    """Server time and next transaction id, read after pg_backup_stop: both are upper bounds of the
    backup's consistency point, which is the safe side for choosing a base backup for a target."""
    with ctx.pg.connect() as conn:
        row = conn.execute("SELECT clock_timestamp(), pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
    return iso(row[0]), int(row[1])


SPOOL_IN_MEMORY = 64 << 20      # a larger backup_manifest (millions of files) spills to the state directory


def spool_archive(source: Any, state_dir: str) -> BinaryIO:
    """Read one (small) archive of the stream to its end into a private spool, rewound."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=state_dir)  # noqa: SIM115 - caller closes
    while True:
        block = source.read(1 << 20)
        if not block:
            break
        spool.write(block)
    spool.seek(0)
    return spool  # type: ignore[return-value]


def _store_small(ctx: Context, backup_id: str, name: str, role: str, source: BinaryIO, options: Any) -> StoredObject:
    """One small object through the pipeline, in a worker thread."""
    compression = ctx.settings.compression
    with source:
        res = store_stream(source, ctx.storage, ctx.repo.object_key(backup_id, name), ctx.gpg,
                           what=f"{backup_id}/{name}", level=compression.level, threads=compression.threads,
                           options=options)
    return StoredObject(name, role, res.size, res.sha256, res.raw_size, version_id=res.version_id)


def _store_archive(ctx: Context, stream: BaseBackupStream, backup_id: str, name: str, role: str,
                   options: Any) -> Tuple[List[StoredObject], List[Dict[str, Any]]]:
    """One tar archive of the stream as objects of at most ``physical.archive_part_mib`` each (tarsplit.py):
    the stored objects, and the manifest's ``parts`` record when there is more than one."""
    compression, progress = ctx.settings.compression, ctx.progress
    splitter = TarSplitter(stream, ctx.settings.physical.archive_part_mib << 20, f"{backup_id}/{name}")
    stored: List[StoredObject] = []
    while True:
        part = splitter.next_part()
        if part is None:
            break
        obj = part_name(name, part.index)
        if part.index > 1:
            stream_name = name[:-len(ENCRYPTED_SUFFIX)]
            progress.stage(f"storing {obj} (part {part.index}, from byte {part.offset} of {stream_name})")
        result = store_stream(part, ctx.storage, ctx.repo.object_key(backup_id, obj), ctx.gpg,
                              what=f"{backup_id}/{obj}", level=compression.level, threads=compression.threads,
                              options=options,
                              progress=lambda phase, n, base=part.offset: progress.bytes(phase, base + n))
        stored.append(StoredObject(obj, role, result.size, result.sha256, result.raw_size,
                                   version_id=result.version_id))
    return stored, (split_records(name, [p.record() for p in splitter.parts]) if splitter.split else [])


def check_max_rate(value: int) -> int:
    if value and not MAX_RATE_RANGE[0] <= value <= MAX_RATE_RANGE[1]:
        raise UsageError(f"physical.max_rate_kib is {value}; PostgreSQL accepts 0 (unthrottled) or "
                         f"{MAX_RATE_RANGE[0]}..{MAX_RATE_RANGE[1]} kB/s")
    return value


def checkpoint_wait(mode: str, timeout: str, target: str) -> str:
    """What the backup waits for before the first byte, said before it waits (a spread checkpoint is
    silent for minutes otherwise)."""
    if mode == "fast":
        return "waiting for the server's fast checkpoint"
    return (f"waiting for the server's spread checkpoint (up to checkpoint_timeout {timeout} x "
            f"checkpoint_completion_target {target}; physical.checkpoint: fast starts at once)")


def _start(ctx: Context, backup_id: str, decision: Decision, max_rate: int
           ) -> Tuple[BaseBackupStream, int, int, List[TablespaceHeader], Decision]:
    """Open the replication connection and start the base backup: incremental when ``decision`` says
    so (``UPLOAD_MANIFEST`` first). When the server itself refuses the incremental one (its summaries
    went away since they were checked), ``auto`` starts a full backup instead and ``always`` refuses."""
    settings = ctx.settings
    fast = settings.physical.checkpoint == "fast"
    on_wait = ctx.progress.waiting(f"the server's {settings.physical.checkpoint} checkpoint",
                                   "" if fast else "physical.checkpoint: fast starts at once")
    stream = BaseBackupStream(settings.postgres, application_name=f"pg-backup {backup_id}")
    try:
        if decision.incremental:
            try:
                with open(decision.manifest_path or "", "rb") as fh:
                    stream.upload_manifest(fh)
                start = stream.start(f"pg-backup {backup_id}", fast=fast, max_rate_kib=max_rate, incremental=True,
                                     on_wait=on_wait)
                return (stream, *start, decision)
            except PostgresError as exc:
                stream.close()
                if decision.mode == "always":
                    raise UsageError(f"cannot take an incremental backup: the server refused it: {exc.message}",
                                     hint="take a full backup (backup --physical --full)") from None
                decision.cleanup()
                decision = Decision(decision.mode, reason=f"the server refused an incremental backup to "
                                                          f"{decision.parent.backup_id}: {exc.message}")  # type: ignore[union-attr]
                ctx.progress.warn(f"{decision.reason}; taking a full backup instead")
                stream = BaseBackupStream(settings.postgres, application_name=f"pg-backup {backup_id}")
        return (stream, *stream.start(f"pg-backup {backup_id}", fast=fast, max_rate_kib=max_rate, on_wait=on_wait),
                decision)
    except BaseException:
        stream.close()
        raise


def run_physical_backup(ctx: Context, tier: str, mode: str = "never") -> Manifest:
    """A physical backup of ``tier``; ``mode`` (never, auto, always) says whether it may be incremental."""
    from ..backup import warm_up_sql_driver

    settings = ctx.settings
    if tier not in TIERS:
        raise UsageError(f"unknown tier {tier!r}; use daily, weekly or monthly")
    max_rate = check_max_rate(settings.physical.max_rate_kib)
    progress = ctx.progress
    # The key's fingerprint (scrypt of the passphrase, or gpg reading the public key: 0.1-0.3 s) is
    # computed beside the driver import and the server checks, which touch neither gpg nor its home.
    gpg = ctx.gpg
    with ThreadPoolExecutor(1, thread_name_prefix="pgb-fingerprint") as pool:
        fingerprint_job = pool.submit(gpg.encryption_fingerprint)
        try:
            warm_up_sql_driver()
            ctx.storage.check()
            info = ctx.pg.server_info()
            if info.major < MIN_SERVER_MAJOR:
                raise UsageError(f"physical backups need PostgreSQL {MIN_SERVER_MAJOR} or newer; the server at "
                                 f"{settings.postgres.host}:{settings.postgres.port} runs {info.version}",
                                 hint="use logical backups (backup --tier ...) for this server")
            if info.in_recovery:
                raise RefusedError(f"the server at {settings.postgres.host}:{settings.postgres.port} is a standby; "
                                   f"physical backups are taken on the primary",
                                   hint="run it there, or pass --skip-if-standby")
            facts = _server_facts(ctx)
            check_archiving_configured(facts)
        except BaseException:
            key_error = fingerprint_job.exception()      # a key problem is reported first, as before
            if key_error is not None:
                raise key_error from None
            raise
        fingerprint = fingerprint_job.result()
    decision = decide(ctx, mode, info.major, info.version, info.system_identifier,
                      ctx.repo.manifests() if mode != "never" else [])
    archive = ctx.wal_archive
    databases = ctx.pg.databases()

    started = ctx.clock()
    backup_id = allocate_backup_id(ctx.repo.exists, started, "physical", tier)
    checkpoint = settings.physical.checkpoint
    what = f"incremental to {decision.parent.backup_id}" if decision.parent else "base backup"
    progress.stage(f"backup {backup_id}: {what} of PostgreSQL {info.version} to {ctx.repo.location} "
                   f"({checkpoint} checkpoint)")
    if decision.reason:
        progress.stage(f"full backup: {decision.reason}")
    progress.stage(checkpoint_wait(checkpoint, *facts["checkpoint"]))
    options = ctx.put_options(tier, "physical")
    objects: List[StoredObject] = []
    pending: List["Future[StoredObject]"] = []
    tablespaces: List[Dict[str, Any]] = []
    parts: Dict[str, List[Dict[str, Any]]] = {}
    server_started = facts["now"]
    copy = ManifestCopy(ctx, backup_id, keep_copy=info.major >= MIN_INCREMENTAL_MAJOR)
    small = ThreadPoolExecutor(2, thread_name_prefix="pgb-small-object")
    try:
        stream, start_lsn, timeline, heads, decision = _start(ctx, backup_id, decision, max_rate)
        try:
            locations = {h.oid: h.location for h in heads}
            progress.stage(f"checkpoint done: WAL from {format_lsn(start_lsn)} on timeline {timeline}; "
                           f"{len(heads)} extra tablespace(s)")
            while True:
                head = stream.next_archive()
                if head is None:
                    break
                name, role, oid = object_for(head[0])
                progress.stage(f"storing {name}" + (f" (tablespace {facts['tablespaces'].get(oid, oid)} at "
                                                    f"{locations.get(oid)})" if oid is not None else ""))
                if role == "backup_manifest":
                    # The last archive, small: spooled, then stored beside pg_backup_stop, the stop-segment
                    # wait and the configuration files (joined before the commit).
                    spool = spool_archive(copy.reader(stream), settings.paths.state_dir)
                    pending.append(small.submit(_store_small, ctx, backup_id, name, role, spool, options))
                    continue
                progress.expect(stream.sizes.get(oid), "server's estimate")
                stored, records = _store_archive(ctx, stream, backup_id, name, role, options)
                objects.extend(stored)
                if records:
                    parts[name] = records
                if oid is not None:
                    tablespaces.append({"oid": oid, "name": facts["tablespaces"].get(oid), "object": name,
                                        "location": head[1] or locations.get(oid)})
            stop_lsn, stop_timeline = stream.finish()
        finally:
            stream.close()
        manifest = _finish(ctx, backup_id, tier, started, info, fingerprint, facts, decision, objects, tablespaces,
                           parts, databases, start_lsn, timeline, stop_lsn, stop_timeline, heads, copy, options, archive,
                           server_started, small, pending)
        kept = copy.keep()
        if kept:
            progress.stage(f"kept the backup_manifest of {backup_id} for the next incremental backup ({kept})")
        return manifest
    finally:
        small.shutdown(wait=True)
        copy.discard()
        decision.cleanup()


def _finish(ctx: Context, backup_id: str, tier: str, started: Any, info: Any, fingerprint: str,
            facts: Dict[str, Any], decision: Decision, objects: List[StoredObject], tablespaces: List[Dict[str, Any]],
            parts: Dict[str, List[Dict[str, Any]]],
            databases: Any, start_lsn: int, timeline: int, stop_lsn: int, stop_timeline: int,
            heads: List[TablespaceHeader], copy: ManifestCopy, options: Any, archive: Any,
            server_started: Any, small: ThreadPoolExecutor, pending: List["Future[StoredObject]"]) -> Manifest:
    """After the stream: the configuration files, the WAL wait and the manifest (the commit). The small
    objects (``pending``) are stored meanwhile; the commit waits for every one of them."""
    settings, progress = ctx.settings, ctx.progress
    roles = [o.role for o in objects] + ["backup_manifest"] * len(pending)
    has_base = BASE_OBJECT in (o.name for o in objects)
    if not has_base or roles.count("backup_manifest") != 1 or len(tablespaces) != len(heads):
        raise PostgresError(f"base backup of {backup_id} is incomplete: the server sent {', '.join(roles) or 'nothing'}"
                            f" for {len(heads)} extra tablespace(s)")
    segment_size = facts["segment_size"]
    start_wal, stop_wal = wal_range(start_lsn, timeline, stop_lsn, stop_timeline, segment_size)
    pushing = start_backup_wal_push(ctx, start_wal, stop_wal, settings.physical.wal_wait_seconds,
                                    segment_size=segment_size, data_directory=facts["files"]["data_directory"],
                                    system_identifier=info.system_identifier, fingerprint=fingerprint,
                                    archive_command=facts["archive_command"])
    checkpoint = settings.physical.checkpoint
    notes = [f"base backup {checkpoint} checkpoint"]
    chain = decision.chain() if decision.incremental else None
    if chain is not None:
        notes.append(f"incremental to {chain.parent} (depth {chain.depth} of the chain of {chain.root}): restore "
                     f"combines {', '.join(chain.members)} and this backup with pg_combinebackup")
    elif decision.reason:
        notes.append(f"full backup although an incremental one was asked for ({decision.mode}): {decision.reason}")
    config_tar, config_files = config_archive(facts["files"], notes)
    if config_tar is not None:
        progress.stage(f"storing {CONFIG_OBJECT} ({', '.join(sorted(config_files))}: they live outside the data "
                       f"directory)")
        pending.append(small.submit(_store_small, ctx, backup_id, CONFIG_OBJECT, "config", io.BytesIO(config_tar),
                                    options))
    stop_time, next_xid = _after_stop(ctx)
    secure_backup_wal(ctx, archive, start_wal, stop_wal, settings.physical.wal_wait_seconds, since=server_started,
                      segment_size=segment_size, pushing=pushing)
    objects.extend(job.result() for job in pending)     # every object stored before the manifest
    extra: Dict[str, Any] = {SHA_KEY: copy.sha256}
    if config_files:
        extra["config_files"] = config_files
    if decision.reason:
        extra["full_reason"] = decision.reason
    manifest = Manifest(
        backup_id=backup_id, kind="physical", tier=tier, cluster=ctx.cluster, hostname=socket.gethostname(),
        agent_version=__version__, server_version=info.version, server_version_num=info.version_num,
        system_identifier=info.system_identifier, started_at=iso(started), finished_at=iso(ctx.clock()),
        encryption=EncryptionInfo("openpgp", settings.encryption.mode, CIPHER, fingerprint),
        compression={"algorithm": "zstd", "level": settings.compression.level}, objects=objects,
        databases=[DatabaseInfo(d.name, BASE_OBJECT, d.encoding, d.collate, d.ctype, d.owner, d.size_bytes)
                   for d in databases],
        timeline=timeline, start_lsn=format_lsn(start_lsn), stop_lsn=format_lsn(stop_lsn), start_wal=start_wal,
        stop_wal=stop_wal, wal_segment_size=segment_size, tablespaces=sorted(tablespaces, key=lambda t: t["oid"]),
        stop_time=stop_time, next_xid=next_xid, incremental=chain, parts=parts,
        notes=notes + [f"WAL {start_wal} .. {stop_wal} archived"], extra=extra)
    ctx.repo.commit_manifest(manifest, options)
    kind = f"incremental (depth {chain.depth}, parent {chain.parent})" if chain else "full"
    progress.stage(f"backup {backup_id} complete: {kind}, {len(objects)} object(s), WAL {start_wal} .. {stop_wal}")
    return manifest


def describe_kind(m: Manifest) -> str:
    """"full" or "incremental to <parent> (depth N)" for messages."""
    if m.incremental is None:
        return "full"
    return f"incremental to {m.incremental.parent} (depth {m.incremental.depth})"


def full_reason(m: Manifest) -> Optional[str]:
    """Why a backup that was asked to be incremental is full (None otherwise)."""
    reason = m.extra.get("full_reason")
    return str(reason) if reason else None
