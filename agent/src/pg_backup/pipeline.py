"""The one-pass data path: source → zstd → OpenPGP (AES-256) → SHA-256 → storage, and back.

Every byte is read once and never lands on disk in plaintext. Memory stays bounded by a few
1 MiB chunks plus zstd's per-thread windows plus one storage part, whatever the data size.

Threads, not processes: zstd and hashlib release the GIL, gpg runs as its own process, so a 2-core
host keeps both cores busy while Python only moves buffers.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Optional

import zstandard

from .crypto import GnuPG
from .errors import IntegrityError, PgBackupError
from .storage.base import PutOptions, Storage

CHUNK = 1 << 20
#: Callback(stage, bytes_done) for progress reporting.
Progress = Callable[[str, int], None]


@dataclass
class StoreResult:
    size: int
    sha256: str
    raw_size: int
    #: The version the store gave the object (a versioned bucket), for the manifest; None elsewhere.
    version_id: Optional[str] = None


class _Feeder(threading.Thread):
    """Copies a source into a sink in its own thread and keeps the first error for the caller."""

    def __init__(self, work: Callable[[], None]):
        super().__init__(daemon=True)
        self._work = work
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # re-raised in the caller's thread
            self.error = exc


#: Compressed bytes handed to gpg's pipe per write, and ciphertext read back per read: below glibc's
#: mmap threshold (128 KiB), so the bytes objects made for them are recycled heap memory, not fresh
#: pages (a fresh 1 MiB block costs an mmap and 256 page faults).
_SMALL_BLOCK = 64 << 10


class _CountingSource:
    """Reads the source into one reused buffer (``readinto``) and counts what passes through it.

    A fresh 1 MiB ``bytes`` per read can cost a fresh mmap and 256 page faults (measured alone: 0.03-0.07 s
    of kernel CPU per 100 MB of dump); ``readinto`` a reused buffer costs none (issue 12, session 8)."""

    def __init__(self, source: BinaryIO, progress: Optional[Progress]):
        fileno = getattr(source, "fileno", None)
        try:
            self._raw = os.fdopen(fileno(), "rb", buffering=0, closefd=False) if fileno else source
        except (OSError, ValueError, io.UnsupportedOperation):
            self._raw = source
        self._progress = progress
        self.count = 0

    def blocks(self) -> Iterator[memoryview]:
        """The source's content, CHUNK at a time: each view is valid only until the next one."""
        readinto = getattr(self._raw, "readinto", None)
        buf = memoryview(bytearray(CHUNK))
        while True:
            if readinto is not None:
                n = readinto(buf)
                block = buf[:n] if n else None
            else:
                data = self._raw.read(CHUNK)
                block = memoryview(data) if data else None
            if not block:
                return
            self.count += len(block)
            if self._progress:
                self._progress("dump", self.count)
            yield block


class EncryptedStream:
    """gpg encrypting what ``produce(stdin)`` writes into it, fed from a thread of its own; iterate for
    the ciphertext (up to ``read_size`` bytes at a time). The one compress -> encrypt feeder of the data
    path: backups through :func:`store_stream`, WAL files through :func:`pg_backup.wal.encode.encode_file`.

    Use it as a context manager: leaving the block before the ciphertext was read to its end (the
    consumer failed) kills gpg, so the producer stops on a broken pipe. A producer error, or gpg's
    verdict, is raised at the end of the iteration."""

    def __init__(self, gpg: GnuPG, produce: Callable[[BinaryIO], None], *, what: str, background: bool = False,
                 read_size: int = CHUNK):
        self._enc = gpg.start_encrypt()
        self._read_size = read_size
        if background:
            lower_priority(self._enc.proc.pid)
        self._what = what
        self._completed = False

        def feed() -> None:
            try:
                produce(self._enc.stdin)
            finally:
                try:
                    self._enc.stdin.close()
                except OSError:
                    pass

        self._feeder = _Feeder(feed)

    def __enter__(self) -> "EncryptedStream":
        self._feeder.start()
        return self

    def __iter__(self) -> Iterator[bytes]:
        enc, feeder = self._enc, self._feeder
        fd, size = enc.stdout.fileno(), self._read_size
        while True:
            block = os.read(fd, size)
            if not block:
                break
            yield block
        feeder.join()
        if feeder.error is not None:
            if isinstance(feeder.error, BrokenPipeError):
                enc.finish(self._what)  # gpg died first: its message is the real cause
            raise feeder.error
        enc.finish(self._what)
        self._completed = True

    def __exit__(self, *exc: object) -> None:
        if not self._completed:
            self._enc.kill()
            self._feeder.join(timeout=30)


def store_stream(source: BinaryIO, storage: Storage, key: str, gpg: GnuPG, *, what: str,
                 level: int, threads: int, options: PutOptions = PutOptions(),
                 finish_source: Callable[[], None] = lambda: None,
                 progress: Optional[Progress] = None, background: bool = False) -> StoreResult:
    """Compress, encrypt, hash and store everything ``source`` yields.

    ``finish_source`` is called after the source hits EOF and before storage commits the object:
    it must raise if the producer (pg_dump, ...) failed, so a truncated dump never becomes an object.
    ``background``: a small object stored beside a big one (globals beside the first database); its gpg
    runs at a lower CPU priority (see ``lower_priority``).
    """
    workers = threads if threads > 0 else (os.cpu_count() or 1)
    compressor = zstandard.ZstdCompressor(level=level, threads=workers if workers > 1 else 0)
    reader = _CountingSource(source, progress)

    def compress(stdin: BinaryIO) -> None:
        # Python only moves a reused buffer and counts bytes for the manifest and progress, once per
        # 1 MiB read; zstd compresses with the GIL released and writes to gpg's pipe unbuffered.
        sink = os.fdopen(stdin.fileno(), "wb", buffering=0, closefd=False)
        writer = compressor.stream_writer(sink, write_size=_SMALL_BLOCK, closefd=False)
        for block in reader.blocks():
            writer.write(block)
        writer.flush(zstandard.FLUSH_FRAME)

    digest = hashlib.sha256()

    def ciphertext(stream: EncryptedStream) -> Iterator[bytes]:
        for block in stream:
            digest.update(block)
            yield block
        finish_source()

    with EncryptedStream(gpg, compress, what=what, background=background, read_size=_SMALL_BLOCK) as stream:
        stored = storage.put_stream(key, ciphertext(stream), options)
    return StoreResult(size=int(stored), sha256=digest.hexdigest(), raw_size=reader.count,
                       version_id=getattr(stored, "version_id", None))


def lower_priority(pid: int) -> None:
    """Nice a helper process by 10, so that on a machine where the main dump keeps every core busy, the
    helper (gpg's passphrase key derivation, about 0.3 s of CPU in passphrase mode, and pg_dumpall) takes
    the gaps instead of slowing the main pipeline. It still finishes: nice only reorders CPU time."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, pid) + 10))
    except OSError:
        pass  # gone already, or not permitted: only an optimisation


def verify_stored(storage: Storage, key: str, size: int, sha256: str, *, what: str,
                  on_block: Optional[Callable[[bytes, int], None]] = None) -> None:
    """Re-hash a stored object; raise IntegrityError naming it on any difference. ``on_block(block,
    bytes so far)`` sees every block as it is read (e.g. to keep a copy: one read hashes and downloads)."""
    digest = hashlib.sha256()
    seen = 0
    for block in storage.iter_chunks(key, CHUNK):
        digest.update(block)
        seen += len(block)
        if on_block is not None:
            on_block(block, seen)
    if seen != size:
        raise IntegrityError(f"{what}: stored size {seen} bytes differs from the manifest's {size}")
    if digest.hexdigest() != sha256:
        raise IntegrityError(f"{what}: SHA-256 {digest.hexdigest()} differs from the manifest's {sha256}")


def iter_plaintext(storage: Storage, key: str, gpg: GnuPG, fingerprint: str, *, what: str,
                   expected_sha256: Optional[str] = None) -> Iterator[bytes]:
    """Yield the decrypted, decompressed content of a stored object.

    Decryption is authenticated (OpenPGP MDC) and, when ``expected_sha256`` is given, the stored
    bytes are re-hashed on the way: either failure raises after the last chunk, so a consumer must
    treat what it received as untrusted until this generator finishes without error.
    """
    dec = gpg.start_decrypt(fingerprint, what)
    digest = hashlib.sha256()

    def feed() -> None:
        try:
            for block in storage.iter_chunks(key, CHUNK):
                digest.update(block)
                enc_in = dec.stdin
                enc_in.write(block)
        finally:
            try:
                dec.stdin.close()
            except OSError:
                pass

    feeder = _Feeder(feed)
    feeder.start()
    finished = False
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(dec.stdout, read_size=CHUNK, read_across_frames=True)
        try:
            while True:
                block = reader.read(CHUNK)
                if not block:
                    break
                yield block
        except zstandard.ZstdError as exc:
            dec.kill()
            feeder.join()
            if isinstance(feeder.error, PgBackupError):
                raise feeder.error
            raise IntegrityError(f"{what}: decompression failed ({exc})") from None
        feeder.join()
        if feeder.error is not None and not isinstance(feeder.error, BrokenPipeError):
            raise feeder.error
        dec.finish(what)
        if expected_sha256 and digest.hexdigest() != expected_sha256:
            raise IntegrityError(f"{what}: SHA-256 {digest.hexdigest()} differs from the manifest's {expected_sha256}")
        finished = True
    finally:
        if not finished:
            dec.kill()
            feeder.join(timeout=30)


def copy_plaintext_to(chunks: Iterator[bytes], sink: BinaryIO) -> int:
    """Write every chunk to ``sink``; return the byte count. Closes the sink at the end."""
    total = 0
    try:
        for block in chunks:
            sink.write(block)
            total += len(block)
    finally:
        try:
            sink.close()
        except OSError:
            pass
    return total


def drain(chunks: Iterator[bytes]) -> int:
    return sum(len(block) for block in chunks)
