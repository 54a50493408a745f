"""Small local files written whole: the spool's markers, the fast path's cache, health's state file,
the settings a recovery writes into a data directory.

Standard library only: the WAL fast path uses it before anything else of the agent is loaded.
"""
from __future__ import annotations

import os


def atomic_write(path: str, data: bytes, *, mode: int = 0o600, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` by one rename: a reader sees the old content or the new one,
    never a mix, and a crash leaves at most a temp file beside it (removed here on any error).

    The temp file has a name of its own per call (process id and random part), so threads and
    processes writing the same path never share one. ``durable``: fsync the data before the rename
    (files a server reads after a crash, such as postgresql.auto.conf); the spool's markers and
    caches are rebuilt when lost and skip it."""
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


def unlink_quietly(path: str) -> None:
    """Remove ``path`` if it is there; any error (gone already, no permission) is ignored."""
    try:
        os.unlink(path)
    except OSError:
        pass
