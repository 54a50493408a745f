"""A base backup's objects on the way into a data directory: checked, then decrypted and extracted.

Every object's SHA-256 is checked (by :func:`pg_backup.pipeline.verify_stored`) before anything is
decrypted. Objects the storage keeps as local files are hashed in place; others (S3) are written into
a private download directory beside the data directory while they are hashed (one download,
ciphertext only), and extracted from there.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Tuple

from ..context import Context
from ..errors import IntegrityError
from ..manifest import Manifest
from ..pipeline import iter_plaintext, verify_stored
from ..pipes import widen
from ..progress import PhaseTimer, Progress, human_bytes
from ..storage.base import Storage
from ..storage.local import LocalStorage


def _keeper(fd: int, progress: Progress):  # type: ignore[no-untyped-def]
    """What :func:`verify_stored` does with each block besides hashing it: write it to ``fd`` (the
    download directory's copy; -1 for none) and count it for progress."""
    def keep(block: bytes, seen: int) -> None:
        if fd >= 0:
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view):]
        progress.bytes("download", seen)
    return keep


def _check_objects(ctx: Context, manifest: Manifest, keys: Dict[str, str], spool: Optional[str],
                   progress: Progress) -> Tuple[Storage, Dict[str, str]]:
    ctx.storage.make_readable(list(keys.values()),
                              progress=lambda d, t, m: progress.note(f"archived objects: {d}/{t} readable ({m})"))
    for name, key in keys.items():
        obj = manifest.object_named(name)
        what = f"{manifest.backup_id}/{name}"
        progress.stage(f"{'checking' if spool is None else 'downloading and checking'} {what} ({human_bytes(obj.size)})")
        fd = -1 if spool is None else os.open(os.path.join(spool, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            verify_stored(ctx.storage, key, obj.size, obj.sha256, what=what, on_block=_keeper(fd, progress))
        finally:
            if fd >= 0:
                os.close(fd)
    if spool is None:
        return ctx.storage, keys
    return LocalStorage(spool), {n: n for n in keys}


@contextlib.contextmanager
def checked_objects(ctx: Context, manifest: Manifest, names: List[str], data_dir: str, timer: PhaseTimer,
                    progress: Progress) -> Iterator[Tuple[Storage, Dict[str, str]]]:
    """Check the named objects of ``manifest`` (the ``download`` phase), then yield (storage, {object
    name: key}) to extract them from. A download directory is removed when the block ends."""
    keys = {n: ctx.repo.object_key(manifest.backup_id, n) for n in names}
    spool = None
    if any(ctx.storage.local_path(k) is None for k in keys.values()):
        spool = tempfile.mkdtemp(prefix=f".{os.path.basename(data_dir)}.pgb-download-", dir=os.path.dirname(data_dir))
    try:
        t0 = time.monotonic()
        checked = _check_objects(ctx, manifest, keys, spool, progress)
        timer.add("download", time.monotonic() - t0)
        yield checked
    finally:
        if spool:
            shutil.rmtree(spool, ignore_errors=True)


def extract_archive(ctx: Context, storage: Storage, key: str, manifest: Manifest, name: str, dest: str,
                    timer: PhaseTimer, progress: Progress) -> int:
    """Decrypt, decompress and untar one archive into ``dest`` (GNU tar reading a pipe: no
    plaintext file besides the extracted data itself)."""
    obj = manifest.object_named(name)
    what = f"{manifest.backup_id}/{name}"
    progress.stage(f"extracting {what} into {dest}")
    tar = shutil.which("tar") or "/bin/tar"
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen([tar, "-x", "-f", "-", "-C", dest, "--no-same-owner", "--no-same-permissions"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
    widen(proc.stdin)
    t0 = time.monotonic()
    blocked = 0.0
    total = 0

    def tar_error() -> str:
        errors.seek(0)
        return errors.read().decode(errors="replace").strip()[-300:] or f"exit code {proc.returncode}"

    try:
        assert proc.stdin is not None
        for block in iter_plaintext(storage, key, ctx.gpg, manifest.encryption.fingerprint, what=what,
                                    expected_sha256=obj.sha256):
            w0 = time.monotonic()
            proc.stdin.write(block)
            blocked += time.monotonic() - w0
            total += len(block)
            progress.bytes("extract", total)
        w0 = time.monotonic()
        proc.stdin.close()
        proc.wait()
        blocked += time.monotonic() - w0
    except BrokenPipeError:
        proc.wait()
        raise IntegrityError(f"{what}: tar stopped reading: {tar_error()}") from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if proc.returncode is not None and proc.returncode != 0:
            message = tar_error()
            errors.close()
            raise IntegrityError(f"{what}: tar failed to extract it: {message}")
        errors.close()
    if total != obj.raw_size:
        raise IntegrityError(f"{what}: decompressed to {total} bytes, the manifest says {obj.raw_size}")
    elapsed = time.monotonic() - t0
    timer.add("decrypt_decompress", elapsed - blocked)
    timer.add("extract", blocked)
    return total
