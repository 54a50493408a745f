"""Extract the tar stream of a base backup archive, or one part of it, in this process.

Why not GNU tar, as before: an archive stored as parts (physical/tarsplit.py) is extracted part by
part in parallel, and a part may begin inside a file, which only a writer that can start at an offset
(``pwrite``) can do. Writing from this process also saves a pipe and a process per stream.

What it accepts is what PostgreSQL's ``BASE_BACKUP`` writes: regular files, directories and symbolic
links, under relative names. Anything else (an absolute name, ``..``, a hard link, a device, pax or
GNU extension headers) is refused (IntegrityError, exit 4): such a stream did not come from the
server (the stock-tool recipe in docs/pitr.md still extracts it with GNU tar). Like GNU tar, symbolic
links are created only after every part of every archive is in place (:class:`Deferred`), so no entry
is ever written through a link the stream itself created; existing files are never truncated, so the
parts of one file written by different workers all land.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..errors import IntegrityError
from ..tarstream import DIRECTORY, REGULAR, SYMLINK, Cursor, Entry, Resume

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _read_umask() -> int:
    """The process umask, read once at import (reading it means setting it: never from worker threads)."""
    current = os.umask(0o077)
    os.umask(current)
    return current


_UMASK = _read_umask()


@dataclass
class Deferred:
    """What waits until every part of an archive is extracted: links, then modification times."""

    links: List[Tuple[str, str]] = field(default_factory=list)       # (path, target)
    times: List[Tuple[str, int]] = field(default_factory=list)       # (path, mtime), files and directories
    lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(self) -> None:
        for path, target in self.links:
            os.symlink(target, path)
        for path, mtime in self.times:     # after every file is written: nothing changes them again
            try:
                os.utime(path, (mtime, mtime), follow_symlinks=False)
            except FileNotFoundError:
                pass


class TarWriter:
    """Writes what :meth:`write` is fed (a tar stream, or a part of one starting at ``resume``) under
    ``dest``. :meth:`close` checks that the stream ended where it should have: between entries, or
    anywhere for a part that is not its archive's last."""

    def __init__(self, dest: str, what: str, deferred: Deferred, *, resume: Optional[Resume] = None,
                 last: bool = True):
        self.dest, self.what, self.deferred, self.last = dest, what, deferred, last
        self.cursor = Cursor(what, resume)
        self.fd = -1
        self.pos = 0
        self.times: List[Tuple[str, int]] = []
        if resume is not None:
            self._open(resume.path, 0o600, existing=True)
            self.pos = resume.at

    def _path(self, name: str) -> str:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if not parts or name.startswith("/") or ".." in parts or "\0" in name:
            raise IntegrityError(f"{self.what}: refusing the tar entry {name!r} (absolute, empty or with '..'): "
                                 f"a base backup from the server has none")
        return os.path.join(self.dest, *parts)

    def _open(self, name: str, mode: int, *, existing: bool) -> str:
        """Open the file ``name`` for writing (created if absent, never truncated); returns its path."""
        path = self._path(name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        try:
            self.fd = os.open(path, _OPEN_FLAGS, mode)
        except OSError as exc:
            raise IntegrityError(f"{self.what}: cannot write {path}: {exc.strerror}") from None
        if not existing:
            os.fchmod(self.fd, mode)
        return path

    def _close_file(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _entry(self, entry: Entry) -> None:
        mode = entry.mode & 0o777 & ~_UMASK
        if entry.type in REGULAR:
            path = self._open(entry.name, mode, existing=False)
            self.pos = 0
            self.times.append((path, entry.mtime))
            if not entry.size:
                self._close_file()
        elif entry.type == DIRECTORY:
            path = self._path(entry.name)
            os.makedirs(path, mode=0o700, exist_ok=True)
            os.chmod(path, mode | 0o700)
            self.times.append((path, entry.mtime))
        elif entry.type == SYMLINK:
            with self.deferred.lock:
                self.deferred.links.append((self._path(entry.name), entry.linkname))
        else:
            raise IntegrityError(f"{self.what}: tar entry {entry.name!r} has type {entry.type!r}, which a base "
                                 f"backup from the server never has (see docs/pitr.md, restoring by hand)")

    def write(self, block: bytes) -> None:
        view = memoryview(block)
        cursor = self.cursor
        while view:
            region, n, entry = cursor.step(view)
            if region == Cursor.DATA and self.fd >= 0:
                data = view[:n]
                while data:
                    written = os.pwrite(self.fd, data, self.pos)
                    self.pos += written
                    data = data[written:]
                if cursor.state != Cursor.DATA:
                    self._close_file()
            elif entry is not None:
                self._entry(entry)
            view = view[n:]

    def close(self) -> None:
        """Finish; IntegrityError when the stream ended inside an entry (a truncated last part)."""
        self._close_file()
        if self.last and not self.cursor.finished_cleanly():
            raise IntegrityError(f"{self.what}: the archive ends inside an entry: truncated")
        with self.deferred.lock:
            self.deferred.times.extend(self.times)

    def abort(self) -> None:
        self._close_file()
