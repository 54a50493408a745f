"""The storage interface every backend implements.

Keys are '/'-separated and relative to the backend's root (bucket + prefix, or a directory). Writes
are atomic: an object is either absent or complete; a failed or interrupted ``put_stream`` leaves
nothing readable under the key (a leftover multipart upload or temp file at most, which ``prune``
removes after a grace period).

Nothing is overwritten: writes are create-if-absent by default (S3 ``If-None-Match: *`` on PutObject
and CompleteMultipartUpload, which the bucket role's writer policy requires; a hard link locally), and
a key that exists raises :class:`ObjectExists` with the stored object untouched.

Versions: on a versioned store a write returns the version id the store gave the object (``Stored``);
manifests record it, and ``pin_version`` makes every later read of that key read exactly that version,
so an object replaced by someone with more than writer rights is never what a restore reads.
"""
from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional

from ..errors import IntegrityError


class ObjectExists(IntegrityError, FileExistsError):
    """A create-if-absent write found its key taken (S3 412 PreconditionFailed, or EEXIST locally): nothing
    was overwritten and nothing of this write was committed. Callers that expect a clash (a WAL file
    already archived, a manifest) catch FileExistsError; anywhere else it ends the run with exit 4
    (integrity: the repository holds an object this run did not write, where it was about to write)."""

    def __init__(self, key: str, where: str = ""):
        super().__init__(f"object {where or key} already exists; nothing was overwritten",
                         hint="another writer created it (a concurrent run, or someone else writing into this "
                              "cluster's prefix): find out who before removing anything")
        self.key = key


class Stored(int):
    """What a write stored: its size in bytes (an ``int``, as before) and the version id the store gave
    the object (``None`` where the store keeps no versions: a local directory, an unversioned bucket)."""

    version_id: Optional[str]

    def __new__(cls, size: int, version_id: Optional[str] = None) -> "Stored":
        obj = super().__new__(cls, size)
        obj.version_id = version_id
        return obj


@dataclass(frozen=True)
class PutOptions:
    """What a backend may attach to an object: S3 uses all of it, the local backend ignores it."""

    storage_class: Optional[str] = None
    tags: Dict[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"
    #: Small string metadata stored with the object and returned by ``head()`` (S3 user metadata; an
    #: extended attribute, or a sidecar file where the filesystem has none, for the local backend).
    #: Keys are lowercase ASCII; the total stays well under S3's 2 KiB.
    metadata: Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: dt.datetime
    storage_class: Optional[str] = None
    #: For archived storage classes: None (not archived), "archived", "restoring" or "restored".
    archive_state: Optional[str] = None
    #: The object's metadata (PutOptions.metadata); filled in by ``head()`` only, None from ``list()``.
    metadata: Optional[Dict[str, str]] = None
    #: S3 Object Lock of this object version (``GOVERNANCE``/``COMPLIANCE`` and the retain-until date);
    #: filled in by ``head()`` only, None where there is none (and always for the local backend).
    lock_mode: Optional[str] = None
    lock_until: Optional[dt.datetime] = None


@dataclass(frozen=True)
class IncompleteUpload:
    """Debris of an interrupted write: an unfinished multipart upload or a local temp file."""

    key: str
    started: dt.datetime
    upload_id: Optional[str] = None


#: Called with (done_units, total_units, message) while waiting on slow storage operations.
ProgressFn = Callable[[int, int, str], None]


class Storage(abc.ABC):
    """A flat key space of immutable objects."""

    #: Human-readable location for messages (never contains credentials).
    location: str = ""

    @abc.abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes], options: PutOptions = PutOptions(), *,
                   overwrite: bool = False) -> Stored:
        """Store everything ``chunks`` yields under ``key``, atomically and durably; return its size
        and version id.

        If the iterator raises, the write is abandoned and the exception propagates. An existing key
        raises ObjectExists (a FileExistsError) and is left untouched; ``overwrite=True`` (replace it)
        is for tests only: the bucket role's policies refuse unconditional writes."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, options: PutOptions = PutOptions(), *,
                  overwrite: bool = False) -> Stored:
        """Store a small object, create-if-absent as ``put_stream``."""

    def pin_version(self, key: str, version_id: Optional[str]) -> None:
        """Read ``version_id`` of ``key`` from now on (``iter_chunks``, ``head``, ``make_readable``): the
        version a manifest recorded. A no-op where the store keeps no versions or ``version_id`` is None."""

    @abc.abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the object's bytes. Raises NotFoundError if absent."""

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.iter_chunks(key))

    @abc.abstractmethod
    def head(self, key: str) -> Optional[ObjectInfo]:
        """Metadata of one object, or None if it does not exist."""

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""

    @abc.abstractmethod
    def delete(self, keys: List[str]) -> None:
        """Delete objects; missing keys are not an error."""

    @abc.abstractmethod
    def list_incomplete(self, prefix: str) -> Iterator[IncompleteUpload]:
        """Unfinished writes under ``prefix``."""

    @abc.abstractmethod
    def abort_incomplete(self, upload: IncompleteUpload) -> None:
        """Remove the debris of one unfinished write."""

    def local_path(self, key: str) -> Optional[str]:
        """The file (for a prefix ending in '/', the directory) that holds ``key`` where objects are plain
        files another process may look at directly, as the WAL fast path does; None for every other
        backend."""
        return None

    def for_archive_command(self) -> None:
        """The caller is PostgreSQL's archive_command, which PostgreSQL retries itself: ride out only short
        outages (``repository.s3.wal_push_outage_tolerance_seconds``) so a push fails and is retried
        rather than holding the archiver; a no-op where there is nothing to wait for."""

    def object_lock(self) -> Optional[Dict[str, object]]:
        """The bucket's Object Lock configuration (``enabled``, default ``mode`` and ``days``/``years``; ``enabled``
        None with an ``error`` when the credentials may not read it), or None where objects cannot be locked
        (the local backend, a bucket without Object Lock)."""
        return None

    def make_readable(self, keys: List[str], progress: Optional[ProgressFn] = None) -> None:
        """Ensure archived objects (Glacier, Deep Archive) can be read; a no-op for most backends."""

    def request_retrieval(self, keys: List[str]) -> List[str]:
        """Ask for archived objects among ``keys`` to be made readable, without waiting; the keys not
        readable yet. Nothing is ever archived for most backends."""
        return []

    def stored_sha256(self, key: str) -> Optional[str]:
        """The object's SHA-256 (hex) as the store itself keeps it, read without reading the object;
        None where the store keeps none."""
        return None

    @abc.abstractmethod
    def check(self, *, wait: bool = True) -> Dict[str, object]:
        """Prove the storage is reachable (and for S3, report its region). Raise StorageError if not.
        ``wait=False`` (health): do not wait out an outage, and let the run's later requests fail at once
        if the store is unreachable."""
