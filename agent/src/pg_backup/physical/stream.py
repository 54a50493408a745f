"""``BASE_BACKUP`` over a replication connection, read as a sequence of archives.

The base backup is read from the server's replication protocol (``BASE_BACKUP``, PostgreSQL 15+)
through libpq (``psycopg.pq``), one CopyData message at a time. Why not ``pg_basebackup -D -``: it
refuses to write more than one tablespace to stdout, and with ``-X none`` it waits without limit
inside ``pg_backup_stop`` when archiving is broken; here the backup asks the server not to wait
(``WAIT false``) and waits itself, with a deadline and the archiver's own error in the message
(docs/pitr.md, "Why the replication protocol").

An incremental backup (PostgreSQL 17+) first sends the parent's ``backup_manifest`` on the same
connection (``UPLOAD_MANIFEST``, a CopyIn), then ``BASE_BACKUP ( ..., INCREMENTAL )``.
"""
from __future__ import annotations

import re
import select
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Tuple

from ..config import PostgresSettings
from ..errors import PostgresError
from ..wal.names import parse_lsn_arg

MIN_SERVER_MAJOR = 15           # the single-COPY BASE_BACKUP protocol with typed messages
MIN_INCREMENTAL_MAJOR = 17      # UPLOAD_MANIFEST and BASE_BACKUP ... INCREMENTAL
_ARCHIVE_NAME = re.compile(r"^(base|[0-9]+)\.tar$")
UPLOAD_CHUNK = 1 << 20


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
        params.update(settings.libpq_security())
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
        #: The server's estimate of each archive's size in bytes (``PROGRESS``): None for base.tar,
        #: the tablespace oid for the others. Filled in by :meth:`start`.
        self.sizes: Dict[Optional[int], int] = {}

    # low level ---------------------------------------------------------------------------------
    def _error_text(self, result: Any = None) -> str:
        raw = (result.error_message if result is not None else self.conn.error_message) or b""
        lines = [ln.strip() for ln in raw.decode(errors="replace").splitlines() if ln.strip()]
        return lines[0] if lines else "no detail"

    def _wait_readable(self, idle: Optional[Callable[[], None]] = None) -> None:
        sock = self.conn.socket
        while not select.select([sock], [], [], 1.0)[0]:
            if idle is not None:
                idle()
        try:
            self.conn.consume_input()
        except Exception:  # psycopg.OperationalError: the connection broke
            raise PostgresError(f"the replication connection to {self.where} broke: {self._error_text()}") from None

    def _result(self, on_wait: Optional[Callable[[float], None]] = None) -> Any:
        """The next result (None after the last one), waiting without holding the GIL; ``on_wait`` is
        called with the seconds waited so far about once a second while nothing arrives."""
        t0 = time.monotonic()
        idle = None if on_wait is None else (lambda: on_wait(time.monotonic() - t0))
        while self.conn.is_busy():
            self._wait_readable(idle)
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
    def upload_manifest(self, source: BinaryIO) -> None:
        """``UPLOAD_MANIFEST``: send the parent's plaintext ``backup_manifest`` (PostgreSQL 17+), which
        the next :meth:`start` with ``incremental=True`` on this connection is incremental to."""
        pq = self._pq
        self.conn.nonblocking = 0   # a short CopyIn: blocking writes keep it simple
        try:
            try:
                self.conn.send_query(b"UPLOAD_MANIFEST")
            except Exception:  # psycopg.OperationalError
                raise PostgresError(f"cannot send the parent's backup_manifest to {self.where}: "
                                    f"{self._error_text()}") from None
            res = self._check(self._result(), "no answer to UPLOAD_MANIFEST")
            if res.status != pq.ExecStatus.COPY_IN:
                raise PostgresError(f"unexpected answer to UPLOAD_MANIFEST from {self.where} (status {res.status})")
            failed = None
            while True:
                block = source.read(UPLOAD_CHUNK)
                if not block:
                    break
                if self.conn.put_copy_data(block) != 1:
                    failed = self._error_text()
                    break
            self.conn.put_copy_end(failed.encode() if failed else None)
            while True:
                res = self._result()
                if res is None:
                    break
                self._check(res, "")
            if failed:
                raise PostgresError(f"sending the parent's backup_manifest to {self.where} failed: {failed}")
        finally:
            if self.conn is not None:
                self.conn.nonblocking = 1

    def start(self, label: str, *, fast: bool, max_rate_kib: int = 0,
              incremental: bool = False, on_wait: Optional[Callable[[float], None]] = None
              ) -> Tuple[int, int, List[TablespaceHeader]]:
        """Send BASE_BACKUP; return (start LSN, timeline, extra tablespaces) once the checkpoint is done.
        ``incremental``: relative to the manifest sent by :meth:`upload_manifest` just before.
        ``on_wait(seconds)``: called about once a second while the server checkpoints. ``PROGRESS``
        makes the server add up the files' sizes first (as ``pg_basebackup --progress`` does): the
        estimates in :attr:`sizes` give the progress a percentage and an ETA."""
        options = [f"LABEL {_quote_literal(label)}", f"CHECKPOINT '{'fast' if fast else 'spread'}'",
                   "WAIT false", "MANIFEST 'yes'", "MANIFEST_CHECKSUMS 'SHA256'", "TABLESPACE_MAP true",
                   "PROGRESS true"]
        if max_rate_kib:
            options.append(f"MAX_RATE {int(max_rate_kib)}")
        if incremental:
            options.append("INCREMENTAL")
        try:
            self.conn.send_query(f"BASE_BACKUP ({', '.join(options)})".encode())
        except Exception:  # psycopg.OperationalError
            raise PostgresError(f"cannot start a base backup on {self.where}: {self._error_text()}") from None
        pq = self._pq
        first = self._check(self._result(on_wait), "no start position")
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
            size_kib = heads.get_value(row, 2) if heads.nfields > 2 else None
            if size_kib is not None:
                self.sizes[int(oid.decode()) if oid is not None else None] = int(size_kib.decode()) * 1024
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
