"""A backup's objects on the way into a data directory: checked, then decrypted and extracted.

Every object's SHA-256 is checked (by :func:`pg_backup.pipeline.verify_stored`) before anything is
decrypted, and the objects of every backup a restore needs (one full backup, or each member of an
incremental chain) are checked before any of them is extracted. Objects the storage keeps as local
files are hashed in place; others (S3) are written into a private download directory while they are
hashed (one download, ciphertext only), and extracted from there. Checking and extracting run in
parallel, a few objects at a time (``physical.restore_workers``: :func:`restore_workers`).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

from ..context import Context
from ..errors import IntegrityError
from ..manifest import Manifest, StoredObject
from ..pipeline import iter_plaintext, verify_stored
from ..pipes import widen
from ..progress import PhaseTimer, Progress, human_bytes
from ..storage.base import Storage
from ..storage.local import LocalStorage
from ..physical.layout import archive_parts
from ..tarstream import Resume
from .durable import Writeback
from .untar import Deferred, TarWriter

#: Objects that are archives of the server's base backup stream (extracted in this process: untar.py).
SERVER_ARCHIVE_ROLES = ("base", "tablespace")

#: The automatic ``physical.restore_workers`` (0): two per CPU within these bounds. Each extraction is
#: a gpg, a zstd stream and a tar that also wait on reads and writes, so two per CPU keep the CPUs busy
#: (4 on the 2-CPU machines the benchmarks run on, the former constant); more than 8 at once mostly adds
#: memory and contention on the target disk.
AUTO_WORKERS_MIN, AUTO_WORKERS_MAX = 2, 8

T = TypeVar("T")


def restore_workers(settings: object) -> int:
    """``physical.restore_workers``, or (0) two per CPU within AUTO_WORKERS_MIN..AUTO_WORKERS_MAX."""
    configured = getattr(getattr(settings, "physical", None), "restore_workers", 0) or 0
    if configured > 0:
        return configured
    return max(AUTO_WORKERS_MIN, min(AUTO_WORKERS_MAX, 2 * (os.cpu_count() or 1)))


def run_parallel(jobs: Sequence[Callable[[], T]], workers: int = AUTO_WORKERS_MIN) -> List[T]:
    """Run ``jobs`` on up to ``workers`` threads; results in job order. On the first failure the jobs
    not started yet are cancelled, the running ones end, and that first failure is raised: no thread
    outlives the call."""
    if len(jobs) <= 1 or workers <= 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs)), thread_name_prefix="pgb-restore") as pool:
        futures = [pool.submit(job) for job in jobs]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            for f in futures:
                f.cancel()
    if failed:
        raise failed[0].exception()  # type: ignore[misc]
    return [f.result() for f in futures]


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


@dataclass
class Checked:
    """Where each checked object can be read from: {(backup id, object name): (storage, key)}."""

    where: Dict[Tuple[str, str], Tuple[Storage, str]]

    def source(self, manifest: Manifest, name: str) -> Tuple[Storage, str]:
        return self.where[(manifest.backup_id, name)]


def _check_one(ctx: Context, manifest: Manifest, name: str, key: str, spool: Optional[str],
               progress: Progress) -> Tuple[Storage, str]:
    obj = manifest.object_named(name)
    what = f"{manifest.backup_id}/{name}"
    progress.stage(f"{'checking' if spool is None else 'downloading and checking'} {what} ({human_bytes(obj.size)})")
    if spool is None:
        verify_stored(ctx.storage, key, obj.size, obj.sha256, what=what, on_block=_keeper(-1, progress))
        return ctx.storage, key
    local = f"{manifest.backup_id}/{name}"
    os.makedirs(os.path.join(spool, manifest.backup_id), mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(spool, local), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        verify_stored(ctx.storage, key, obj.size, obj.sha256, what=what, on_block=_keeper(fd, progress))
    finally:
        os.close(fd)
    return LocalStorage(spool), local


@contextlib.contextmanager
def checked_objects(ctx: Context, wanted: Sequence[Tuple[Manifest, str]], spool_parent: str, spool_prefix: str,
                    timer: PhaseTimer, progress: Progress) -> Iterator[Checked]:
    """Check every (manifest, object name) of ``wanted`` in parallel (the ``download`` phase), then
    yield where to extract each from. Objects that are not local files are downloaded into a private
    directory created in ``spool_parent``, removed when the block ends. Any mismatch raises
    IntegrityError (exit 4) before the block is entered: nothing has been decrypted or extracted."""
    keys = [(m, n, ctx.repo.object_key(m.backup_id, n)) for m, n in wanted]
    spool = None
    if any(ctx.storage.local_path(k) is None for _, _, k in keys):
        spool = tempfile.mkdtemp(prefix=spool_prefix, dir=spool_parent)
    try:
        t0 = time.monotonic()
        ctx.storage.make_readable([k for _, _, k in keys],
                                  progress=lambda d, t, m: progress.note(f"archived objects: {d}/{t} readable ({m})"))
        found = run_parallel([lambda m=m, n=n, k=k: _check_one(ctx, m, n, k, spool, progress)  # type: ignore[misc]
                              for m, n, k in keys], restore_workers(ctx.settings))
        timer.add("download", time.monotonic() - t0)
        yield Checked({(m.backup_id, n): where for (m, n, _), where in zip(keys, found)})
    finally:
        if spool:
            shutil.rmtree(spool, ignore_errors=True)


@dataclass
class Extraction:
    """One object to decrypt, decompress and untar into ``dest``: an archive of the base backup stream
    or a part of one (``resume``: where in a file the part starts; ``last``: its archive's last part),
    extracted in this process (untar.py), or another tar (config.tar), extracted by GNU tar."""

    manifest: Manifest
    name: str
    dest: str
    resume: Optional[Resume] = None
    last: bool = True

    @property
    def server_archive(self) -> bool:
        return self.manifest.object_named(self.name).role in SERVER_ARCHIVE_ROLES


def archive_extractions(manifest: Manifest, first: str, dest: str) -> List[Extraction]:
    """The extractions of archive ``first`` (base.tar or a tablespace's) into ``dest``: one per part."""
    return [Extraction(manifest, p.name, dest, p.resume, p.last) for p in archive_parts(manifest, first)]


def archive_objects(manifest: Manifest, first: str) -> List[str]:
    """The object names of archive ``first``, in order (every part of it)."""
    return [p.name for p in archive_parts(manifest, first)]


def extract_all(ctx: Context, checked: Checked, jobs: Sequence[Extraction], timer: PhaseTimer,
                progress: Progress, *, writeback: bool = True) -> int:
    """Extract every archive of ``jobs`` in parallel; returns the bytes extracted. The phases
    (``decrypt_decompress``, ``extract``) are each job's share, scaled so they add up to the wall
    time of the whole step. ``writeback``: write the extracted files back to disk meanwhile (durable.py);
    False for scratch copies that are read once and removed."""
    t0 = time.monotonic()
    timers = [PhaseTimer() for _ in jobs]
    deferred = Deferred()

    def job(i: int) -> int:
        j = jobs[i]
        storage, key = checked.source(j.manifest, j.name)
        if j.server_archive:
            writer = TarWriter(j.dest, f"{j.manifest.backup_id}/{j.name}", deferred, resume=j.resume, last=j.last)
            return extract_archive(ctx, storage, key, j.manifest, j.name, j.dest, timers[i], progress, writer)
        return extract_archive(ctx, storage, key, j.manifest, j.name, j.dest, timers[i], progress)

    # The largest first: with more parts than workers, the long ones must not be left for the end.
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i].manifest.object_named(jobs[i].name).raw_size)
    with Writeback(sorted({j.dest for j in jobs}) if writeback else []):   # overlaps extraction (durable.py)
        total = sum(run_parallel([lambda i=i: job(i) for i in order],  # type: ignore[misc]
                                 restore_workers(ctx.settings)))
        deferred.apply()
    wall = time.monotonic() - t0
    spent = sum(sum(t.phases.values()) for t in timers)
    scale = wall / spent if spent > 0 else 0.0
    for t in timers:
        for phase, seconds in t.phases.items():
            timer.add(phase, seconds * scale)
    return total


def extract_archive(ctx: Context, storage: Storage, key: str, manifest: Manifest, name: str, dest: str,
                    timer: PhaseTimer, progress: Progress, writer: Optional[TarWriter] = None) -> int:
    """Decrypt, decompress and untar one object into ``dest``: by ``writer`` in this process (an
    archive of the server's stream, or a part of one), else by GNU tar reading a pipe. No plaintext
    file besides the extracted data itself."""
    obj = manifest.object_named(name)
    what = f"{manifest.backup_id}/{name}"
    progress.stage(f"extracting {what} into {dest}")
    progress.expect(obj.raw_size)
    if writer is not None:
        return _extract_here(ctx, storage, key, manifest, obj, what, writer, timer, progress)
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


def _extract_here(ctx: Context, storage: Storage, key: str, manifest: Manifest, obj: StoredObject, what: str,
                  writer: TarWriter, timer: PhaseTimer, progress: Progress) -> int:
    t0 = time.monotonic()
    written = 0.0
    total = 0
    try:
        for block in iter_plaintext(storage, key, ctx.gpg, manifest.encryption.fingerprint, what=what,
                                    expected_sha256=obj.sha256):
            w0 = time.monotonic()
            writer.write(block)
            written += time.monotonic() - w0
            total += len(block)
            progress.bytes("extract", total)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    if total != obj.raw_size:
        raise IntegrityError(f"{what}: decompressed to {total} bytes, the manifest says {obj.raw_size}")
    timer.add("decrypt_decompress", time.monotonic() - t0 - written)
    timer.add("extract", written)
    return total
