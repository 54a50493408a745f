"""A repository in a local (or mounted) directory.

Durability follows the classic recipe: write a temp file beside the target, fsync it, rename it
into place, fsync the directory. A crash leaves at most a ``.tmp-*`` file, which is never listed as
an object and is removed by prune once older than the grace period.
"""
from __future__ import annotations

import datetime as dt
import errno
import os
import secrets
from typing import Dict, Iterable, Iterator, List, Optional

from .. import objmeta
from ..errors import NotFoundError, StorageError
from .base import IncompleteUpload, ObjectExists, ObjectInfo, PutOptions, Storage, Stored

_TMP_MARK = ".tmp-"
_META_SUFFIX = objmeta.META_SUFFIX
_WRITEBACK_EVERY = 32 << 20


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage(Storage):
    def __init__(self, root: str, prefix: str = ""):
        self.root = os.path.join(root, prefix) if prefix else root
        self.location = self.root

    # -- helpers -----------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"invalid object key {key!r}")
        return os.path.join(self.root, *key.split("/"))

    def local_path(self, key: str) -> Optional[str]:
        return self._path(key.rstrip("/"))

    def _makedirs(self, directory: str) -> None:
        """Create missing directories and fsync each new one's parent, so the new entry survives a crash."""
        missing = []
        d = directory
        while not os.path.isdir(d):
            missing.append(d)
            d = os.path.dirname(d)
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o750)
            except FileExistsError:
                continue
            except OSError as exc:
                raise StorageError(f"cannot create directory {d}: {exc.strerror}",
                                   hint="check repository.path and its permissions") from None
            fsync_dir(os.path.dirname(d))

    def _temp_path(self, final: str) -> str:
        return f"{final}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"

    # -- writes ------------------------------------------------------------------------------
    def put_stream(self, key: str, chunks: Iterable[bytes], options: PutOptions = PutOptions(), *,
                   overwrite: bool = False) -> Stored:
        final = self._path(key)
        directory = os.path.dirname(final)
        self._makedirs(directory)
        tmp = self._temp_path(final)
        size = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                flushed = 0
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                    size += len(chunk)
                    if size - flushed >= _WRITEBACK_EVERY:
                        # Start writeback now (Linux: FADV_DONTNEED writes dirty pages
                        # asynchronously), so the final fsync does not wait for the whole file.
                        os.posix_fadvise(fd, flushed, size - flushed, os.POSIX_FADV_DONTNEED)
                        flushed = size
                sidecar = objmeta.set_on_fd(fd, options.metadata)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._commit(tmp, final, directory, overwrite, sidecar)
        except FileExistsError:
            _unlink_quietly(tmp)
            raise ObjectExists(key, final) from None
        except OSError as exc:
            _unlink_quietly(tmp)
            raise StorageError(f"cannot write {final}: {exc.strerror}",
                               hint="check free space and permissions of repository.path") from None
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return Stored(size)

    def _commit(self, tmp: str, final: str, directory: str, overwrite: bool, sidecar: Optional[bytes]) -> None:
        """Make a written, fsynced temp file visible under its final name (atomically), then fsync the
        directory. Metadata the filesystem could not keep as an extended attribute goes into a sidecar
        first, so the object is never visible without it."""
        if sidecar is not None:
            if not overwrite and os.path.lexists(final):
                raise FileExistsError(final)  # never replace the sidecar of an existing object
            # (Two writers racing for one new key on a filesystem without xattrs could still swap
            # sidecars; WAL pushes of one cluster are serialised by a lock in the spool.)
            self._write_sidecar(final, sidecar)
        if overwrite:
            os.rename(tmp, final)
        else:
            # link() fails if the target exists: an atomic create-if-absent.
            os.link(tmp, final)
            _unlink_quietly(tmp)
        fsync_dir(directory)

    def _write_sidecar(self, final: str, data: bytes) -> None:
        tmp = self._temp_path(final + _META_SUFFIX)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final + _META_SUFFIX)
        except BaseException:
            _unlink_quietly(tmp)
            raise

    def put_bytes(self, key: str, data: bytes, options: PutOptions = PutOptions(), *,
                  overwrite: bool = False) -> Stored:
        return self.put_stream(key, [data], options, overwrite=overwrite)

    # -- reads -------------------------------------------------------------------------------
    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        path = self._path(key)
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            raise NotFoundError(f"object {key} does not exist in {self.location}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}") from None
        with fh:
            while True:
                block = fh.read(chunk_size)
                if not block:
                    return
                yield block

    def head(self, key: str) -> Optional[ObjectInfo]:
        path = self._path(key)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot stat {path}: {exc.strerror}") from None
        return ObjectInfo(key, st.st_size, _mtime(st.st_mtime), metadata=objmeta.read(path))

    def _walk(self, prefix: str) -> Iterator[tuple]:
        base = self.root
        start_dir = os.path.join(base, *prefix.split("/")[:-1]) if "/" in prefix else base
        if not os.path.isdir(start_dir):
            return
        for dirpath, dirnames, filenames in os.walk(start_dir):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, base)
            for name in sorted(filenames):
                key = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    yield key, os.path.join(dirpath, name)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        found = []
        for key, path in self._walk(prefix):
            base = key.rsplit("/", 1)[-1]
            if _TMP_MARK in base or base.endswith(_META_SUFFIX):
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            found.append(ObjectInfo(key, st.st_size, _mtime(st.st_mtime)))
        found.sort(key=lambda o: o.key)
        return iter(found)

    def delete(self, keys: List[str]) -> None:
        dirs = set()
        for key in keys:
            path = self._path(key)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageError(f"cannot delete {path}: {exc.strerror}") from None
            _unlink_quietly(path + _META_SUFFIX)
            dirs.add(os.path.dirname(path))
        for d in sorted(dirs, key=len, reverse=True):
            self._remove_empty_dirs(d)

    def _remove_empty_dirs(self, d: str) -> None:
        root = os.path.normpath(self.root)
        while os.path.normpath(d) != root and d.startswith(root):
            try:
                os.rmdir(d)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    return
                raise StorageError(f"cannot remove directory {d}: {exc.strerror}") from None
            d = os.path.dirname(d)

    def list_incomplete(self, prefix: str) -> Iterator[IncompleteUpload]:
        for key, path in self._walk(prefix):
            if _TMP_MARK not in key.rsplit("/", 1)[-1]:
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            yield IncompleteUpload(key, _mtime(st.st_mtime))

    def abort_incomplete(self, upload: IncompleteUpload) -> None:
        self.delete([upload.key])

    def check(self, *, wait: bool = True) -> Dict[str, object]:
        if not os.path.isdir(self.root):
            try:
                self._makedirs(self.root)
            except StorageError as exc:
                raise StorageError(f"local repository {self.root} does not exist and cannot be created: {exc}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"local repository {self.root} is not writable by this user",
                               hint="chown it to the user that runs pg-backup")
        st = os.statvfs(self.root)
        return {"reachable": True, "path": self.root, "free_bytes": st.f_bavail * st.f_frsize}


def _mtime(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
