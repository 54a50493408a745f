"""One run per cluster at a time: an exclusive, non-blocking flock on a file in the state dir.

flock is released by the kernel when the process dies (even by kill -9), so a crash never leaves
a stale lock behind; the file's content only tells the loser who holds it.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from typing import Optional

from .errors import LockBusyError, UsageError


class ClusterLock:
    def __init__(self, state_dir: str, cluster: str, command: str):
        self.path = os.path.join(state_dir, f"{cluster}.lock")
        self.cluster = cluster
        self.command = command
        self._fd: Optional[int] = None

    def acquire(self) -> "ClusterLock":
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UsageError(f"cannot open lock file {self.path}: {exc.strerror}",
                             hint="check paths.state_dir exists and belongs to this user") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockBusyError(f"cluster {self.cluster} is busy: {holder}",
                                hint="wait for it to finish; a second run never waits or runs in parallel") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "ClusterLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
        return f"'{info.get('command', '?')}' (pid {info.get('pid', '?')}) has held the lock since {info.get('since', '?')}"
    except (OSError, ValueError):
        return "another pg-backup process holds the lock"
