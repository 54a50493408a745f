"""One WAL file, compressed and encrypted in one read: the ciphertext to store and the SHA-256 of the
plaintext (the archive recognises duplicates by it, since ciphertext is not deterministic).

A segment is small and must be complete before it is stored (its size and hash go into the
object's metadata), so the ciphertext is held -- in memory up to ``SPILL_OVER`` bytes, beyond that in
a private spill file -- instead of being streamed to storage as backups are.
"""
from __future__ import annotations

import os
from typing import Any, BinaryIO, Callable, Iterator, List, Optional, Tuple

from ..files import unlink_quietly
from .spool import read_blocks

SPILL_OVER = 1 << 20           # ciphertext beyond this goes to a spill file in the spool (bounded memory)


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

    def chunks(self) -> Iterator[bytes]:
        if self.spill is None:
            return iter(self._blocks)
        return read_blocks(self.spill)

    def close(self) -> None:
        self._blocks = []
        if self.spill is not None:
            unlink_quietly(self.spill)
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
            unlink_quietly(spill)
        raise
    if fd >= 0:
        os.close(fd)
    return EncodedFile(digest.hexdigest(), count, blocks, spill)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _encrypt_into(path: str, gpg: Any, level: int, what: str, digest: Any, sink: Callable[[bytes], None]) -> int:
    """Read ``path``, hash it, compress it into gpg (the pipeline's feeder) and hand the ciphertext
    to ``sink``; returns the plaintext size."""
    import zstandard

    from ..pipeline import EncryptedStream

    count = 0

    def compress(stdin: BinaryIO) -> None:
        nonlocal count
        # A frame checksum too: stock `zstd -d` then notices damage (the disaster recipe).
        cobj = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj(size=os.path.getsize(path))
        for block in read_blocks(path):
            digest.update(block)
            count += len(block)
            stdin.write(cobj.compress(block))
        stdin.write(cobj.flush())

    with EncryptedStream(gpg, compress, what=what) as ciphertext:
        for block in ciphertext:
            sink(block)
    return count
