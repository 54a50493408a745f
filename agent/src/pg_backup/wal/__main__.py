"""Entry of the detached resident processes, started by :func:`pg_backup.wal.workers.start_worker` when
it cannot fork (and by the fast path): ``python -m pg_backup.wal _upload CONFIG PG_WAL | _prefetch CONFIG``."""
from __future__ import annotations

import sys
from typing import List

USAGE = "usage: python -m pg_backup.wal _upload CONFIG PG_WAL | _prefetch CONFIG\n"


def worker_main(argv: List[str]) -> int:
    from .. import config as config_mod
    from ..errors import PgBackupError
    from ..manifest import utcnow
    from .fetch import run_prefetcher
    from .push import run_uploader
    from .workers import log_line, run_in_worker

    if len(argv) < 2 or argv[0] not in ("_upload", "_prefetch") or (argv[0] == "_upload" and len(argv) < 3):
        sys.stderr.write(USAGE)
        return 2
    if argv[0] == "_upload":
        loop, args = run_uploader, argv[2:3]
    else:
        loop, args = run_prefetcher, []
    try:
        run_in_worker(loop, config_mod.load(argv[1]), utcnow, *args,
                      duty="writer" if argv[0] == "_upload" else "restorer")
    except PgBackupError as exc:
        log_line(f"{argv[0]} stopped: {exc}")
        return exc.exit_code
    return 0


if __name__ == "__main__":  # pragma: no cover - the resident processes
    raise SystemExit(worker_main(sys.argv[1:]))
