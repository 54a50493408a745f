"""``wal-push`` (archive_command), ``wal-fetch`` (restore_command) and ``wal-check``, on the full path.

PostgreSQL's common calls are answered by the fast path (:mod:`pg_backup.wal.fast`) before the CLI
is loaded; these functions handle the rest. Their exit codes stay below 128 (:func:`run_wal_command`).
"""
from __future__ import annotations

from typing import Callable, Optional, TypeVar

from ..context import Context
from ..errors import Interrupted, StorageError
from . import CommandResult

T = TypeVar("T")

PUSH_VERBS = {"stored": "stored", "already-stored": "already stored",
              "identical-already-archived": "already archived with identical content"}


def run_wal_command(fn: Callable[[], T]) -> T:
    """Run wal-push/wal-fetch; a signal ends it with exit 5 (< 128) instead of 130: PostgreSQL treats
    a restore_command exit above 125 as fatal to recovery, and an archive_command one as a crash."""
    try:
        return fn()
    except (Interrupted, KeyboardInterrupt) as exc:
        text = str(exc) if isinstance(exc, Interrupted) else "interrupted"
        raise StorageError(f"{text.split(';')[0]}; nothing was acknowledged",
                           hint="PostgreSQL retries the file") from None


def wal_push(ctx: Context, *, path: str, config_path: Optional[str]) -> CommandResult:
    from ..wal.push import wal_push as push

    report = run_wal_command(lambda: push(ctx, path, config_path=config_path))
    lines = []
    if not ctx.progress.quiet:
        extra = f" (+{len(report.ahead)} ahead)" if report.ahead else ""
        lines = [f"{report.pushed.name}: {PUSH_VERBS[report.pushed.outcome]}{extra} in {report.seconds:.2f} s"]
    return CommandResult(report.as_dict(), lines)


def wal_fetch(ctx: Context, *, name: str, dest: str, config_path: Optional[str]) -> CommandResult:
    from ..wal.fetch import wal_fetch as fetch

    report = run_wal_command(lambda: fetch(ctx, name, dest, config_path=config_path))
    lines = [] if ctx.progress.quiet else [f"{name}: restored from the {report.source} in {report.seconds:.2f} s"]
    return CommandResult(report.as_dict(), lines)


def wal_check(ctx: Context, *, timeout: float) -> CommandResult:
    from ..wal.check import run_wal_check

    report = run_wal_check(ctx, timeout=timeout)
    return CommandResult(report.as_dict(), [f"archiving works: {report.segment} reached {ctx.repo.location} in "
                                            f"{report.seconds:.1f} s"])
