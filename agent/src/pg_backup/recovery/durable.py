"""Make restored files durable before the recovered server starts (Linux ``syncfs``).

GNU tar writes the restored files without syncing them; PostgreSQL's crash/archive recovery then
fsyncs every file of the data directory (SyncDataDirectory) before it reads its first WAL, so on a
host with much RAM the whole restore's writeback lands between server start and the first restored
segment. :class:`Writeback` starts that writeback while the archives are still being extracted
(``syncfs`` on each target filesystem, repeatedly, from a background thread) and :func:`make_durable`
finishes it before the server starts, timed as the ``sync`` phase: the server's own sync then finds
clean pages. Where ``syncfs`` is missing (not Linux), every restored file is fsynced instead."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from typing import Iterable, List, Optional

from ..progress import PhaseTimer

#: Seconds between two background ``syncfs`` passes while the archives are extracted.
WRITEBACK_INTERVAL = 1.0

#: Test hook: how many sync passes (syncfs calls or per-file fsync walks) ran in this process.
SYNC_CALLS = 0

_LIBC: Optional[ctypes.CDLL] = None


def _libc_syncfs() -> Optional[ctypes.CDLL]:
    global _LIBC
    if _LIBC is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _LIBC = libc if hasattr(libc, "syncfs") else None
        except OSError:
            _LIBC = None
    return _LIBC


def _fsync_tree(path: str) -> None:
    for root, dirs, files in os.walk(path):
        for name in files + dirs + [""]:
            target = os.path.join(root, name) if name else root
            if os.path.islink(target):
                continue
            try:
                fd = os.open(target, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            except OSError:
                pass
            finally:
                os.close(fd)


def sync_tree(path: str) -> None:
    """Write back everything dirty under ``path``: one ``syncfs`` of its filesystem, else an fsync
    of every file and directory below it."""
    global SYNC_CALLS
    SYNC_CALLS += 1
    libc = _libc_syncfs()
    if libc is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    _fsync_tree(path)


def distinct_filesystems(paths: Iterable[str]) -> List[str]:
    """One existing path per filesystem of ``paths`` (syncfs syncs a whole filesystem)."""
    seen, chosen = set(), []
    for path in paths:
        if not os.path.isdir(path):
            continue
        dev = os.stat(path).st_dev
        if dev not in seen:
            seen.add(dev)
            chosen.append(path)
    return chosen


class Writeback:
    """Background writeback while archives are extracted into ``paths`` (a context manager).
    Only when ``syncfs`` exists: a per-file fsync walk of a half-extracted tree would be repeated work."""

    def __init__(self, paths: Iterable[str], interval: float = WRITEBACK_INTERVAL):
        self.paths = list(paths)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for path in distinct_filesystems(self.paths):
                try:
                    sync_tree(path)
                except OSError:
                    pass

    def __enter__(self) -> "Writeback":
        if _libc_syncfs() is not None and self.paths:
            self._thread = threading.Thread(target=self._run, name="pg-backup-writeback", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def make_durable(paths: Iterable[str], timer: PhaseTimer) -> None:
    """Sync every restored tree in ``paths`` before the server starts; the seconds go to ``sync``."""
    t0 = time.monotonic()
    for path in distinct_filesystems(paths):
        sync_tree(path)
    timer.add("sync", time.monotonic() - t0)
