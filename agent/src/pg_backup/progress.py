"""Progress for humans: a live line on a terminal, one line per stage otherwise (cron, Ansible)."""
from __future__ import annotations

import sys
import time
from typing import Dict, Optional, TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class PhaseTimer:
    """Seconds spent per phase of a recovery or a deep verification (download, extract, WAL replay,
    ...), added up over repeated phases; reported as the result's ``phases``."""

    def __init__(self) -> None:
        self.phases: Dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = round(self.phases.get(name, 0.0) + max(seconds, 0.0), 3)


class Progress:
    def __init__(self, stream: TextIO = sys.stderr, *, quiet: bool = False, live: Optional[bool] = None):
        self.stream = stream
        self.quiet = quiet
        self.live = stream.isatty() if live is None else live
        self._stage = ""
        self._t0 = time.monotonic()
        self._last = 0.0
        self._dirty = False

    def stage(self, text: str) -> None:
        """Start a new stage: always one line of its own."""
        if self.quiet:
            return
        self._end_live()
        self._stage = text
        self._t0 = time.monotonic()
        self.stream.write(f"pg-backup: {text}\n")
        self.stream.flush()

    def bytes(self, stage: str, done: int) -> None:
        """Called often; redraws at most 5 times a second, and only on a terminal."""
        if self.quiet or not self.live:
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        rate = done / max(now - self._t0, 1e-6)
        self.stream.write(f"\r  {self._stage}: {human_bytes(done)} at {human_bytes(rate)}/s   ")
        self.stream.flush()
        self._dirty = True

    def note(self, text: str) -> None:
        if self.quiet:
            return
        self._end_live()
        self.stream.write(f"pg-backup: {text}\n")
        self.stream.flush()

    def warn(self, text: str) -> None:
        self._end_live()
        self.stream.write(f"pg-backup: warning: {text}\n")
        self.stream.flush()

    def _end_live(self) -> None:
        if self._dirty:
            self.stream.write("\n")
            self._dirty = False
