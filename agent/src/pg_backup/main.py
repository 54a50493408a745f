"""The ``pg-backup`` console script (and ``python -m pg_backup``).

PostgreSQL runs it once per WAL file, so the common wal-push/wal-fetch answers come from the fast
path (:mod:`pg_backup.wal.fast`) before the CLI -- argparse, YAML, the configuration schema, storage
and crypto modules: about 100 ms of imports -- is loaded at all. Standard library only until then.
"""
from __future__ import annotations

import os
import sys
from typing import Any, List, Optional


#: errors.EXIT_INTERRUPTED (kept literal: this module imports nothing of the agent before it must).
INTERRUPTED = 130


def _exit_on_signal(signum: int, _frame: Any) -> None:
    os._exit(5)


#: Commands that leave with ``os._exit`` once they succeeded (see console_main).
LEAVE_AT_ONCE = frozenset({"backup"})


def _command(argv: List[str]) -> str:
    """The command word of ``argv``: the first word after the global options (of which only
    ``--config``/``-c`` take a separate value)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--config", "-c"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return ""


def console_main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "wal-push" in argv or "wal-fetch" in argv:
        import signal

        from .wal.fast import fast_main

        # Nothing on the fast path writes anything that could be left half done: a signal just ends
        # the call, with an exit code PostgreSQL treats as an ordinary failure (never >= 128). The
        # full path installs its own handlers.
        previous = {sig: signal.signal(sig, _exit_on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        fast = fast_main(argv)
        if fast is not None:
            return fast
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    from .cli import main

    code = main(argv)
    if code == INTERRUPTED or (code == 0 and _command(argv) in LEAVE_AT_ONCE):
        # Interrupted: the run has cleaned up and said so, nothing was committed. Interpreter shutdown
        # would now garbage-collect the abandoned zstd compressor, which waits for its worker jobs: at
        # level 19 up to a minute, and systemd kills a unit that takes 90 s to stop. Leave at once.
        # A successful backup has closed and synced what it wrote and joined its threads: shutdown
        # (module teardown) would only add 40-60 ms to a 0.5 s incremental backup.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
