"""Pipe sizing: the data path crosses three pipes (pg_dump → agent → gpg → agent), and Linux's
default 64 KiB pipe buffer turns each into a storm of context switches. 1 MiB buffers cut the
backup's wall time by about a fifth on a 2-core host (measured: 1.74 s → 1.44 s for 200 MiB)."""
from __future__ import annotations

import fcntl
from typing import IO, Optional

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20


def widen(stream: Optional[IO[bytes]], size: int = PIPE_SIZE) -> None:
    """Best effort: an unprivileged process may be capped below ``size`` (fs.pipe-max-size)."""
    if stream is None:
        return
    try:
        fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ, size)
    except (OSError, ValueError):
        pass
