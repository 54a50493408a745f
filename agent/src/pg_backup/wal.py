"""``wal-push`` (archive_command) and ``wal-fetch`` (restore_command): continuous WAL archiving.

Rules (DESIGN §5), and how they are kept:

- **Durable before acknowledged.** ``wal-push`` exits 0 only after the object is stored (S3: a PUT
  with Content-MD5 answered 200; local: temp file fsynced, linked into place, directory fsynced).
  A spool marker that lets a later call acknowledge at once is written only after that, and it is
  bound to the file's identity (device, inode, size, mtime and ctime in nanoseconds).
- **Never overwrite.** Objects are created with create-if-absent (S3 ``If-None-Match: *``, local
  ``link()``). When the name exists, the SHA-256 of the *plaintext* stored with the object
  (metadata ``pgb-sha256``) decides: same content is success (PostgreSQL re-archives after a crash),
  different content is refused, recorded under ``<cluster>/wal/conflicts/`` and in the audit log.
- **One archive, one cluster.** ``<cluster>/wal/archive.json`` names the system identifier and
  segment size (created on the first push, create-if-absent). The pushing cluster's identifier is
  read from the file itself (the long page header of every segment) or ``global/pg_control``; the
  verified identity is cached in the spool, so steady-state pushes do not read archive.json.
- **Throughput.** A push also stores other ``.ready`` files (oldest first, ``wal.push_parallel`` at
  once) and remembers them; a resident uploader (started by a push that sees a backlog, gone when
  idle or when the postmaster is gone) drains ``.ready`` files ahead of PostgreSQL. PostgreSQL's
  later calls then take the *fast path*: this module's :func:`fast_main`, which needs no YAML,
  boto3, psycopg or zstandard -- a stat, a marker read and, if the uploader is busy with that very
  file, a lock wait.
- **Fetch.** ``wal-fetch`` writes DEST atomically (temp file + rename in DEST's directory), never
  serves a ``.partial`` as a segment, exits 7 quickly for a missing file (a local repository is
  answered by the fast path), and prefetches the next ``wal.fetch_prefetch`` segments into the spool
  in a background process; a prefetched file is served only if it still matches the archive's object.
- **Exit codes < 128.** A signal (e.g. SIGTERM at shutdown) ends a push or fetch with exit 5 and
  nothing visible: PostgreSQL treats codes above 125 from restore_command as fatal to recovery.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import struct
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

# Only the standard library above this line: the fast path must start in a few milliseconds.

ENV_CONFIG = "PG_BACKUP_CONFIG"                     # same as config.ENV_CONFIG (a unit test checks)
DEFAULT_CONFIG_PATH = "/etc/pg-backup/pg-backup.yml"
FAST_CACHE_VERSION = 1
_NAME_RE = re.compile(r"^(?:[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$")
_SEGMENT_ONLY_RE = re.compile(r"^[0-9A-F]{24}$")
LOCK_STRIPES = 64
LOCK_WAIT_SECONDS = 60.0           # PostgreSQL waits for archive_command (also at shutdown): keep it bounded
XLP_LONG_HEADER = 0x0002
UPLOADER_POLL_SECONDS = 0.05
PREFETCH_IDLE_SECONDS = 60.0
PREFETCH_TRUST_SECONDS = 60.0  # S3: a prefetched copy checked against its object this recently is served as is
PREFETCH_RECHECK_SECONDS = 20.0
SPILL_OVER = 1 << 20           # ciphertext beyond this goes to a spill file in the spool (bounded memory)
FAILED_RETRY_SECONDS = 15.0

Result = Dict[str, Any]


# =================================================================================================
# Spool: <wal.spool_dir>/<cluster>-<repository hash>/ (0700)
#   pushed/<NAME>          marker: the file (identity) was stored durably under its key
#   prefetch/<NAME>        a prefetched, verified WAL file; prefetch/<NAME>.json what it was checked against
#   prefetch/want          the last name wal-fetch served (the prefetcher works ahead of it)
#   locks/stripe-NN        flock stripes serialising work on one file name
#   failed/<NAME>          the uploader's last failure on NAME (PostgreSQL's call then stores it itself)
#   tmp/                   ciphertext of large files on its way to storage (removed after; stale ones by tidy)
#   identity.json          the archive identity verified against archive.json
#   uploader-<crc>.lock    held by the resident uploader of one pg_wal directory
#   prefetcher.lock        held by the prefetcher; worker.log: the resident processes' messages

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
        from .errors import UsageError

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
        return _marker_matches(self.marker_path(name), st)

    def write_marker(self, name: str, st: os.stat_result, sha256: str, key: str, outcome: str) -> None:
        _atomic_write(self.marker_path(name), json.dumps({
            "id": file_identity(st), "sha256": sha256, "key": key, "outcome": outcome,
            "stored_at": time.time()}).encode())

    def note_failure(self, name: str, message: str) -> None:
        """The uploader could not store ``name``: PostgreSQL's next call should not wait for it."""
        _atomic_write(os.path.join(self.failed, name), message.encode(errors="replace")[:2000])

    def clear_failure(self, name: str) -> None:
        _unlink(os.path.join(self.failed, name))

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
        _atomic_write(os.path.join(self.root, "identity.json"), json.dumps(identity).encode())

    # locks -----------------------------------------------------------------------------------------
    def lock(self, name: str, *, wait: float = LOCK_WAIT_SECONDS) -> Optional["FileLock"]:
        return FileLock.acquire(stripe_path(self.locks, name), wait)


def uploader_lock_path(spool: "Spool", pg_wal: str) -> str:
    import zlib

    return os.path.join(spool.root, f"uploader-{zlib.crc32(os.path.abspath(pg_wal).encode()):08x}.lock")


def heartbeat_path(spool: "Spool", pg_wal: str) -> str:
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


def _marker_matches(path: str, st: os.stat_result) -> bool:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("id") == file_identity(st)


def _atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def spool_namespace(settings: Any) -> str:
    """``<cluster>-<hash>``: markers belong to one repository (a new bucket or path starts afresh)."""
    import hashlib

    repo = settings.repository
    where = {"type": repo.type, "prefix": repo.prefix, "cluster": settings.cluster}
    if repo.type == "local":
        where["path"] = os.path.abspath(repo.path or "")
    else:
        where.update(bucket=repo.s3.bucket, endpoint=repo.s3.endpoint_url or "")
    digest = hashlib.sha256(json.dumps(where, sort_keys=True).encode()).hexdigest()[:12]
    return f"{settings.cluster}-{digest}"


# =================================================================================================
# The fast path: standard library only.

def _fast_args(argv: List[str]) -> Optional[Tuple[Optional[str], str, List[str]]]:
    """(config, command, positionals) for ``[--config F|-c F|--config=F] [-q|--quiet] [--debug]
    wal-push P`` / ``wal-fetch N D``; None for anything else (the full CLI handles it)."""
    config: Optional[str] = None
    command: Optional[str] = None
    positionals: List[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--config", "-c") and i + 1 < len(argv) and command is None:
            config = argv[i + 1]
            i += 2
            continue
        if a.startswith("--config=") and command is None:
            config = a[len("--config="):]
        elif a in ("-q", "--quiet", "--debug") and (command is None or a != "--debug"):
            pass
        elif a.startswith("-"):
            return None                     # --json, --help, anything unusual: the full CLI
        elif command is None:
            if a not in ("wal-push", "wal-fetch"):
                return None
            command = a
        else:
            positionals.append(a)
        i += 1
    if command is None or len(positionals) != (1 if command == "wal-push" else 2):
        return None
    return config, command, positionals


def _fast_cache_path(config_path: str) -> Optional[str]:
    import zlib

    base = os.environ.get("TMPDIR") or "/tmp"
    directory = os.path.join(base, f"pg-backup-{os.geteuid()}")
    raw = os.path.abspath(config_path).encode()
    # A short name; the cache records the full path and is used only if it names this very file.
    return os.path.join(directory, f"walfast-{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}.json")


def _private_dir_ok(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    import stat as stat_mod

    return stat_mod.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not (st.st_mode & 0o077)


def _config_stamp(config_path: str) -> Optional[List[int]]:
    try:
        st = os.stat(config_path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def read_fast_settings(config_path: str) -> Optional[Dict[str, Any]]:
    """What the fast path needs from a configuration, cached by the last full run that read it, as
    long as the file is unchanged. The cache lives in a private per-user directory; anything doubtful
    (owner, mode, stamp) means no cache."""
    path = _fast_cache_path(config_path)
    if path is None or not _private_dir_ok(os.path.dirname(path)):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None
        data = json.loads(os.read(fd, 1 << 16))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or data.get("version") != FAST_CACHE_VERSION:
        return None
    if data.get("config") != os.path.abspath(config_path) or data.get("config_stamp") != _config_stamp(config_path):
        return None
    if not _private_dir_ok(data.get("spool", "")):
        return None
    return data


def write_fast_settings(config_path: Optional[str], settings: Any, spool: Spool) -> None:
    """Best effort: remember what the fast path needs (never fails the caller)."""
    if not config_path:
        return
    try:
        stamp = _config_stamp(config_path)
        path = _fast_cache_path(config_path)
        if stamp is None or path is None:
            return
        directory = os.path.dirname(path)
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        if not _private_dir_ok(directory):
            return
        repo = settings.repository
        wal_root = None
        if repo.type == "local":
            root = os.path.join(repo.path, repo.prefix) if repo.prefix else repo.path
            wal_root = os.path.join(root, settings.cluster, "wal")
        data = {"version": FAST_CACHE_VERSION, "config": os.path.abspath(config_path), "config_stamp": stamp,
                "spool": spool.root,
                "cluster": settings.cluster, "repo_type": repo.type, "local_wal_root": wal_root}
        current = None
        try:
            with open(path, "rb") as fh:
                current = json.loads(fh.read())
        except (OSError, ValueError):
            pass
        if current != data:
            _atomic_write(path, json.dumps(data).encode())
    except OSError:
        pass


def fast_main(argv: List[str]) -> Optional[int]:
    """Answer the common wal-push/wal-fetch cases without loading the agent; None means 'not here'.

    wal-push: the file is remembered in the spool as stored (or becomes so while we wait for the
    resident uploader that holds its lock) -> 0. wal-fetch from a local repository: the object does
    not exist -> 7 at once; a prefetched copy that still matches the archive -> 0."""
    parsed = _fast_args(argv)
    if parsed is None:
        return None
    try:
        config, command, positionals = parsed
        config_path = config or os.environ.get(ENV_CONFIG) or DEFAULT_CONFIG_PATH
        fast = read_fast_settings(config_path)
        if fast is None:
            return None
        if command == "wal-push":
            return _fast_push(fast, positionals[0])
        return _fast_fetch(fast, positionals[0], positionals[1], config_path)
    except Exception:  # noqa: BLE001 - the full path decides (and reports) anything unexpected
        return None


def _exit_on_signal(signum: int, _frame: Any) -> None:
    os._exit(5)


def _fast_push(fast: Dict[str, Any], path: str, pickup_seconds: float = 2.0) -> Optional[int]:
    name = os.path.basename(path)
    if not _NAME_RE.match(name):
        return None
    spool = Spool(fast["spool"])
    st = os.stat(path)
    pg_wal = os.path.dirname(os.path.abspath(path))
    touch(heartbeat_path(spool, pg_wal))
    if spool.marker_matches(name, st):
        return 0
    if not is_locked(uploader_lock_path(spool, pg_wal)):
        return None
    try:
        if time.time() - os.stat(os.path.join(spool.failed, name)).st_mtime < FAILED_RETRY_SECONDS:
            return None                  # the uploader just failed on it: store (and report) it ourselves
    except OSError:
        pass
    # The resident uploader runs: it picks the file up within its poll interval. Wait while it stores
    # it (it holds the file's lock stripe meanwhile), then look again. Acknowledged only if the
    # marker appears; after the pickup window the full path stores the file itself.
    lock_path = stripe_path(spool.locks, name)
    deadline = time.monotonic() + pickup_seconds
    while True:
        if is_locked(lock_path):
            lock = FileLock.acquire(lock_path, LOCK_WAIT_SECONDS)
            if lock is not None:
                lock.release()
        if spool.marker_matches(name, os.stat(path)):
            return 0
        if time.monotonic() > deadline:
            return None
        time.sleep(0.005)


def _fast_fetch(fast: Dict[str, Any], name: str, dest: str, config_path: str) -> Optional[int]:
    """Missing in a local repository -> 7; a prefetched copy that still matches -> served by rename."""
    if not _NAME_RE.match(name):
        return None
    prefetch = os.path.join(fast["spool"], "prefetch")
    served = False
    if fast.get("repo_type") == "local":
        wal_root = fast.get("local_wal_root")
        if not wal_root or not os.path.isdir(wal_root):
            return None                   # no archive at all here: let the full path explain
        obj = os.path.join(wal_root, name[:8], name + ".zst.gpg")
        try:
            st = os.stat(obj)
        except FileNotFoundError:
            drop_prefetched(prefetch, name)
            sys.stderr.write(f"pg-backup: error: WAL file {name} is not in the archive {wal_root}; "
                             f"this is normal at the end of the archived WAL\n")
            return 7
        if os.path.exists(os.path.join(prefetch, name)):
            served = serve_prefetched(prefetch, name, dest, object_sha256=_local_object_sha256(obj),
                                      object_size=st.st_size)
    elif os.path.exists(os.path.join(prefetch, name)):
        served = serve_prefetched(prefetch, name, dest, trust_seconds=PREFETCH_TRUST_SECONDS)
    if not served:
        return None
    _atomic_write(os.path.join(prefetch, "want"), name.encode())
    if not is_locked(os.path.join(fast["spool"], "prefetcher.lock")):
        _spawn(_worker_command("_prefetch", os.path.abspath(config_path)), os.path.join(fast["spool"], "worker.log"))
    return 0


def _local_object_sha256(path: str) -> Optional[str]:
    from .objmeta import read   # standard library only, unlike the storage package

    return read(path).get("pgb-sha256")


def console_main() -> int:
    """The ``pg-backup`` console script. PostgreSQL runs it once per WAL file, so the common
    wal-push/wal-fetch answers come from :func:`fast_main` before the CLI (argparse, YAML,
    configuration schema, storage and crypto modules: about 100 ms of imports) is loaded at all."""
    argv = sys.argv[1:]
    if "wal-push" in argv or "wal-fetch" in argv:
        import signal

        # Nothing on the fast path writes anything that could be left half done: a signal just ends
        # the call, with an exit code PostgreSQL treats as an ordinary failure (never >= 128). The
        # full path installs its own handlers.
        previous = {sig: signal.signal(sig, _exit_on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        fast = fast_main(argv)
        if fast is not None:
            return fast
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    from .cli import main

    return main(argv)


# =================================================================================================
# Reading identities from PostgreSQL's own files

def read_segment_header(path: str) -> Optional[Tuple[int, int, int]]:
    """(system identifier, segment size, block size) from a segment's long page header, or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(40)
    except OSError:
        return None
    if len(head) < 40:
        return None
    _magic, info = struct.unpack_from("<HH", head, 0)
    if not info & XLP_LONG_HEADER:
        return None
    sysid, seg_size, blcksz = struct.unpack_from("<QII", head, 24)
    if sysid == 0 or seg_size == 0 or seg_size & (seg_size - 1):
        return None
    return sysid, seg_size, blcksz


def read_control_sysid(datadir: str) -> Optional[int]:
    """The system identifier: the first 8 bytes of global/pg_control."""
    try:
        with open(os.path.join(datadir, "global", "pg_control"), "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    if len(head) < 8:
        return None
    return struct.unpack("<Q", head)[0] or None


def datadir_of(pg_wal: str) -> str:
    """The data directory of a pg_wal directory given as PostgreSQL passes it (cwd is the data dir)."""
    if os.path.basename(pg_wal) in ("pg_wal", "pg_xlog"):
        return os.path.dirname(pg_wal)
    return os.getcwd()


def ready_files(pg_wal: str) -> List[str]:
    """Names with a .ready status file, in PostgreSQL's archiving order (history files first)."""
    from .walarchive import WalNameError, parse_wal_name, sort_key

    try:
        names = os.listdir(os.path.join(pg_wal, "archive_status"))
    except OSError:
        return []
    result = []
    for entry in names:
        if not entry.endswith(".ready"):
            continue
        name = entry[:-len(".ready")]
        try:
            result.append(parse_wal_name(name))
        except WalNameError:
            continue
    result.sort(key=sort_key)
    return [w.name for w in result]


# =================================================================================================
# Pushing

class PushOutcome:
    def __init__(self, name: str, key: str, outcome: str, size: int = 0, stored: int = 0, sha256: str = ""):
        self.name, self.key, self.outcome, self.size, self.stored, self.sha256 = name, key, outcome, size, stored, sha256

    def as_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "key": self.key, "outcome": self.outcome, "bytes": self.size,
                "stored_bytes": self.stored}


class Pusher:
    """Stores WAL files of one data directory into the archive."""

    def __init__(self, ctx: Any, spool: Spool, pg_wal: str, *, record_conflicts: bool = True,
                 argv: Optional[List[str]] = None):
        from .walarchive import WalArchive

        self.ctx = ctx
        self.spool = spool
        self.pg_wal = pg_wal
        self.datadir = datadir_of(pg_wal)
        self.archive = WalArchive(ctx.storage, ctx.cluster)
        self.record_conflicts = record_conflicts
        self.argv = argv or []
        self._fingerprint: Optional[str] = None
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
        from .errors import RefusedError

        header = read_segment_header(path) if _SEGMENT_ONLY_RE.match(name[:24]) and not name.endswith(
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
        from .errors import RefusedError

        sysid, seg_size = self.pushing_identity(path, name)
        for known in (self._identity_ok, self.spool.cached_identity()):
            if known and str(known.get("system_identifier")) == str(sysid) and (
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
        cached = {"system_identifier": str(ident["system_identifier"]),
                  "wal_segment_size": ident.get("wal_segment_size") or seg_size}
        self.spool.cache_identity(cached)
        self._identity_ok = cached

    def _create_identity(self, sysid: int, seg_size: Optional[int]) -> Dict[str, Any]:
        from . import __version__
        from .manifest import iso
        from .storage.base import PutOptions

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
            self.ctx.storage.put_bytes(self.archive.identity_key, (json.dumps(doc, indent=1) + "\n").encode(),
                                       PutOptions(content_type="application/json",
                                                  tags={"kind": "wal", "cluster": self.ctx.cluster}),
                                       overwrite=False)
            return doc
        except FileExistsError:
            self.archive._identity_read = False
            ident = self.archive.identity()
            return ident or doc

    # conflicts --------------------------------------------------------------------------------------
    def conflict(self, name: str, reason: str, **detail: Any) -> None:
        """Record a refused push where health sees it (``<cluster>/wal/conflicts/``) and in the audit log."""
        if not self.record_conflicts:
            return
        import secrets
        import socket

        from .audit import AuditRecord, write_local, write_remote
        from .manifest import iso
        from .storage.base import PutOptions

        now = self.ctx.clock()
        doc = {"name": name, "reason": reason, "recorded_at": iso(now), "host": socket.gethostname(),
               "cluster": self.ctx.cluster, **{k: v for k, v in detail.items() if v is not None}}
        key = (f"{self.archive.conflicts_prefix}{iso(now)[:19].replace('-', '').replace(':', '')}Z-{name}-"
               f"{secrets.token_hex(3)}.json")
        warnings = []
        try:
            self.ctx.storage.put_bytes(key, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(),
                                       PutOptions(content_type="application/json",
                                                  tags={"kind": "wal", "cluster": self.ctx.cluster}),
                                       overwrite=False)
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
        from .errors import StorageError

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
                from .errors import UsageError

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
        from .errors import StorageError
        from .storage.base import PutOptions
        from .walarchive import META_HISTORY, META_KEY, META_SHA256, META_SIZE, META_SYSID, encode_history_meta, \
            parse_history

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
        from .errors import RefusedError
        from .walarchive import META_SHA256

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


def sha256_of_file(path: str) -> Tuple[str, int]:
    import hashlib

    digest = hashlib.sha256()
    size = 0
    for block in read_blocks(path):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


class EncodedFile:
    """The ciphertext of one WAL file: in memory up to ``SPILL_OVER`` bytes, beyond that in a private
    spill file (encrypted data only), so memory stays bounded whatever the segment size."""

    def __init__(self, sha256: str, size: int, blocks: List[bytes], spill: Optional[str] = None):
        self.sha256 = sha256
        self.size = size
        self._blocks = blocks
        self.spill = spill

    def chunks(self) -> Any:
        if self.spill is None:
            return iter(self._blocks)
        return read_blocks(self.spill)

    def close(self) -> None:
        self._blocks = []
        if self.spill is not None:
            _unlink(self.spill)
            self.spill = None

    def __enter__(self) -> "EncodedFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode_file(path: str, gpg: Any, level: int, *, what: str, spill_dir: Optional[str] = None,
                spill_over: int = SPILL_OVER) -> EncodedFile:
    """zstd + OpenPGP of one WAL file, with the SHA-256 of its plaintext, in one read of the file.
    Ciphertext beyond ``spill_over`` bytes goes to a file in ``spill_dir`` (the spool's tmp/, 0700)."""
    import hashlib
    import secrets

    digest = hashlib.sha256()
    blocks: List[bytes] = []
    held = 0
    spill: Optional[str] = None
    fd = -1

    def sink(block: bytes) -> None:
        nonlocal held, spill, fd
        if fd < 0 and spill_dir is not None and held + len(block) > spill_over:
            spill = os.path.join(spill_dir, f"{os.path.basename(path)}.{os.getpid()}-{secrets.token_hex(4)}.gpg")
            fd = os.open(spill, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            for b in blocks:
                _write_all(fd, b)
            blocks.clear()
        if fd >= 0:
            _write_all(fd, block)
        else:
            blocks.append(block)
        held += len(block)

    try:
        count = _encrypt_into(path, gpg, level, what, digest, sink)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        if spill:
            _unlink(spill)
        raise
    if fd >= 0:
        os.close(fd)
    return EncodedFile(digest.hexdigest(), count, blocks, spill)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def read_blocks(path: str, size: int = 1 << 20) -> Any:
    with open(path, "rb", buffering=0) as fh:
        while True:
            block = fh.read(size)
            if not block:
                return
            yield block


def _encrypt_into(path: str, gpg: Any, level: int, what: str, digest: Any, sink: Any) -> int:
    """Read ``path``, hash it, compress it into a gpg process and hand the ciphertext to ``sink``."""
    import threading

    import zstandard

    enc = gpg.start_encrypt()
    errors: List[BaseException] = []
    count = [0]

    def feed() -> None:
        try:
            # A frame checksum too: stock `zstd -d` then notices damage (the disaster recipe).
            cobj = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj(size=os.path.getsize(path))
            out = enc.stdin
            for block in read_blocks(path):
                digest.update(block)
                count[0] += len(block)
                out.write(cobj.compress(block))
            out.write(cobj.flush())
        except BaseException as exc:
            errors.append(exc)
        finally:
            try:
                enc.stdin.close()
            except OSError:
                pass

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    done = False
    try:
        fd = enc.stdout.fileno()
        while True:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            sink(block)
        t.join()
        if errors:
            if isinstance(errors[0], BrokenPipeError):
                enc.finish(what)
            raise errors[0]
        enc.finish(what)
        done = True
    finally:
        if not done:
            enc.kill()
            t.join(timeout=30)
    return count[0]


def wal_push(ctx: Any, path: str, *, config_path: Optional[str] = None) -> Result:
    """archive_command: store ``path`` (and other .ready files) durably; see the module docstring."""
    from concurrent.futures import ThreadPoolExecutor

    from .errors import UsageError
    from .walarchive import WalNameError, parse_wal_name

    name = os.path.basename(path)
    try:
        parse_wal_name(name)
    except WalNameError as exc:
        raise UsageError(f"wal-push: {exc}", hint="archive_command must pass %p") from None
    abspath = os.path.abspath(path)
    pg_wal = os.path.dirname(abspath)
    spool = Spool.for_settings(ctx.settings)
    write_fast_settings(config_path, ctx.settings, spool)
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
    if spool_needs_tidy(spool):
        spool.tidy_markers(pg_wal)
    verb = {"stored": "stored", "already-stored": "already stored",
            "identical-already-archived": "already archived with identical content"}[outcome.outcome]
    result: Result = {"wal_file": name, "key": outcome.key, "outcome": outcome.outcome, "bytes": outcome.size,
                      "stored_bytes": outcome.stored, "seconds": round(elapsed, 3),
                      "ahead": [o.as_dict() for o in batch]}
    if not ctx.progress.quiet:
        extra = f" (+{len(batch)} ahead)" if batch else ""
        result["_text"] = [f"{name}: {verb}{extra} in {elapsed:.2f} s"]
    else:
        result["_text"] = []
    return result


def run_wal_command(fn: Any) -> Result:
    """Run wal-push/wal-fetch; a signal ends it with exit 5 (< 128) instead of 130: PostgreSQL treats
    a restore_command exit above 125 as fatal to recovery, and an archive_command one as a crash."""
    from .errors import Interrupted, StorageError

    try:
        return fn()
    except (Interrupted, KeyboardInterrupt) as exc:
        text = str(exc) if isinstance(exc, Interrupted) else "interrupted"
        raise StorageError(f"{text.split(';')[0]}; nothing was acknowledged",
                           hint="PostgreSQL retries the file") from None


def spool_needs_tidy(spool: Spool) -> bool:
    try:
        return len(os.listdir(spool.pushed)) > 256
    except OSError:
        return False


# =================================================================================================
# The resident uploader

def _worker_command(kind: str, config_path: str, *extra: str) -> List[str]:
    return [sys.executable, "-m", "pg_backup.wal", kind, config_path, *extra]


def _spawn(argv: List[str], log: str) -> None:
    import subprocess

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
                         close_fds=True, cwd="/")
    finally:
        os.close(fd)


def start_worker(ctx: Any, spool: Spool, kind: str, lock_path: str, config_path: Optional[str],
                 *args: str) -> bool:
    """Start a resident worker (``_upload`` or ``_prefetch``) unless one holds ``lock_path``.

    Forked from this process when it runs no other thread (the worker starts at once, with every
    module already imported); otherwise a fresh ``python -m pg_backup.wal`` (needs the config path).
    Either way it is detached (own session, stdio to the spool's worker.log), so PostgreSQL's
    archiver or startup process never waits for it."""
    import threading

    if is_locked(lock_path):
        return False
    log = _rotate_worker_log(spool)
    if threading.active_count() > 1:
        if not config_path:
            return False
        _spawn(_worker_command(kind, os.path.abspath(config_path), *args), log)
        return True
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)           # the intermediate child exits at once
        return True
    try:                             # pragma: no cover - runs in the detached worker
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(null)
        os.close(out)
        _run_worker(kind, ctx.settings, ctx.clock, *args)
    except BaseException as exc:  # noqa: BLE001
        try:
            _log(f"{kind} failed: {exc.__class__.__name__}: {exc}")
        except Exception:  # noqa: BLE001
            pass
    finally:
        os._exit(0)


def _rotate_worker_log(spool: Spool) -> str:
    log = os.path.join(spool.root, "worker.log")
    try:
        if os.path.getsize(log) > (4 << 20):
            os.replace(log, log + ".1")
    except OSError:
        pass
    return log


def _run_worker(kind: str, settings: Any, clock: Any, *args: str) -> None:
    from .context import Context
    from .progress import Progress

    ctx = Context(settings, Progress(quiet=True), clock=clock)
    try:
        if kind == "_upload":
            run_uploader(ctx, args[0])
        else:
            run_prefetcher(ctx)
    finally:
        ctx.close()


def start_uploader(ctx: Any, config_path: Optional[str], pg_wal: str) -> bool:
    """Start the resident uploader for ``pg_wal`` unless it is off or one runs already."""
    if ctx.settings.wal.uploader_idle_seconds <= 0:
        return False
    spool = Spool.for_settings(ctx.settings)
    return start_worker(ctx, spool, "_upload", uploader_lock_path(spool, pg_wal), config_path, pg_wal)


def _postmaster_alive(datadir: str) -> bool:
    try:
        with open(os.path.join(datadir, "postmaster.pid"), encoding="ascii") as fh:
            pid = int(fh.readline().strip())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def _log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} [{os.getpid()}] {message}\n")
    sys.stderr.flush()


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
    pusher = Pusher(ctx, spool, pg_wal, record_conflicts=False)
    pusher.prepare()
    parallel = max(ctx.settings.wal.push_parallel, 1)
    failed: Dict[str, float] = {}
    last_work = time.monotonic()
    _log(f"uploader started for {pg_wal} ({parallel} at once)")
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
                        _log(f"{n}: {exc}")
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
                _log(f"no wal-push call for {idle_seconds:.0f} s (archive_command changed or archiving off)")
                break
            if not _postmaster_alive(datadir):
                _log("postmaster is gone")
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
    _log(f"uploader exits after storing {stored} file(s)")
    return stored


# =================================================================================================
# Fetching

def _decrypt_to(ctx: Any, key: str, fingerprint: str, sha256: Optional[str], size: Optional[int], dest: str,
                what: str) -> None:
    """Decrypt the object into ``dest`` atomically (temp file beside it, renamed after verification)."""
    import hashlib

    from .errors import IntegrityError, StorageError
    from .pipeline import iter_plaintext

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
            _unlink(tmp)


def drop_prefetched(prefetch: str, name: str) -> None:
    _unlink(os.path.join(prefetch, name))
    _unlink(os.path.join(prefetch, name + ".json"))


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
                    _unlink(tmp)
                    raise
    except (OSError, ValueError, TypeError):
        good = False
    drop_prefetched(prefetch, name)
    return good


def wal_fetch(ctx: Any, name: str, dest: str, *, config_path: Optional[str] = None) -> Result:
    """restore_command: write archived ``name`` to ``dest``; exit 7 if the archive does not hold it."""
    from .errors import IntegrityError, NotFoundError, UsageError
    from .walarchive import META_KEY, META_SHA256, META_SIZE, WalArchive, WalNameError, parse_wal_name

    t0 = time.monotonic()
    try:
        w = parse_wal_name(name)
    except WalNameError as exc:
        raise UsageError(f"wal-fetch: {exc}", hint="restore_command must pass %f and %p") from None
    spool = Spool.for_settings(ctx.settings)
    write_fast_settings(config_path, ctx.settings, spool)
    archive = WalArchive(ctx.storage, ctx.cluster)
    key = archive.key_for(name)
    info = ctx.storage.head(key)
    if info is None:
        drop_prefetched(spool.prefetch, name)
        raise NotFoundError(f"WAL file {name} is not in the archive {ctx.repo.location}wal/",
                            hint="this is normal at the end of the archived WAL")
    meta = info.metadata or {}
    source = "archive"
    if os.path.exists(os.path.join(spool.prefetch, name)) and serve_prefetched(
            spool.prefetch, name, dest, object_sha256=meta.get(META_SHA256), object_size=info.size):
        source = "prefetched"
    else:
        fingerprint = meta.get(META_KEY)
        if not fingerprint:
            raise IntegrityError(f"{key} has no pgb-key metadata: it was not stored by pg-backup wal-push")
        size = int(meta[META_SIZE]) if meta.get(META_SIZE, "").isdigit() else None
        _decrypt_to(ctx, key, fingerprint, meta.get(META_SHA256), size, dest, f"WAL file {name}")
    if w.kind == "segment" and ctx.settings.wal.fetch_prefetch > 0:
        request_prefetch(ctx, spool, config_path, name)
    elapsed = time.monotonic() - t0
    return {"wal_file": name, "dest": dest, "source": source, "bytes": info.size, "seconds": round(elapsed, 3),
            "_text": [] if ctx.progress.quiet else [f"{name}: restored from the {source} in {elapsed:.2f} s"]}


def request_prefetch(ctx: Any, spool: Spool, config_path: Optional[str], name: str) -> None:
    _atomic_write(os.path.join(spool.prefetch, "want"), name.encode())
    start_worker(ctx, spool, "_prefetch", os.path.join(spool.root, "prefetcher.lock"), config_path)


def run_prefetcher(ctx: Any, *, idle_seconds: float = PREFETCH_IDLE_SECONDS) -> int:
    """Keep the ``wal.fetch_prefetch`` segments after the last served one decrypted and verified in the
    spool, two downloads at a time; re-check held copies against the archive every 20 s. Returns the
    number of files fetched."""
    from concurrent.futures import ThreadPoolExecutor

    from .walarchive import WalArchive, next_segment, parse_wal_name

    spool = Spool.for_settings(ctx.settings)
    lock = FileLock.acquire(os.path.join(spool.root, "prefetcher.lock"), 0)
    if lock is None:
        return 0
    archive = WalArchive(ctx.storage, ctx.cluster)
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

    with lock, ThreadPoolExecutor(max_workers=2, thread_name_prefix="wal-prefetch") as pool:
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
                        _log(f"prefetch of {n} failed: {fut.exception()}")
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
                if len(running) >= 2:
                    break
                if name in running or os.path.exists(os.path.join(spool.prefetch, name)) or \
                        missing_until.get(name, 0) > now:
                    continue
                running[name] = pool.submit(fetch_one, name)
            time.sleep(0.05)
    return fetched[0]


def _prefetch_one(ctx: Any, archive: Any, spool: Spool, name: str) -> bool:
    """Download, decrypt and verify ``name`` into the spool; False if the archive has no such file."""
    from .walarchive import META_KEY, META_SHA256, META_SIZE

    key = archive.key_for(name)
    info = ctx.storage.head(key)
    if info is None:
        return False
    meta = info.metadata or {}
    path = os.path.join(spool.prefetch, name)
    # The record first: a copy is only ever served together with what it was checked against.
    _atomic_write(path + ".json", json.dumps({"sha256": meta.get(META_SHA256), "object_size": info.size,
                                              "key": key, "verified_at": time.time()}).encode())
    try:
        _decrypt_to(ctx, key, meta.get(META_KEY, ""), meta.get(META_SHA256),
                    int(meta[META_SIZE]) if meta.get(META_SIZE, "").isdigit() else None, path, f"WAL file {name}")
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
        if _SEGMENT_ONLY_RE.match(base) and base[8:] <= want[8:] and base not in running:
            _unlink(os.path.join(prefetch, entry))


def _recheck(ctx: Any, archive: Any, spool: Spool, running: Dict[str, Any]) -> None:
    """Held copies whose check is older than PREFETCH_RECHECK_SECONDS: HEAD the object again; a copy
    whose object is gone or different is dropped, the others get a fresh ``verified_at``."""
    from .walarchive import META_SHA256

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
            _log(f"re-check of prefetched {name} failed: {exc}")
            continue
        if info is None or (info.metadata or {}).get(META_SHA256) != record.get("sha256") or \
                info.size != record.get("object_size"):
            drop_prefetched(spool.prefetch, name)
            continue
        record["verified_at"] = now
        _atomic_write(record_path, json.dumps(record).encode())


# =================================================================================================
# Background entry point: python -m pg_backup.wal _upload CONFIG PG_WAL | _prefetch CONFIG

def _worker_main(argv: List[str]) -> int:
    from . import config as config_mod
    from .errors import PgBackupError
    from .manifest import utcnow

    if len(argv) < 2 or argv[0] not in ("_upload", "_prefetch") or (argv[0] == "_upload" and len(argv) < 3):
        sys.stderr.write("usage: python -m pg_backup.wal _upload CONFIG PG_WAL | _prefetch CONFIG\n")
        return 2
    try:
        _run_worker(argv[0], config_mod.load(argv[1]), utcnow, *argv[2:])
    except PgBackupError as exc:
        _log(f"{argv[0]} stopped: {exc}")
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover - the resident processes
    raise SystemExit(_worker_main(sys.argv[1:]))
