"""The fast path of ``wal-push`` and ``wal-fetch``: PostgreSQL's common calls answered in a few
milliseconds, before YAML, boto3, psycopg or zstandard are loaded -- a stat, a marker read and, if
the resident uploader is busy with that very file, a lock wait.

What it needs from the configuration comes from a cache that the last full run wrote
(:func:`write_fast_settings`), used only while the configuration file is unchanged. Anything the
fast path cannot decide is left to the full path (``None``), which decides and reports it.

Standard library only (a unit test checks the modules it loads).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..files import atomic_write
from .names import is_wal_name, object_name
from .spool import (LOCK_WAIT_SECONDS, FileLock, Spool, drop_prefetched, heartbeat_path, is_locked, serve_prefetched,
                    stripe_path, touch, uploader_lock_path, wait_in_flight)
from .workers import spawn, worker_command

if TYPE_CHECKING:
    from ..repository import Repository

ENV_CONFIG = "PG_BACKUP_CONFIG"                     # same as config.ENV_CONFIG (a unit test checks)
DEFAULT_CONFIG_PATH = "/etc/pg-backup/pg-backup.yml"
FAST_CACHE_VERSION = 1
PREFETCH_TRUST_SECONDS = 60.0  # S3: a prefetched copy checked against its object this recently is served as is


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


# -- the cache of what the fast path needs ---------------------------------------------------------

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


def write_fast_settings(config_path: Optional[str], repo: "Repository", spool: Spool) -> None:
    """Best effort: remember what the fast path needs (never fails the caller). ``local_wal_root``:
    the directory of the WAL objects where the repository keeps them as files (None: ask the archive)."""
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
        data = {"version": FAST_CACHE_VERSION, "config": os.path.abspath(config_path), "config_stamp": stamp,
                "spool": spool.root, "cluster": repo.cluster,
                "local_wal_root": repo.storage.local_path(repo.wal_prefix)}
        current = None
        try:
            with open(path, "rb") as fh:
                current = json.loads(fh.read())
        except (OSError, ValueError):
            pass
        if current != data:
            atomic_write(path, json.dumps(data).encode())
    except OSError:
        pass


# -- answering -------------------------------------------------------------------------------------

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


def _fast_push(fast: Dict[str, Any], path: str, pickup_seconds: float = 2.0) -> Optional[int]:
    name = os.path.basename(path)
    if not is_wal_name(name):
        return None
    spool = Spool(fast["spool"])
    st = os.stat(path)
    pg_wal = os.path.dirname(os.path.abspath(path))
    touch(heartbeat_path(spool, pg_wal))
    if spool.marker_matches(name, st):
        return 0
    if not is_locked(uploader_lock_path(spool, pg_wal)):
        return None
    if spool.failed_recently(name):
        return None                  # the uploader just failed on it: store (and report) it ourselves
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
    if not is_wal_name(name):
        return None
    spool = Spool(fast["spool"])
    served = False
    wal_root = fast.get("local_wal_root")
    if wal_root is not None:              # the objects are files here: look at them directly
        if not wal_root or not os.path.isdir(wal_root):
            return None                   # no archive at all here: let the full path explain
        obj = os.path.join(wal_root, *object_name(name).split("/"))
        try:
            st = os.stat(obj)
        except FileNotFoundError:
            drop_prefetched(spool.prefetch, name)
            sys.stderr.write(f"pg-backup: error: WAL file {name} is not in the archive {wal_root}; "
                             f"this is normal at the end of the archived WAL\n")
            return 7
        if wait_in_flight(spool.prefetch, name, spool.prefetcher_lock_path):
            served = serve_prefetched(spool.prefetch, name, dest, object_sha256=_local_object_sha256(obj),
                                      object_size=st.st_size)
    elif wait_in_flight(spool.prefetch, name, spool.prefetcher_lock_path):
        served = serve_prefetched(spool.prefetch, name, dest, trust_seconds=PREFETCH_TRUST_SECONDS)
    if not served:
        return None
    spool.want(name)
    if not is_locked(spool.prefetcher_lock_path):
        spawn(worker_command("_prefetch", os.path.abspath(config_path)), spool.worker_log_path)
    return 0


def _local_object_sha256(path: str) -> Optional[str]:
    from ..objmeta import read   # standard library only, unlike the storage package

    return read(path).get("pgb-sha256")
