"""The WAL spool: what wal-push and wal-fetch remember between PostgreSQL's calls, and the locks that
serialise work on one file name.

Layout: ``<wal.spool_dir>/<cluster>-<repository hash>/`` (0700)::

    pushed/<NAME>          marker: the file (identity) was stored durably under its key
    prefetch/<NAME>        a prefetched, verified WAL file; prefetch/<NAME>.json what it was checked against
                           (written first: a record without its file is a fetch in flight, which
                           wal-fetch waits for rather than decrypting the same segment beside it)
    prefetch/want          the last name wal-fetch served (the prefetcher works ahead of it)
    locks/stripe-NN        flock stripes serialising work on one file name
    failed/<NAME>          the uploader's last failure on NAME (PostgreSQL's call then stores it itself)
    tmp/                   ciphertext of large files on its way to storage (removed after; stale ones by tidy)
    identity.json          the archive identity verified against archive.json
    uploader-<crc>.lock    held by the resident uploader of one pg_wal directory
    prefetcher.lock        held by the prefetcher; worker.log: the resident processes' messages

Standard library only: the fast path reads markers and serves prefetched copies with it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from typing import Any, Dict, Iterator, List, Optional

from ..files import atomic_write, unlink_quietly

LOCK_STRIPES = 64
LOCK_WAIT_SECONDS = 60.0           # PostgreSQL waits for archive_command (also at shutdown): keep it bounded
FAILED_RETRY_SECONDS = 15.0        # the uploader leaves a file it failed on to PostgreSQL's own call this long
TIDY_BEYOND_MARKERS = 256
IN_FLIGHT_WAIT_SECONDS = 60.0      # wal-fetch waits at most this long for a segment the prefetcher is decrypting,
IN_FLIGHT_STALL_SECONDS = 10.0     # and gives up when its temp file has not grown for this long


def file_identity(st: os.stat_result) -> List[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class Spool:
    def __init__(self, root: str):
        self.root = root
        self.pushed = os.path.join(root, "pushed")
        self.prefetch = os.path.join(root, "prefetch")
        self.locks = os.path.join(root, "locks")
        self.failed = os.path.join(root, "failed")
        self.tmp = os.path.join(root, "tmp")

    @classmethod
    def for_settings(cls, settings: Any) -> "Spool":
        spool = cls(os.path.join(settings.wal_spool_path, spool_namespace(settings)))
        spool.ensure()
        return spool

    def ensure(self) -> None:
        from ..errors import UsageError

        for d in (os.path.dirname(self.root), self.root, self.pushed, self.prefetch, self.locks, self.failed,
                  self.tmp):
            try:
                os.makedirs(d, mode=0o700, exist_ok=True)
                st = os.lstat(d)
            except OSError as exc:
                raise UsageError(f"cannot create the WAL spool directory {d}: {exc.strerror}",
                                 hint="set wal.spool_dir (or paths.state_dir) to a directory this user owns") from None
            if st.st_uid != os.geteuid():
                raise UsageError(f"WAL spool directory {d} belongs to uid {st.st_uid}, not to this user",
                                 hint="give it to the user PostgreSQL runs as (chown) or use another wal.spool_dir")
            if st.st_mode & 0o077:
                os.chmod(d, 0o700)

    # markers --------------------------------------------------------------------------------------
    def marker_path(self, name: str) -> str:
        return os.path.join(self.pushed, name)

    def marker_matches(self, name: str, st: os.stat_result) -> bool:
        try:
            with open(self.marker_path(name), "rb") as fh:
                data = json.loads(fh.read())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("id") == file_identity(st)

    def write_marker(self, name: str, st: os.stat_result, sha256: str, key: str, outcome: str) -> None:
        atomic_write(self.marker_path(name), json.dumps({
            "id": file_identity(st), "sha256": sha256, "key": key, "outcome": outcome,
            "stored_at": time.time()}).encode())

    def note_failure(self, name: str, message: str) -> None:
        """The uploader could not store ``name``: PostgreSQL's next call should not wait for it."""
        atomic_write(os.path.join(self.failed, name), message.encode(errors="replace")[:2000])

    def clear_failure(self, name: str) -> None:
        unlink_quietly(os.path.join(self.failed, name))

    def failed_recently(self, name: str) -> bool:
        """The uploader failed on ``name`` less than FAILED_RETRY_SECONDS ago."""
        try:
            return time.time() - os.stat(os.path.join(self.failed, name)).st_mtime < FAILED_RETRY_SECONDS
        except OSError:
            return False

    def needs_tidy(self) -> bool:
        try:
            return len(os.listdir(self.pushed)) > TIDY_BEYOND_MARKERS
        except OSError:
            return False

    def tidy_markers(self, pg_wal: str, keep_seconds: float = 3600.0) -> int:
        """Remove markers of files PostgreSQL no longer has (archived and recycled or removed), and
        spill files a killed process left behind."""
        removed = 0
        now = time.time()
        for directory in (self.tmp, self.failed):
            try:
                for entry in os.listdir(directory):
                    p = os.path.join(directory, entry)
                    if now - os.stat(p).st_mtime > keep_seconds:
                        os.unlink(p)
            except OSError:
                pass
        try:
            names = os.listdir(self.pushed)
        except OSError:
            return 0
        for name in names:
            path = os.path.join(self.pushed, name)
            try:
                if now - os.stat(path).st_mtime < keep_seconds:
                    continue
                if os.path.exists(os.path.join(pg_wal, name)):
                    continue
                os.unlink(path)
                removed += 1
            except OSError:
                continue
        return removed

    # identity cache --------------------------------------------------------------------------------
    def cached_identity(self) -> Optional[Dict[str, Any]]:
        try:
            with open(os.path.join(self.root, "identity.json"), "rb") as fh:
                data = json.loads(fh.read())
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def cache_identity(self, identity: Dict[str, Any]) -> None:
        atomic_write(os.path.join(self.root, "identity.json"), json.dumps(identity).encode())

    # locks and resident processes ------------------------------------------------------------------
    def lock(self, name: str, *, wait: float = LOCK_WAIT_SECONDS) -> Optional["FileLock"]:
        return FileLock.acquire(stripe_path(self.locks, name), wait)

    @property
    def prefetcher_lock_path(self) -> str:
        return os.path.join(self.root, "prefetcher.lock")

    @property
    def worker_log_path(self) -> str:
        return os.path.join(self.root, "worker.log")

    def want(self, name: str) -> None:
        """Tell the prefetcher which file recovery asked for last (it works ahead of it)."""
        atomic_write(os.path.join(self.prefetch, "want"), name.encode())


def spool_namespace(settings: Any) -> str:
    """``<cluster>-<hash>``: markers belong to one repository (a new bucket or path starts afresh)."""
    import hashlib

    where = {**settings.repository.identity(), "cluster": settings.cluster}
    digest = hashlib.sha256(json.dumps(where, sort_keys=True).encode()).hexdigest()[:12]
    return f"{settings.cluster}-{digest}"


def uploader_lock_path(spool: Spool, pg_wal: str) -> str:
    import zlib

    return os.path.join(spool.root, f"uploader-{zlib.crc32(os.path.abspath(pg_wal).encode()):08x}.lock")


def heartbeat_path(spool: Spool, pg_wal: str) -> str:
    """Touched by every wal-push for ``pg_wal`` (one utime): the uploader stops when PostgreSQL stops
    calling this configuration (archive_command changed, archiving off) even while WAL keeps coming."""
    return uploader_lock_path(spool, pg_wal)[:-len(".lock")] + ".heartbeat"


def touch(path: str) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError:
            pass
    except OSError:
        pass


def stripe_path(locks_dir: str, name: str) -> str:
    import zlib

    return os.path.join(locks_dir, f"stripe-{zlib.crc32(name.encode()) % LOCK_STRIPES:02d}")


class FileLock:
    def __init__(self, fd: int):
        self.fd = fd

    @classmethod
    def acquire(cls, path: str, wait: float) -> Optional["FileLock"]:
        """An exclusive flock; None if still held by someone else after ``wait`` seconds (0: try once)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return cls(fd)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def release(self) -> None:
        if self.fd >= 0:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = -1

    def __enter__(self) -> "FileLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(path: str) -> bool:
    """True if some process holds an flock on ``path`` (probing it does not keep it)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def read_blocks(path: str, size: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb", buffering=0) as fh:
        while True:
            block = fh.read(size)
            if not block:
                return
            yield block


# -- prefetched copies -----------------------------------------------------------------------------

def drop_prefetched(prefetch: str, name: str) -> None:
    unlink_quietly(os.path.join(prefetch, name))
    unlink_quietly(os.path.join(prefetch, name + ".json"))


def in_flight(prefetch: str, name: str) -> bool:
    """The prefetcher has started on ``name`` (its record is written first) and not finished it."""
    return os.path.exists(os.path.join(prefetch, name + ".json")) and \
        not os.path.exists(os.path.join(prefetch, name))


def wait_in_flight(prefetch: str, name: str, prefetcher_lock: str, timeout: float = IN_FLIGHT_WAIT_SECONDS,
                   stall: float = IN_FLIGHT_STALL_SECONDS) -> bool:
    """Wait while the running prefetcher downloads and decrypts ``name`` instead of doing the same work
    a second time beside it; True when a finished copy is there to check and serve. Stops waiting when
    the copy is done or dropped (a failure), when no prefetcher holds its lock any more (a killed one
    leaves its record behind), when its temp file has not grown for ``stall`` seconds (a hung
    download), or after ``timeout`` seconds in all."""
    if not in_flight(prefetch, name):
        return os.path.exists(os.path.join(prefetch, name))
    start = time.monotonic()
    last_growth, last_size = start, -1
    delay = 0.002
    while in_flight(prefetch, name) and is_locked(prefetcher_lock):
        now = time.monotonic()
        size = _partial_size(prefetch, name)
        if size != last_size:
            last_growth, last_size = now, size
        if now - start > timeout or now - last_growth > stall:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return os.path.exists(os.path.join(prefetch, name))


def _partial_size(prefetch: str, name: str) -> int:
    """Bytes the prefetcher has written so far for ``name`` (its temp file beside the copy; -1 before)."""
    prefix = f".{name}.pgb-tmp-"
    try:
        return max((os.stat(os.path.join(prefetch, e)).st_size for e in os.listdir(prefetch) if e.startswith(prefix)),
                   default=-1)
    except OSError:
        return -1


def serve_prefetched(prefetch: str, name: str, dest: str, *, object_sha256: Optional[str] = None,
                     object_size: Optional[int] = None, trust_seconds: Optional[float] = None) -> bool:
    """Move a prefetched copy to ``dest`` if it still matches; otherwise (or after) drop it.

    It must match the archive's object -- the SHA-256 and stored size given, read from the object
    now; or, where that would need a request (S3, on the fast path), the prefetcher's own check of
    it within ``trust_seconds`` -- and it must still hash to that SHA-256 on disk."""
    import hashlib

    path = os.path.join(prefetch, name)
    try:
        with open(path + ".json", "rb") as fh:
            record = json.loads(fh.read())
        if object_sha256 is not None:
            good = record.get("sha256") == object_sha256 and record.get("object_size") == object_size
        elif trust_seconds is None or time.time() - float(record.get("verified_at", 0)) > trust_seconds:
            return False      # not checked recently: keep it for a caller that can ask the archive
        else:
            good = True
        if good:
            digest = hashlib.sha256()
            for block in read_blocks(path):
                digest.update(block)
            good = digest.hexdigest() == record.get("sha256")
        if good:
            try:
                os.rename(path, dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                import shutil  # another filesystem: copy beside the target, then rename

                tmp = os.path.join(os.path.dirname(os.path.abspath(dest)), f".{os.path.basename(dest)}.pgb-tmp")
                try:
                    shutil.copyfile(path, tmp)
                    os.rename(tmp, dest)
                except OSError:
                    unlink_quietly(tmp)
                    raise
    except (OSError, ValueError, TypeError):
        good = False
    drop_prefetched(prefetch, name)
    return good
