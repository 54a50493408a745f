"""Physical base backups (``backup --physical``) for point-in-time recovery.

The base backup is read from the server's replication protocol (``BASE_BACKUP``, PostgreSQL 15+)
through libpq (``psycopg.pq``), one CopyData message at a time, and each archive the server sends
(``base.tar``, one ``<oid>.tar`` per extra tablespace, and PostgreSQL's own ``backup_manifest``) goes
through the one-pass pipeline (zstd → OpenPGP → SHA-256 → storage) as an object of its own. Nothing
touches the local disk. Why not ``pg_basebackup -D -``: it refuses to write more than one tablespace
to stdout, and with ``-X none`` it waits without limit inside ``pg_backup_stop`` when archiving is
broken; here the backup asks the server not to wait (``WAIT false``) and waits itself, with a
deadline and the archiver's own error in the message (docs/pitr.md, "Why the replication protocol").

Commit rule: the manifest is written only once the backup's last WAL segment (``stop_wal``) is in
this repository's WAL archive; a base backup without that segment cannot be made consistent.
"""
from __future__ import annotations

import io
import os
import re
import select
import socket
import tarfile
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from . import __version__
from .config import TIERS, PostgresSettings
from .context import Context
from .crypto import CIPHER
from .errors import ArchivingError, PgBackupError, PostgresError, RefusedError, UsageError
from .manifest import DatabaseInfo, EncryptionInfo, Manifest, StoredObject, allocate_backup_id, iso
from .pipeline import store_stream
from .postgres.archiver import archiver_state, archiving_off, failed_since, wait_archived
from .wal.names import format_lsn, parse_lsn_arg, wal_range

ENCRYPTED_SUFFIX = ".zst.gpg"
BASE_OBJECT = "base.tar" + ENCRYPTED_SUFFIX
BACKUP_MANIFEST_OBJECT = "backup_manifest" + ENCRYPTED_SUFFIX
CONFIG_OBJECT = "config.tar" + ENCRYPTED_SUFFIX      # configuration files kept outside the data directory
MIN_SERVER_MAJOR = 15           # the single-COPY BASE_BACKUP protocol with typed messages
MAX_RATE_RANGE = (32, 1048576)  # what the server accepts for MAX_RATE (kB/s)
_ARCHIVE_NAME = re.compile(r"^(base|[0-9]+)\.tar$")


def tablespace_object(oid: int) -> str:
    return f"tablespace-{oid}.tar{ENCRYPTED_SUFFIX}"


# -- the replication protocol -------------------------------------------------------------------

def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class TablespaceHeader:
    oid: int
    location: str


class BaseBackupStream:
    """One ``BASE_BACKUP`` over a replication connection, read as a sequence of archives.

    Use: :meth:`start`, then :meth:`next_archive` / :meth:`read` until :meth:`next_archive` returns
    None, then :meth:`finish`. The connection is non-blocking and every wait is a ``select`` (the GIL
    is free while the server checkpoints or sends). Closing the connection early makes the server
    abort the backup (``pg_backup_stop`` never runs), which is what an interrupted backup needs.
    """

    def __init__(self, settings: PostgresSettings, *, application_name: str = "pg-backup"):
        from psycopg import conninfo, pq

        self._pq = pq
        params: Dict[str, Any] = {"host": settings.host, "port": settings.port, "user": settings.user,
                                  "dbname": settings.dbname, "replication": "true",
                                  "connect_timeout": settings.connect_timeout, "application_name": application_name}
        if settings.passfile:
            params["passfile"] = settings.passfile
        if settings.sslmode:
            params["sslmode"] = settings.sslmode
        self.where = f"{settings.host}:{settings.port}"
        self.user = settings.user
        self.conn = pq.PGconn.connect(conninfo.make_conninfo(**params).encode())
        if self.conn.status != pq.ConnStatus.OK:
            detail = self._error_text()
            everything = (self.conn.error_message or b"").decode(errors="replace").lower()
            self.conn.finish()
            hint = "check the postgres section of the configuration and that the server runs"
            if any(w in everything for w in ("pg_hba.conf", "replication", "wal sender", "max_wal_senders")):
                hint = ("the role needs the REPLICATION attribute (or superuser), pg_hba.conf a 'replication' line "
                        "for it, and max_wal_senders a free slot")
            raise PostgresError(f"cannot open a replication connection to {self.where} as {self.user}: {detail}",
                                hint=hint)
        self.conn.nonblocking = 1
        self._pending: Optional[memoryview] = None
        self._in_archive = False
        self._copy_done = False

    # low level ---------------------------------------------------------------------------------
    def _error_text(self, result: Any = None) -> str:
        raw = (result.error_message if result is not None else self.conn.error_message) or b""
        lines = [ln.strip() for ln in raw.decode(errors="replace").splitlines() if ln.strip()]
        return lines[0] if lines else "no detail"

    def _wait_readable(self) -> None:
        sock = self.conn.socket
        while not select.select([sock], [], [], 1.0)[0]:
            pass
        try:
            self.conn.consume_input()
        except Exception:  # psycopg.OperationalError: the connection broke
            raise PostgresError(f"the replication connection to {self.where} broke: {self._error_text()}") from None

    def _result(self) -> Any:
        """The next result (None after the last one), waiting without holding the GIL."""
        while self.conn.is_busy():
            self._wait_readable()
        return self.conn.get_result()

    def _check(self, result: Any, what: str) -> Any:
        pq = self._pq
        if result is None:
            raise PostgresError(f"the server ended the base backup early ({what})")
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise PostgresError(f"base backup failed on {self.where}: {self._error_text(result)}")
        return result

    def _message(self) -> Optional[memoryview]:
        """The next CopyData payload, or None at the end of the COPY stream."""
        if self._pending is not None:
            msg, self._pending = self._pending, None
            return msg
        if self._copy_done:
            return None
        while True:
            n, data = self.conn.get_copy_data(1)
            if n > 0:
                return memoryview(data)
            if n == 0:
                self._wait_readable()
                continue
            if n == -1:
                self._copy_done = True
                return None
            raise PostgresError(f"base backup stream from {self.where} failed: {self._error_text()}")

    # the backup --------------------------------------------------------------------------------
    def start(self, label: str, *, fast: bool, max_rate_kib: int = 0) -> Tuple[int, int, List[TablespaceHeader]]:
        """Send BASE_BACKUP; return (start LSN, timeline, extra tablespaces) once the checkpoint is done."""
        options = [f"LABEL {_quote_literal(label)}", f"CHECKPOINT '{'fast' if fast else 'spread'}'",
                   "WAIT false", "MANIFEST 'yes'", "MANIFEST_CHECKSUMS 'SHA256'", "TABLESPACE_MAP true"]
        if max_rate_kib:
            options.append(f"MAX_RATE {int(max_rate_kib)}")
        try:
            self.conn.send_query(f"BASE_BACKUP ({', '.join(options)})".encode())
        except Exception:  # psycopg.OperationalError
            raise PostgresError(f"cannot start a base backup on {self.where}: {self._error_text()}") from None
        pq = self._pq
        first = self._check(self._result(), "no start position")
        if first.status != pq.ExecStatus.TUPLES_OK or first.ntuples != 1:
            raise PostgresError(f"unexpected answer to BASE_BACKUP from {self.where} (status {first.status})")
        start_lsn = parse_lsn_arg(first.get_value(0, 0).decode())
        timeline = int(first.get_value(0, 1).decode())
        heads = self._check(self._result(), "no tablespace list")
        tablespaces = []
        for row in range(heads.ntuples):
            oid = heads.get_value(row, 0)
            if oid is not None:
                tablespaces.append(TablespaceHeader(int(oid.decode()), (heads.get_value(row, 1) or b"").decode()))
        copy = self._check(self._result(), "no data")
        if copy.status != pq.ExecStatus.COPY_OUT:
            raise PostgresError(f"unexpected answer to BASE_BACKUP from {self.where}: no COPY stream "
                                f"(status {copy.status})")
        return start_lsn, timeline, tablespaces

    def next_archive(self) -> Optional[Tuple[str, Optional[str]]]:
        """(archive name, tablespace location) of the next archive, ("backup_manifest", None) for the
        manifest, or None at the end of the stream. The previous archive must have been read to its end."""
        while True:
            msg = self._message()
            if msg is None:
                return None
            kind = msg[0:1].tobytes()
            if kind == b"p":
                continue
            if kind == b"n":
                parts = msg[1:].tobytes().split(b"\0")
                name, location = parts[0].decode(), (parts[1].decode() if len(parts) > 1 else "")
                if not _ARCHIVE_NAME.match(name):
                    raise PostgresError(f"base backup from {self.where} sent an archive named {name!r}; "
                                        f"expected base.tar or <oid>.tar")
                self._in_archive = True
                return name, location or None
            if kind == b"m":
                self._in_archive = True
                return "backup_manifest", None
            raise PostgresError(f"base backup stream from {self.where}: message {kind!r} outside an archive")

    def read(self, size: int = -1) -> bytes:
        """Data of the current archive (up to ``size`` bytes, at least one message); b"" at its end."""
        if not self._in_archive:
            return b""
        want = size if size and size > 0 else 1 << 20
        parts: List[memoryview] = []
        total = 0
        while total < want:
            msg = self._message()
            if msg is None:
                self._in_archive = False
                break
            kind = msg[0:1].tobytes()
            if kind == b"d":
                parts.append(msg[1:])
                total += len(msg) - 1
            elif kind == b"p":
                continue
            elif kind in (b"n", b"m"):
                self._pending = msg
                self._in_archive = False
                break
            else:
                raise PostgresError(f"base backup stream from {self.where}: unknown message type {kind!r}")
        return b"".join(parts)

    def finish(self) -> Tuple[int, int]:
        """After the last archive: the stop LSN and timeline (pg_backup_stop has run on the server)."""
        if self.next_archive() is not None:
            raise PostgresError(f"base backup stream from {self.where} has more archives than were read")
        pq = self._pq
        stop: Optional[Tuple[int, int]] = None
        while True:
            res = self._result()
            if res is None:
                break
            self._check(res, "")
            if res.status == pq.ExecStatus.TUPLES_OK and res.ntuples == 1 and res.nfields >= 2:
                stop = (parse_lsn_arg(res.get_value(0, 0).decode()), int(res.get_value(0, 1).decode()))
        if stop is None:
            raise PostgresError(f"base backup on {self.where} ended without a stop position")
        return stop

    def close(self) -> None:
        """Idempotent; before the stream's end this makes the server abort the backup."""
        if self.conn is not None:
            self.conn.finish()
            self.conn = None  # type: ignore[assignment]


# -- archiving ---------------------------------------------------------------------------------

def check_archiving_configured(state: Dict[str, Any]) -> None:
    """Refuse before the backup when the server cannot archive the WAL the backup will need."""
    off = archiving_off(state)
    if off == "archive_mode off":
        raise ArchivingError("WAL archiving is off (archive_mode = off): a physical backup without archived WAL "
                             "cannot be restored",
                             hint="configure archiving with archive_command 'pg-backup wal-push %p' (the "
                                  "wal_archiving role does it) and restart PostgreSQL")
    if off:
        raise ArchivingError("WAL archiving is not configured (archive_mode is on but archive_command is empty): "
                             "a physical backup without archived WAL cannot be restored",
                             hint="set archive_command = 'pg-backup --config FILE wal-push %p' and reload")


def wait_for_wal(ctx: Context, archive: Any, segment: str, timeout: float, *, since: Any = None,
                 poll: float = 0.5) -> float:
    """Wait until ``segment`` is in this repository's WAL archive; raise ArchivingError with the
    archiver's own last failure when it does not arrive in time. Returns the seconds waited."""
    t0 = time.monotonic()
    ctx.progress.stage(f"waiting up to {timeout:.0f} s for WAL segment {segment} in the archive")
    if wait_archived(segment, archive.has, timeout, poll=poll)[0]:
        return time.monotonic() - t0
    detail = "PostgreSQL's archiver reported no failure"
    try:
        with ctx.pg.connect() as conn:
            state = archiver_state(conn)
        if failed_since(state, since):
            detail = f"archive_command last failed on {state['last_failed_wal']} at {state['last_failed_time']}"
        elif "wal-push" not in (state["archive_command"] or ""):
            detail = (f"archive_command {state['archive_command']!r} does not look like 'pg-backup wal-push', so it "
                      f"may archive somewhere else than {ctx.repo.location}")
    except PgBackupError as exc:
        detail = f"the server cannot be asked why: {exc.message}"
    raise ArchivingError(f"WAL segment {segment}, the last one this base backup needs, did not reach the archive "
                         f"within {timeout:.0f} s ({detail}); the backup was not committed",
                         hint="fix archiving (check with 'pg-backup wal-check') and run the backup again; prune "
                              "removes the uncommitted objects after retention.incomplete_grace_hours")


# -- the backup ---------------------------------------------------------------------------------

def _object_for(archive_name: str) -> Tuple[str, str, Optional[int]]:
    """(object name, role, tablespace oid) of an archive of the stream."""
    if archive_name == "backup_manifest":
        return BACKUP_MANIFEST_OBJECT, "backup_manifest", None
    stem = archive_name[:-len(".tar")]
    if stem == "base":
        return BASE_OBJECT, "base", None
    return tablespace_object(int(stem)), "tablespace", int(stem)


def _server_facts(ctx: Context) -> Dict[str, Any]:
    with ctx.pg.connect() as conn:
        state = archiver_state(conn)
        state["segment_size"] = int(conn.execute(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'").fetchone()[0])
        state["tablespaces"] = {int(r[0]): r[1] for r in conn.execute(
            "SELECT oid, spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')")}
        state["files"] = dict(zip(("data_directory", "postgresql.conf", "pg_hba.conf", "pg_ident.conf"), conn.execute(
            "SELECT current_setting('data_directory'), current_setting('config_file'), current_setting('hba_file'),"
            " current_setting('ident_file')").fetchone()))
    return state


_INCLUDE = re.compile(r"^\s*(include_dir|include_if_exists|include)\s*=?\s*'([^']*)'", re.M)


def config_archive(files: Dict[str, str], notes: List[str]) -> Tuple[Optional[bytes], Dict[str, str]]:
    """A tar of the configuration files that live outside the data directory (Debian keeps them in
    /etc/postgresql/<major>/<cluster>/), with the files their relative include directives name, so a
    recovered data directory can start on its own. (None, {}) when everything is inside it."""
    data_dir = os.path.realpath(files["data_directory"])
    outside = {name: path for name, path in files.items() if name != "data_directory" and path
               and not os.path.realpath(path).startswith(data_dir + os.sep)}
    if not outside:
        return None, {}
    members: Dict[str, bytes] = {}
    for name, path in outside.items():
        try:
            with open(path, "rb") as fh:
                members[name] = fh.read()
        except OSError as exc:
            notes.append(f"{name} ({path}) lives outside the data directory and could not be read ({exc.strerror}): "
                         f"it is not in the backup")
    conf_dir = os.path.dirname(outside.get("postgresql.conf", ""))
    if "postgresql.conf" in members and conf_dir:
        for kind, target in _INCLUDE.findall(members["postgresql.conf"].decode(errors="replace")):
            if os.path.isabs(target) or ".." in target.split("/"):
                continue  # absolute includes are commented out on recovery (a note says so)
            full = os.path.join(conf_dir, target)
            paths = sorted(os.path.join(full, f) for f in os.listdir(full) if f.endswith(".conf")) \
                if kind == "include_dir" and os.path.isdir(full) else [full]
            for path in paths:
                try:
                    with open(path, "rb") as fh:
                        members[os.path.relpath(path, conf_dir)] = fh.read()
                except OSError:
                    continue
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), {name: outside.get(name, os.path.join(conf_dir, name)) for name in members}


def _after_stop(ctx: Context) -> Tuple[str, int]:
    """Server time and next transaction id, read after pg_backup_stop: both are upper bounds of the
    backup's consistency point, which is the safe side for choosing a base backup for a target."""
    with ctx.pg.connect() as conn:
        row = conn.execute("SELECT clock_timestamp(), pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
    return iso(row[0]), int(row[1])


def check_max_rate(value: int) -> int:
    if value and not MAX_RATE_RANGE[0] <= value <= MAX_RATE_RANGE[1]:
        raise UsageError(f"physical.max_rate_kib is {value}; PostgreSQL accepts 0 (unthrottled) or "
                         f"{MAX_RATE_RANGE[0]}..{MAX_RATE_RANGE[1]} kB/s")
    return value


def run_physical_backup(ctx: Context, tier: str) -> Manifest:
    from .backup import warm_up_sql_driver

    settings = ctx.settings
    if tier not in TIERS:
        raise UsageError(f"unknown tier {tier!r}; use daily, weekly or monthly")
    max_rate = check_max_rate(settings.physical.max_rate_kib)
    progress = ctx.progress
    warm_up_sql_driver()
    fingerprint = ctx.gpg.encryption_fingerprint()
    ctx.storage.check()
    info = ctx.pg.server_info()
    if info.major < MIN_SERVER_MAJOR:
        raise UsageError(f"physical backups need PostgreSQL {MIN_SERVER_MAJOR} or newer; the server at "
                         f"{settings.postgres.host}:{settings.postgres.port} runs {info.version}",
                         hint="use logical backups (backup --tier ...) for this server")
    if info.in_recovery:
        raise RefusedError(f"the server at {settings.postgres.host}:{settings.postgres.port} is a standby; physical "
                           f"backups are taken on the primary", hint="run it there, or pass --skip-if-standby")
    facts = _server_facts(ctx)
    check_archiving_configured(facts)
    archive = ctx.wal_archive
    databases = ctx.pg.databases()

    started = ctx.clock()
    backup_id = allocate_backup_id(ctx.repo.exists, started, "physical", tier)
    checkpoint = settings.physical.checkpoint
    progress.stage(f"backup {backup_id}: base backup of PostgreSQL {info.version} to {ctx.repo.location} "
                   f"({checkpoint} checkpoint)")
    options = ctx.put_options(tier, "physical")
    level, threads = settings.compression.level, settings.compression.threads
    objects: List[StoredObject] = []
    tablespaces: List[Dict[str, Any]] = []
    server_started = facts["now"]
    stream = BaseBackupStream(settings.postgres, application_name=f"pg-backup {backup_id}")
    try:
        start_lsn, timeline, heads = stream.start(f"pg-backup {backup_id}", fast=checkpoint == "fast",
                                                  max_rate_kib=max_rate)
        locations = {h.oid: h.location for h in heads}
        progress.stage(f"checkpoint done: WAL from {format_lsn(start_lsn)} on timeline {timeline}; "
                       f"{len(heads)} extra tablespace(s)")
        while True:
            head = stream.next_archive()
            if head is None:
                break
            name, role, oid = _object_for(head[0])
            progress.stage(f"storing {name}" + (f" (tablespace {facts['tablespaces'].get(oid, oid)} at "
                                                f"{locations.get(oid)})" if oid is not None else ""))
            result = store_stream(stream, ctx.storage, ctx.repo.object_key(backup_id, name), ctx.gpg,  # type: ignore[arg-type]
                                  what=f"{backup_id}/{name}", level=level, threads=threads, options=options,
                                  progress=progress.bytes)
            objects.append(StoredObject(name, role, result.size, result.sha256, result.raw_size))
            if oid is not None:
                tablespaces.append({"oid": oid, "name": facts["tablespaces"].get(oid), "object": name,
                                    "location": head[1] or locations.get(oid)})
        stop_lsn, stop_timeline = stream.finish()
    finally:
        stream.close()
    roles = [o.role for o in objects]
    if roles.count("base") != 1 or roles.count("backup_manifest") != 1 or len(tablespaces) != len(heads):
        raise PostgresError(f"base backup of {backup_id} is incomplete: the server sent {', '.join(roles) or 'nothing'}"
                            f" for {len(heads)} extra tablespace(s)")
    notes = [f"base backup {checkpoint} checkpoint"]
    config_tar, config_files = config_archive(facts["files"], notes)
    if config_tar is not None:
        progress.stage(f"storing {CONFIG_OBJECT} ({', '.join(sorted(config_files))}: they live outside the data "
                       f"directory)")
        res = store_stream(io.BytesIO(config_tar), ctx.storage, ctx.repo.object_key(backup_id, CONFIG_OBJECT),
                           ctx.gpg, what=f"{backup_id}/{CONFIG_OBJECT}", level=level, threads=threads, options=options)
        objects.append(StoredObject(CONFIG_OBJECT, "config", res.size, res.sha256, res.raw_size))
    stop_time, next_xid = _after_stop(ctx)
    segment_size = facts["segment_size"]
    start_wal, stop_wal = wal_range(start_lsn, timeline, stop_lsn, stop_timeline, segment_size)
    wait_for_wal(ctx, archive, stop_wal, settings.physical.wal_wait_seconds, since=server_started)
    manifest = Manifest(
        backup_id=backup_id, kind="physical", tier=tier, cluster=ctx.cluster, hostname=socket.gethostname(),
        agent_version=__version__, server_version=info.version, server_version_num=info.version_num,
        system_identifier=info.system_identifier, started_at=iso(started), finished_at=iso(ctx.clock()),
        encryption=EncryptionInfo("openpgp", settings.encryption.mode, CIPHER, fingerprint),
        compression={"algorithm": "zstd", "level": level}, objects=objects,
        databases=[DatabaseInfo(d.name, BASE_OBJECT, d.encoding, d.collate, d.ctype, d.owner, d.size_bytes)
                   for d in databases],
        timeline=timeline, start_lsn=format_lsn(start_lsn), stop_lsn=format_lsn(stop_lsn), start_wal=start_wal,
        stop_wal=stop_wal, wal_segment_size=segment_size, tablespaces=sorted(tablespaces, key=lambda t: t["oid"]),
        stop_time=stop_time, next_xid=next_xid, notes=notes + [f"WAL {start_wal} .. {stop_wal} archived"],
        extra={"config_files": config_files} if config_files else {})
    ctx.repo.commit_manifest(manifest, options)
    progress.stage(f"backup {backup_id} complete: {len(objects)} object(s), WAL {start_wal} .. {stop_wal}")
    return manifest
