"""Starting the resident WAL processes: the uploader (:func:`pg_backup.wal.push.run_uploader`) and the
prefetcher (:func:`pg_backup.wal.fetch.run_prefetcher`).

A worker is forked from the wal-push/wal-fetch process when it runs no other thread (it starts at
once, with every module already imported), otherwise started as ``python -m pg_backup.wal`` (see
:mod:`pg_backup.wal.__main__`). Either way it is detached -- its own session, stdio to the spool's
``worker.log`` -- so PostgreSQL's archiver or startup process never waits for it.

Standard library only at import: the fast path starts a prefetcher with :func:`spawn`.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, List, Optional

from .spool import Spool, is_locked

#: What a resident process runs: ``loop(ctx, *args)`` with a Context of its own.
Loop = Callable[..., Any]


def worker_command(kind: str, config_path: str, *extra: str) -> List[str]:
    return [sys.executable, "-m", "pg_backup.wal", kind, config_path, *extra]


def spawn(argv: List[str], log: str) -> None:
    import subprocess

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
                         close_fds=True, cwd="/")
    finally:
        os.close(fd)


def start_worker(ctx: Any, spool: Spool, kind: str, lock_path: str, config_path: Optional[str], *args: str,
                 loop: Loop) -> bool:
    """Start a resident worker (``_upload`` or ``_prefetch``, running ``loop``) unless one holds
    ``lock_path``. Forked when this process runs no other thread; otherwise a fresh
    ``python -m pg_backup.wal`` (needs the config path)."""
    import threading

    if is_locked(lock_path):
        return False
    log = rotate_worker_log(spool)
    if threading.active_count() > 1:
        if not config_path:
            return False
        spawn(worker_command(kind, os.path.abspath(config_path), *args), log)
        return True
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)           # the intermediate child exits at once
        return True
    try:                             # pragma: no cover - runs in the detached worker
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(null)
        os.close(out)
        run_in_worker(loop, ctx.settings, ctx.clock, *args, duty=ctx.duty)
    except BaseException as exc:  # noqa: BLE001
        try:
            log_line(f"{kind} failed: {exc.__class__.__name__}: {exc}")
        except Exception:  # noqa: BLE001
            pass
    finally:
        os._exit(0)


def rotate_worker_log(spool: Spool) -> str:
    log = spool.worker_log_path
    try:
        if os.path.getsize(log) > (4 << 20):
            os.replace(log, log + ".1")
    except OSError:
        pass
    return log


def run_in_worker(loop: Loop, settings: Any, clock: Any, *args: str, duty: Optional[str] = None) -> None:
    """Run ``loop`` with a quiet Context of its own (closed after), with ``duty``'s S3 credentials."""
    from ..context import Context
    from ..progress import Progress

    ctx = Context(settings, Progress(quiet=True), clock=clock, duty=duty)
    try:
        loop(ctx, *args)
    finally:
        ctx.close()


def log_line(message: str) -> None:
    """One line in the worker log (the resident processes' stderr)."""
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} [{os.getpid()}] {message}\n")
    sys.stderr.flush()
