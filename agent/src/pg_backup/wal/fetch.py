"""Reading WAL files back: ``wal-fetch`` (PostgreSQL's restore_command, which also keeps the next
segments prefetched by a resident process) and :func:`fetch_to`, a plain fetch for everything else.

A fetched file is written atomically (temp file + rename in the target's directory) and only after
its plaintext matched the SHA-256 and size the archive recorded; a prefetched copy is served only if
it still matches the archive's object.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import IntegrityError, NotFoundError, StorageError, UsageError
from ..files import atomic_write, unlink_quietly
from ..storage.base import ObjectInfo
from .archive import META_KEY, META_SHA256, META_SIZE, WalArchive
from .fast import write_fast_settings
from .names import WalNameError, is_segment_name, next_segment, parse_wal_name, segment_name
from .spool import FileLock, Spool, drop_prefetched, is_locked, serve_prefetched, wait_in_flight
from .workers import log_line, rotate_worker_log, spawn, start_worker, worker_command

PREFETCH_IDLE_SECONDS = 60.0
PREFETCH_RECHECK_SECONDS = 20.0
PREFETCH_THREADS = max(2, min(8, os.cpu_count() or 2))   # downloads + decryptions at once


@dataclass
class FetchReport:
    """What one ``wal-fetch`` did: which file went where, from the archive or a prefetched copy."""

    wal_file: str
    dest: str
    source: str        # "archive" or "prefetched"
    bytes: int
    seconds: float

    def as_dict(self) -> Dict[str, Any]:
        return {"wal_file": self.wal_file, "dest": self.dest, "source": self.source, "bytes": self.bytes,
                "seconds": round(self.seconds, 3)}


def decrypt_to(ctx: Any, key: str, fingerprint: str, sha256: Optional[str], size: Optional[int], dest: str,
               what: str) -> None:
    """Decrypt the object into ``dest`` atomically (temp file beside it, renamed after verification)."""
    import hashlib

    from ..pipeline import iter_plaintext

    directory = os.path.dirname(os.path.abspath(dest))
    tmp = os.path.join(directory, f".{os.path.basename(dest)}.pgb-tmp-{os.getpid()}")
    digest = hashlib.sha256()
    count = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot write {tmp}: {exc.strerror}") from None
    ok = False
    try:
        with os.fdopen(fd, "wb") as out:
            for block in iter_plaintext(ctx.storage, key, ctx.gpg, fingerprint, what=what):
                digest.update(block)
                count += len(block)
                out.write(block)
        if size is not None and count != size:
            raise IntegrityError(f"{what}: decrypted {count} bytes, the archive recorded {size}")
        if sha256 and digest.hexdigest() != sha256:
            raise IntegrityError(f"{what}: SHA-256 {digest.hexdigest()} differs from the archive's {sha256}")
        os.rename(tmp, dest)
        ok = True
    finally:
        if not ok:
            unlink_quietly(tmp)


def _recorded_size(meta: Dict[str, str]) -> Optional[int]:
    return int(meta[META_SIZE]) if meta.get(META_SIZE, "").isdigit() else None


def _not_in_archive(ctx: Any, name: str) -> NotFoundError:
    return NotFoundError(f"WAL file {name} is not in the archive {ctx.repo.location}wal/",
                         hint="this is normal at the end of the archived WAL")


def _decrypt_object(ctx: Any, key: str, info: ObjectInfo, name: str, dest: str) -> None:
    meta = info.metadata or {}
    fingerprint = meta.get(META_KEY)
    if not fingerprint:
        raise IntegrityError(f"{key} has no pgb-key metadata: it was not stored by pg-backup wal-push")
    decrypt_to(ctx, key, fingerprint, meta.get(META_SHA256), _recorded_size(meta), dest, f"WAL file {name}")


REFUSED_WAL_NAME = "pg-backup.refused-wal"   # in the data directory: the WAL file recovery could not use, and why


def note_refused_wal(name: str, reason: str) -> None:
    """restore_command runs in the data directory: leave the refusal there for pitr to report (PostgreSQL
    only sees a failed restore_command, i.e. the end of the archive)."""
    if os.path.exists("PG_VERSION"):
        try:
            atomic_write(REFUSED_WAL_NAME, f"{name}: {reason}\n".encode())
        except OSError:
            pass


def refused_wal(data_dir: str) -> Optional[str]:
    """The refusal :func:`note_refused_wal` left in ``data_dir``, if any."""
    try:
        with open(os.path.join(data_dir, REFUSED_WAL_NAME), encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def fetch_to(ctx: Any, name: str, dest: str) -> ObjectInfo:
    """Write archived WAL file ``name`` to ``dest``; NotFoundError if the archive does not hold it.

    Plain: no spool, no prefetched copies, no resident prefetcher -- for verification and anything
    else that is not PostgreSQL's restore_command. Returns the object's information."""
    key = ctx.wal_archive.key_for(name)
    info = ctx.storage.head(key)
    if info is None:
        raise _not_in_archive(ctx, name)
    _decrypt_object(ctx, key, info, name, dest)
    return info


def wal_fetch(ctx: Any, name: str, dest: str, *, config_path: Optional[str] = None) -> FetchReport:
    """restore_command: write archived ``name`` to ``dest``; exit 7 if the archive does not hold it."""
    t0 = time.monotonic()
    try:
        w = parse_wal_name(name)
    except WalNameError as exc:
        raise UsageError(f"wal-fetch: {exc}", hint="restore_command must pass %f and %p") from None
    spool = Spool.for_settings(ctx.settings)
    write_fast_settings(config_path, ctx.repo, spool)
    key = ctx.wal_archive.key_for(name)
    info = ctx.storage.head(key)
    if info is None:
        drop_prefetched(spool.prefetch, name)
        raise _not_in_archive(ctx, name)
    meta = info.metadata or {}
    source = "archive"
    prefetching = w.kind == "segment" and ctx.settings.wal.fetch_prefetch > 0
    if wait_in_flight(spool.prefetch, name, spool.prefetcher_lock_path) and serve_prefetched(
            spool.prefetch, name, dest, object_sha256=meta.get(META_SHA256), object_size=info.size):
        source = "prefetched"
    else:
        if prefetching:              # the next segments are fetched while this one is decrypted
            request_prefetch(ctx, spool, config_path, name)
        try:
            _decrypt_object(ctx, key, info, name, dest)
        except IntegrityError as exc:   # forged, unsigned or damaged: recovery must say why it stopped here
            note_refused_wal(name, str(exc))
            raise
    if prefetching:
        request_prefetch(ctx, spool, config_path, name)
    return FetchReport(name, dest, source, info.size, time.monotonic() - t0)


# -- the resident prefetcher -----------------------------------------------------------------------

def prefetch_for_recovery(ctx: Any, first_segment: Optional[str], config_path: Optional[str] = None) -> bool:
    """Start the resident prefetcher on the first segments a recovery will ask for, while its files are
    restored and before its server starts: PostgreSQL's first restore_command calls then find them
    decrypted (or in flight) in the spool instead of each decrypting one while the server waits. A
    fresh process (``python -m pg_backup.wal _prefetch CONFIG``), never a fork: the caller may hold
    locks a fork would keep. Without ``config_path`` the settings are written for it into the spool
    (0600, no secrets: only paths to them).

    With ``config_path`` (restore_command's configuration) the fast path's settings for it are written
    too, so PostgreSQL's very first calls (the next timeline's history file, which does not exist, then
    the first segments) are answered without loading the agent: each full-path answer costs a Python
    start-up of the whole CLI (~0.3 s) while recovery waits."""
    if config_path is not None:
        write_fast_settings(config_path, ctx.repo, Spool.for_settings(ctx.settings))
    if ctx.settings.wal.fetch_prefetch <= 0 or not first_segment:
        return False
    try:
        w = parse_wal_name(first_segment)
    except WalNameError:
        return False
    size = ctx.wal_archive.segment_size()
    segno = w.segno(size) if w.kind == "segment" else None
    if not segno:
        return False
    spool = Spool.for_settings(ctx.settings)
    spool.want(segment_name(w.timeline, segno - 1, size))       # the prefetcher works from the next one on
    if is_locked(spool.prefetcher_lock_path):
        return True
    if config_path is None:
        import yaml

        from ..config import to_dict

        config_path = os.path.join(spool.root, "recovery-prefetch.yml")
        atomic_write(config_path, yaml.safe_dump(to_dict(ctx.settings), sort_keys=False).encode())
    spawn(worker_command("_prefetch", os.path.abspath(config_path)), rotate_worker_log(spool))
    return True


def request_prefetch(ctx: Any, spool: Spool, config_path: Optional[str], name: str) -> None:
    spool.want(name)
    start_worker(ctx, spool, "_prefetch", spool.prefetcher_lock_path, config_path, loop=run_prefetcher)


def run_prefetcher(ctx: Any, *, idle_seconds: float = PREFETCH_IDLE_SECONDS) -> int:
    """Keep the ``wal.fetch_prefetch`` segments after the last served one decrypted and verified in the
    spool, two downloads at a time; re-check held copies against the archive every 20 s. Returns the
    number of files fetched."""
    from concurrent.futures import ThreadPoolExecutor

    spool = Spool.for_settings(ctx.settings)
    lock = FileLock.acquire(spool.prefetcher_lock_path, 0)
    if lock is None:
        return 0
    archive = ctx.wal_archive
    size = archive.segment_size()
    depth = ctx.settings.wal.fetch_prefetch
    ctx.gpg.available_fingerprints()   # import the keys once, before two threads decrypt at once
    fetched = [0]
    last_want, last_change = None, time.monotonic()
    missing_until: Dict[str, float] = {}
    running: Dict[str, Any] = {}

    def fetch_one(name: str) -> None:
        if _prefetch_one(ctx, archive, spool, name):
            fetched[0] += 1
        else:
            missing_until[name] = time.monotonic() + 1.0

    with lock, ThreadPoolExecutor(max_workers=PREFETCH_THREADS, thread_name_prefix="wal-prefetch") as pool:
        while True:
            try:
                with open(os.path.join(spool.prefetch, "want"), "rb") as fh:
                    want = fh.read().decode().strip()
            except OSError:
                want = ""
            now = time.monotonic()
            if want != last_want:
                last_want, last_change = want, now
            elif now - last_change > idle_seconds:
                break
            for n, fut in list(running.items()):
                if fut.done():
                    del running[n]
                    if fut.exception() is not None:
                        log_line(f"prefetch of {n} failed: {fut.exception()}")
                        missing_until[n] = now + 5.0
            try:
                w_want = parse_wal_name(want) if want else None
            except ValueError:
                w_want = None
            if w_want is None or w_want.kind != "segment":
                time.sleep(0.1)
                continue
            _drop_passed(spool.prefetch, want, running)
            _recheck(ctx, archive, spool, running)
            name = want
            for _ in range(depth):
                name = next_segment(name, size)
                if len(running) >= PREFETCH_THREADS:
                    break
                if name in running or os.path.exists(os.path.join(spool.prefetch, name)) or \
                        missing_until.get(name, 0) > now:
                    continue
                running[name] = pool.submit(fetch_one, name)
            time.sleep(0.05)
    return fetched[0]


def _prefetch_one(ctx: Any, archive: WalArchive, spool: Spool, name: str) -> bool:
    """Download, decrypt and verify ``name`` into the spool; False if the archive has no such file."""
    key = archive.key_for(name)
    info = ctx.storage.head(key)
    if info is None:
        return False
    meta = info.metadata or {}
    path = os.path.join(spool.prefetch, name)
    # The record first: a copy is only ever served together with what it was checked against.
    atomic_write(path + ".json", json.dumps({"sha256": meta.get(META_SHA256), "object_size": info.size,
                                             "key": key, "verified_at": time.time()}).encode())
    try:
        decrypt_to(ctx, key, meta.get(META_KEY, ""), meta.get(META_SHA256), _recorded_size(meta), path,
                   f"WAL file {name}")
    except BaseException:
        drop_prefetched(spool.prefetch, name)
        raise
    return True


def _drop_passed(prefetch: str, want: str, running: Dict[str, Any]) -> None:
    """Remove copies recovery has passed (by position, whatever their timeline)."""
    try:
        entries = os.listdir(prefetch)
    except OSError:
        return
    for entry in entries:
        base = entry[:-5] if entry.endswith(".json") else entry
        if is_segment_name(base) and base[8:] <= want[8:] and base not in running:
            unlink_quietly(os.path.join(prefetch, entry))


def _recheck(ctx: Any, archive: WalArchive, spool: Spool, running: Dict[str, Any]) -> None:
    """Held copies whose check is older than PREFETCH_RECHECK_SECONDS: HEAD the object again; a copy
    whose object is gone or different is dropped, the others get a fresh ``verified_at``."""
    now = time.time()
    try:
        entries = [e[:-5] for e in os.listdir(spool.prefetch) if e.endswith(".json")]
    except OSError:
        return
    for name in entries:
        if name in running:
            continue
        record_path = os.path.join(spool.prefetch, name + ".json")
        try:
            with open(record_path, "rb") as fh:
                record = json.loads(fh.read())
            if now - float(record.get("verified_at", 0)) < PREFETCH_RECHECK_SECONDS:
                continue
            info = ctx.storage.head(archive.key_for(name))
        except (OSError, ValueError, TypeError):
            continue
        except Exception as exc:  # noqa: BLE001 - storage trouble: keep the copy, the serve checks anyway
            log_line(f"re-check of prefetched {name} failed: {exc}")
            continue
        if info is None or (info.metadata or {}).get(META_SHA256) != record.get("sha256") or \
                info.size != record.get("object_size"):
            drop_prefetched(spool.prefetch, name)
            continue
        record["verified_at"] = now
        atomic_write(record_path, json.dumps(record).encode())
