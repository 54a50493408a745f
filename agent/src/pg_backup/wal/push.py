"""``wal-push``, PostgreSQL's archive_command: store WAL files durably, never overwrite, one archive
per cluster -- for PostgreSQL's own call and, through the resident uploader, ahead of it (the rules
are in :mod:`pg_backup.wal`).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .. import __version__
from ..audit import AuditRecord, write_local, write_remote
from ..errors import RefusedError, StorageError, UsageError
from ..manifest import iso
from ..storage.base import PutOptions
from .archive import META_HISTORY, META_KEY, META_SHA256, META_SIZE, META_SYSID, encode_history_meta, parse_history
from .encode import EncodedFile, encode_file, sha256_of_file
from .fast import write_fast_settings
from .names import WalNameError, is_segment_name, parse_wal_name
from .pgfiles import datadir_of, read_control_sysid, read_segment_header, ready_files
from .spool import (FAILED_RETRY_SECONDS, LOCK_WAIT_SECONDS, FileLock, Spool, heartbeat_path, is_locked, touch,
                    uploader_lock_path)
from ..postgres.server import postmaster_pid
from .workers import log_line, start_worker

UPLOADER_POLL_SECONDS = 0.05


# -- storing ---------------------------------------------------------------------------------------

class PushOutcome:
    def __init__(self, name: str, key: str, outcome: str, size: int = 0, stored: int = 0, sha256: str = ""):
        self.name, self.key, self.outcome, self.size, self.stored, self.sha256 = name, key, outcome, size, stored, sha256

    def as_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "key": self.key, "outcome": self.outcome, "bytes": self.size,
                "stored_bytes": self.stored}


@dataclass
class PushReport:
    """What one ``wal-push`` did: the requested file, the files stored ahead of PostgreSQL beside it,
    and the seconds it took."""

    pushed: PushOutcome
    ahead: List[PushOutcome]
    seconds: float

    def as_dict(self) -> Dict[str, Any]:
        p = self.pushed
        return {"wal_file": p.name, "key": p.key, "outcome": p.outcome, "bytes": p.size, "stored_bytes": p.stored,
                "seconds": round(self.seconds, 3), "ahead": [o.as_dict() for o in self.ahead]}


class Pusher:
    """Stores WAL files of one data directory into the archive."""

    def __init__(self, ctx: Any, spool: Spool, pg_wal: str, *, record_conflicts: bool = True,
                 argv: Optional[List[str]] = None, fingerprint: Optional[str] = None):
        self.ctx = ctx
        self.spool = spool
        self.pg_wal = pg_wal
        self.datadir = datadir_of(pg_wal)
        self.archive = ctx.wal_archive
        self.record_conflicts = record_conflicts
        self.argv = argv or []
        self._fingerprint = fingerprint    # the encryption key's, when the caller computed it already
        self._identity_ok: Optional[Dict[str, Any]] = None
        import threading

        self._lock = threading.Lock()   # push_file runs in several threads (batches, the uploader)
        ctx.gpg  # created here, not lazily by two threads at once

    def prepare(self) -> None:
        """Before threads start: read the encryption key once (GnuPG's first use of its home directory
        creates files there; two gpg processes doing that at once can fail)."""
        self.fingerprint()

    # identity -------------------------------------------------------------------------------------
    def pushing_identity(self, path: str, name: str) -> Tuple[int, Optional[int]]:
        """(system identifier, segment size or None) of the cluster that wrote ``path``."""
        header = read_segment_header(path) if is_segment_name(name[:24]) and not name.endswith(
            (".history", ".backup")) else None
        if header is not None:
            return header[0], header[1]
        sysid = read_control_sysid(self.datadir)
        if sysid is None:
            raise RefusedError(f"cannot tell which cluster wrote {name}: no readable WAL page header and no "
                               f"{os.path.join(self.datadir, 'global', 'pg_control')}",
                               hint="run wal-push from the data directory, as PostgreSQL's archive_command does")
        return sysid, None

    def check_identity(self, path: str, name: str) -> None:
        """Refuse to push into an archive that belongs to another cluster (DESIGN §5 rule 4)."""
        sysid, seg_size = self.pushing_identity(path, name)
        signs = self.ctx.repo.signs
        for known in (self._identity_ok, self.spool.cached_identity()):
            if known and (known.get("signed") or not signs) and str(known.get("system_identifier")) == str(sysid) and (
                    seg_size is None or known.get("wal_segment_size") == seg_size):
                self._identity_ok = known
                return
        ident = self.archive.identity()
        if ident is None:
            ident = self._create_identity(sysid, seg_size)
        if str(ident.get("system_identifier")) != str(sysid):
            msg = (f"refusing to archive {name}: the WAL archive {self.ctx.repo.location}wal/ belongs to the "
                   f"cluster with system identifier {ident.get('system_identifier')}, but this file was written by "
                   f"{sysid}")
            self.conflict(name, "another cluster's WAL (system identifier differs)",
                          pushed_system_identifier=str(sysid),
                          archive_system_identifier=str(ident.get("system_identifier")))
            raise RefusedError(msg, hint="give this cluster its own 'cluster' name (a new archive), or move the old "
                                         "archive away if this cluster replaced it (e.g. after a new initdb)")
        if seg_size is not None and ident.get("wal_segment_size") not in (None, seg_size):
            self.conflict(name, "WAL segment size differs from the archive's", pushed_segment_size=seg_size,
                          archive_segment_size=ident.get("wal_segment_size"))
            raise RefusedError(f"refusing to archive {name}: segment size {seg_size} differs from the archive's "
                               f"{ident.get('wal_segment_size')}", hint="use a new cluster name for this archive")
        if ident.get("wal_segment_size") is None and seg_size is None:
            return  # cannot cache a complete identity from a history file alone; the next segment will
        self.archive.adopt_identity()      # signed now if written before signing (docs/signing.md)
        cached = {"system_identifier": str(ident["system_identifier"]),
                  "wal_segment_size": ident.get("wal_segment_size") or seg_size, "signed": signs}
        self.spool.cache_identity(cached)
        self._identity_ok = cached

    def _create_identity(self, sysid: int, seg_size: Optional[int]) -> Dict[str, Any]:
        version = None
        try:
            with open(os.path.join(self.datadir, "PG_VERSION"), encoding="ascii") as fh:
                version = fh.read().strip()
        except OSError:
            pass
        import socket

        doc = {"system_identifier": str(sysid), "wal_segment_size": seg_size, "created_at": iso(self.ctx.clock()),
               "server_version": version, "cluster": self.ctx.cluster, "created_by_host": socket.gethostname(),
               "agent_version": __version__, "format": "pg-backup WAL archive v1: <TLI>/<FILE>.zst.gpg"}
        try:
            self.ctx.repo.put_signed(self.archive.identity_key, (json.dumps(doc, indent=1) + "\n").encode(),
                                     PutOptions(content_type="application/json",
                                                tags={"kind": "wal", "cluster": self.ctx.cluster}),
                                     signature_first=False)  # a crash between leaves it adoptable
            return doc
        except FileExistsError:
            ident = self.archive.identity(fresh=True)
            return ident or doc

    # conflicts --------------------------------------------------------------------------------------
    def conflict(self, name: str, reason: str, **detail: Any) -> None:
        """Record a refused push where health sees it (``<cluster>/wal/conflicts/``) and in the audit log."""
        if not self.record_conflicts:
            return
        import secrets
        import socket

        now = self.ctx.clock()
        doc = {"name": name, "reason": reason, "recorded_at": iso(now), "host": socket.gethostname(),
               "cluster": self.ctx.cluster, **{k: v for k, v in detail.items() if v is not None}}
        key = (f"{self.archive.conflicts_prefix}{iso(now)[:19].replace('-', '').replace(':', '')}Z-{name}-"
               f"{secrets.token_hex(3)}.json")
        warnings = []
        try:
            self.ctx.repo.put_signed(key, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(),
                                     PutOptions(content_type="application/json",
                                                tags={"kind": "wal", "cluster": self.ctx.cluster}))
        except Exception as exc:  # noqa: BLE001 - the refusal itself must still be reported
            warnings.append(f"cannot record the WAL conflict in the repository: {exc}")
        record = AuditRecord("wal-push", ["wal-push", *self.argv], self.ctx.cluster, clock=self.ctx.clock)
        data = record.finish(result="refused", exit_code=9, error=f"{name}: {reason}", wal_file=name,
                             conflict_record=key, **{k: v for k, v in detail.items() if v is not None})
        warnings.append(write_local(self.ctx.settings.audit_log_path, data))
        warnings.append(write_remote(self.ctx.repo, data, record.started))
        for w in warnings:
            if w:
                self.ctx.progress.warn(w)

    # storing ----------------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        with self._lock:
            if self._fingerprint is None:
                self._fingerprint = self.ctx.gpg.encryption_fingerprint()
            return self._fingerprint

    def push_file(self, name: str, *, lock_wait: float = LOCK_WAIT_SECONDS,
                  require_ready: bool = False) -> Optional[PushOutcome]:
        """Store one file of pg_wal unless the spool says it is stored. Returns None when skipped
        (lock busy with lock_wait 0, or ``require_ready`` and PostgreSQL no longer lists it)."""
        path = os.path.join(self.pg_wal, name)
        key = self.archive.key_for(name)
        lock = self.spool.lock(name, wait=lock_wait)
        if lock is None:
            if lock_wait == 0:
                return None
            raise StorageError(f"another pg-backup process has been storing {name} for {lock_wait:.0f} s",
                               hint="check the resident uploader's log in the WAL spool (worker.log)")
        with lock:
            if require_ready and not os.path.exists(os.path.join(self.pg_wal, "archive_status", name + ".ready")):
                return None
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if require_ready:
                    return None
                raise UsageError(f"WAL file {path} does not exist",
                                 hint="archive_command passes %p, relative to the data directory") from None
            if self.spool.marker_matches(name, st):
                return PushOutcome(name, key, "already-stored", st.st_size)
            self.check_identity(path, name)
            outcome = self._store(name, path, key, st)
            # Acknowledge only what is durable: the marker comes after the storage call returned.
            self.spool.write_marker(name, st, outcome.sha256, key, outcome.outcome)
            self.spool.clear_failure(name)
            return outcome

    def _store(self, name: str, path: str, key: str, st: os.stat_result) -> PushOutcome:
        # Look first: a re-archived file (after a crash) costs one request and no encryption, and a
        # store that ignores If-None-Match still cannot be made to overwrite (check, then conditional put).
        existing = self.ctx.storage.head(key)
        if existing is not None:
            return self._same_or_refuse(name, key, existing, *sha256_of_file(path))
        enc = encode_file(path, self.ctx.gpg, self.ctx.settings.compression.level, what=f"WAL file {name}",
                          spill_dir=self.spool.tmp)
        with enc:
            return self._put(name, path, key, st, enc)

    def _put(self, name: str, path: str, key: str, st: os.stat_result, enc: "EncodedFile") -> PushOutcome:
        if enc.size != st.st_size:
            raise StorageError(f"WAL file {name} changed size while it was read ({st.st_size} -> {enc.size} bytes)",
                               hint="PostgreSQL must not modify a file it asked to archive; retry")
        meta = {META_SHA256: enc.sha256, META_SIZE: str(enc.size), META_KEY: self.fingerprint()}
        if self._identity_ok:
            meta[META_SYSID] = str(self._identity_ok.get("system_identifier"))
        if name.endswith(".history"):
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    meta[META_HISTORY] = encode_history_meta(parse_history(fh.read()))
            except ValueError:
                pass  # unparsable history: stored anyway; gaps() then checks timelines separately
        options = PutOptions(content_type="application/octet-stream", metadata=meta,
                             tags={"kind": "wal", "cluster": self.ctx.cluster})
        for _attempt in range(3):
            try:
                stored = self.ctx.storage.put_stream(key, enc.chunks(), options, overwrite=False)
                return PushOutcome(name, key, "stored", enc.size, stored, enc.sha256)
            except FileExistsError:
                info = self.ctx.storage.head(key)
                if info is None:
                    continue  # a concurrent conditional write failed after all: try again
                return self._same_or_refuse(name, key, info, enc.sha256, enc.size)
        raise StorageError(f"could not store {key}: the store kept reporting a concurrent write")

    def _same_or_refuse(self, name: str, key: str, info: Any, sha256: str, size: int) -> PushOutcome:
        """The name is archived already: identical plaintext is success, anything else is refused."""
        existing = (info.metadata or {}).get(META_SHA256)
        if existing == sha256:
            return PushOutcome(name, key, "identical-already-archived", size, 0, sha256)
        self.conflict(name, "different content under an archived name", existing_sha256=existing,
                      pushed_sha256=sha256, existing_object_bytes=info.size, pushed_bytes=size, key=key)
        raise RefusedError(
            f"refusing to overwrite {key}: the archive already holds {name} with different content "
            f"(SHA-256 {existing or 'unknown'} there, {sha256} here)",
            hint="two clusters may be archiving into one prefix, or this server's WAL diverged; the "
                 "conflict is recorded under wal/conflicts/ and health reports it until the record is removed")


def wal_push(ctx: Any, path: str, *, config_path: Optional[str] = None) -> PushReport:
    """archive_command: store ``path`` (and other .ready files) durably; see :mod:`pg_backup.wal`."""
    from concurrent.futures import ThreadPoolExecutor

    name = os.path.basename(path)
    try:
        parse_wal_name(name)
    except WalNameError as exc:
        raise UsageError(f"wal-push: {exc}", hint="archive_command must pass %p") from None
    abspath = os.path.abspath(path)
    pg_wal = os.path.dirname(abspath)
    spool = Spool.for_settings(ctx.settings)
    ctx.storage.for_archive_command()
    write_fast_settings(config_path, ctx.repo, spool)
    pusher = Pusher(ctx, spool, pg_wal, argv=[path])
    touch(heartbeat_path(spool, pg_wal))
    t0 = time.monotonic()
    # A resident uploader stores the other .ready files (and later ones) ahead of PostgreSQL, so its
    # next calls take the fast path. Started before anything else here: forked while this process
    # still runs a single thread.
    uploader = start_uploader(ctx, config_path, pg_wal) or (
        ctx.settings.wal.uploader_idle_seconds > 0 and is_locked(uploader_lock_path(spool, pg_wal)))
    parallel = ctx.settings.wal.push_parallel
    others = [n for n in ready_files(pg_wal) if n != name][:max(parallel - 1, 0)] if parallel > 1 and not uploader \
        else []
    batch: List[PushOutcome] = []
    if others:
        pusher.prepare()
        # Without an uploader: the requested file first, the others beside it; each takes its own lock
        # without waiting (a busy one is being stored by someone else), and failures among them only warn.
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="wal-push") as pool:
            main = pool.submit(pusher.push_file, name)
            side = [(n, pool.submit(pusher.push_file, n, lock_wait=0, require_ready=True)) for n in others]
            for n, fut in side:
                try:
                    res = fut.result()
                    if res is not None:
                        batch.append(res)
                except Exception as exc:  # noqa: BLE001 - PostgreSQL will ask for it and see the error then
                    ctx.progress.warn(f"{n} was not stored ahead of time: {exc}")
            outcome = main.result()
    else:
        outcome = pusher.push_file(name)
    assert outcome is not None
    elapsed = time.monotonic() - t0
    if spool.needs_tidy():
        spool.tidy_markers(pg_wal)
    return PushReport(outcome, batch, elapsed)


# -- the resident uploader ------------------------------------------------------------------------

def start_uploader(ctx: Any, config_path: Optional[str], pg_wal: str) -> bool:
    """Start the resident uploader for ``pg_wal`` unless it is off or one runs already."""
    if ctx.settings.wal.uploader_idle_seconds <= 0:
        return False
    spool = Spool.for_settings(ctx.settings)
    return start_worker(ctx, spool, "_upload", uploader_lock_path(spool, pg_wal), config_path, pg_wal,
                        loop=run_uploader)


def run_uploader(ctx: Any, pg_wal: str, *, idle_seconds: Optional[float] = None) -> int:
    """Drain .ready files ahead of PostgreSQL until idle or the postmaster is gone. Returns files stored."""
    from concurrent.futures import ThreadPoolExecutor, wait

    if idle_seconds is None:
        idle_seconds = float(ctx.settings.wal.uploader_idle_seconds)
    spool = Spool.for_settings(ctx.settings)
    lock = FileLock.acquire(uploader_lock_path(spool, pg_wal), 0)
    if lock is None:
        return 0
    os.ftruncate(lock.fd, 0)
    os.write(lock.fd, f"{os.getpid()}\n".encode())   # who holds it (for operators and the benchmark)
    stored = 0
    datadir = datadir_of(pg_wal)
    heartbeat = heartbeat_path(spool, pg_wal)
    ctx.storage.for_archive_command()
    pusher = Pusher(ctx, spool, pg_wal, record_conflicts=False)
    pusher.prepare()
    parallel = max(ctx.settings.wal.push_parallel, 1)
    failed: Dict[str, float] = {}
    last_work = time.monotonic()
    log_line(f"uploader started for {pg_wal} ({parallel} at once)")
    with lock, ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="wal-upload") as pool:
        running: Dict[str, Any] = {}
        while True:
            for n, fut in list(running.items()):
                if fut.done():
                    del running[n]
                    try:
                        res = fut.result()
                        if res is not None and res.outcome != "already-stored":
                            stored += 1
                    except Exception as exc:  # noqa: BLE001 - PostgreSQL's own call reports it
                        failed[n] = time.monotonic()
                        spool.note_failure(n, str(exc))
                        log_line(f"{n}: {exc}")
            now = time.monotonic()
            todo = []
            for n in ready_files(pg_wal):
                if n in running or now - failed.get(n, -1e9) < FAILED_RETRY_SECONDS:
                    continue
                try:
                    if spool.marker_matches(n, os.stat(os.path.join(pg_wal, n))):
                        continue
                except OSError:
                    continue
                todo.append(n)
            for n in todo[:max(parallel - len(running), 0)]:
                running[n] = pool.submit(pusher.push_file, n, lock_wait=0, require_ready=True)
            if running or todo:
                last_work = now
            elif now - last_work > idle_seconds:
                break
            try:
                called = time.time() - os.stat(heartbeat).st_mtime
            except OSError:
                called = float("inf")
            if called > idle_seconds and not running:
                log_line(f"no wal-push call for {idle_seconds:.0f} s (archive_command changed or archiving off)")
                break
            if postmaster_pid(datadir) is None:
                log_line("postmaster is gone")
                break
            if running:
                wait(list(running.values()), timeout=UPLOADER_POLL_SECONDS * 4, return_when="FIRST_COMPLETED")
            else:
                time.sleep(UPLOADER_POLL_SECONDS)
        for fut in running.values():
            try:
                fut.result()
            except Exception:  # noqa: BLE001
                pass
    log_line(f"uploader exits after storing {stored} file(s)")
    return stored


