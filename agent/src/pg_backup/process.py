"""A child process on the data path: its stdin/stdout carry the data through widened pipes while its
stderr (and any status pipe) is drained aside by threads, so a chatty child never blocks on a full
stderr pipe and its last words are at hand for the error message.

Both ends that wrap a program this way use it: GnuPG (``crypto.GpgProcess``) and the PostgreSQL
client tools (``postgres.tools.ClientProcess``). How each judges its child's exit and which lines
it keeps stays with them.
"""
from __future__ import annotations

import os
import subprocess
import threading
from typing import IO, Callable, Dict, List, Optional, Sequence

from .pipes import widen


class ChildProcess:
    """``cmd`` started with stderr drained in a thread; kept lines go to :meth:`on_stderr`.

    By default the last ``stderr_limit`` non-empty lines are kept, decoded, in ``stderr_lines``.
    Raises OSError when ``cmd`` cannot be started (callers name the program in their own error)."""

    stderr_limit = 200

    def __init__(self, cmd: Sequence[str], *, stdin=None, stdout=None,  # type: ignore[no-untyped-def]
                 env: Optional[Dict[str, str]] = None, pass_fds: Sequence[int] = ()):
        self.cmd = list(cmd)
        self.name = os.path.basename(self.cmd[0])
        self.stderr_lines: List[str] = []
        self._threads: List[threading.Thread] = []
        self.proc = subprocess.Popen(self.cmd, env=env, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                     pass_fds=tuple(pass_fds))
        widen(self.proc.stdin)
        widen(self.proc.stdout)
        self.drain(self.proc.stderr, self.on_stderr)

    def drain(self, stream: Optional[IO[bytes]], on_line: Callable[[bytes], None]) -> None:
        """Read ``stream`` to its end in a daemon thread, handing each raw line to ``on_line``."""
        def run() -> None:
            assert stream is not None
            for raw in stream:
                on_line(raw)
            stream.close()

        thread = threading.Thread(target=run, daemon=True)
        self._threads.append(thread)
        thread.start()

    def on_stderr(self, raw: bytes) -> None:
        line = raw.decode(errors="replace").rstrip()
        if line:
            self.stderr_lines.append(line)
            del self.stderr_lines[:-self.stderr_limit]

    @property
    def stdin(self):  # type: ignore[no-untyped-def]
        return self.proc.stdin

    @property
    def stdout(self):  # type: ignore[no-untyped-def]
        return self.proc.stdout

    def wait(self, join_timeout: float = 30) -> int:
        """The exit code, once the drained streams are read to their end (or ``join_timeout`` passed)."""
        rc = self.proc.wait()
        for thread in self._threads:
            thread.join(timeout=join_timeout)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait(join_timeout=5)
