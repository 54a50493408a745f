"""Progress for humans: a live line on a terminal, one line per stage otherwise (cron, Ansible)."""
from __future__ import annotations

import sys
import time
from typing import Callable, Dict, Optional, TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_line(stage: str, done: int, elapsed: float, total: Optional[int] = None, estimate: str = "") -> str:
    """One progress report: bytes so far and the rate; with an expected ``total`` also the percentage
    and the time left at the rate so far. ``total`` is an estimate (``estimate`` says of what), so
    the percentage stops at 99 until the stage ends, and a stage that outgrows it says so."""
    rate = done / max(elapsed, 1e-6)
    text = f"{stage}: {human_bytes(done)} at {human_bytes(rate)}/s"
    if not total or total <= 0:
        return text
    of = f"~{human_bytes(total)}" + (f" ({estimate})" if estimate else "")
    if done >= total:
        return f"{text}, more than the estimated {of}"
    pct = min(99, int(done * 100 / total))
    eta = human_duration((total - done) / rate) if done > 0 and elapsed >= 1 else "unknown"
    return f"{stage}: {human_bytes(done)} of {of}, {pct}%, {human_bytes(rate)}/s, ETA {eta}"


class PhaseTimer:
    """Seconds spent per phase of a recovery or a deep verification (download, extract, WAL replay,
    ...), added up over repeated phases; reported as the result's ``phases``."""

    def __init__(self) -> None:
        self.phases: Dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = round(self.phases.get(name, 0.0) + max(seconds, 0.0), 3)


class Progress:
    #: Without a terminal (cron, Ansible, a log): a progress line at most this often, once the stage's
    #: size is known (:meth:`expect`).
    LINE_INTERVAL = 30.0

    def __init__(self, stream: TextIO = sys.stderr, *, quiet: bool = False, live: Optional[bool] = None):
        self.stream = stream
        self.quiet = quiet
        self.live = stream.isatty() if live is None else live
        self._stage = ""
        self._t0 = time.monotonic()
        self._last = 0.0
        self._dirty = False
        self._total: Optional[int] = None
        self._estimate = ""

    def stage(self, text: str) -> None:
        """Start a new stage: always one line of its own."""
        if self.quiet:
            return
        self._end_live()
        self._stage = text
        self._t0 = self._last = time.monotonic()
        self._total, self._estimate = None, ""
        self.stream.write(f"pg-backup: {text}\n")
        self.stream.flush()

    def expect(self, total: Optional[int], estimate: str = "") -> None:
        """The current stage's expected size in bytes (an estimate: ``estimate`` says of what), for a
        percentage and an ETA; None or 0 when unknown."""
        self._total = total if total and total > 0 else None
        self._estimate = estimate

    def bytes(self, stage: str, done: int) -> None:
        """Called often. On a terminal: redraws at most 5 times a second. Otherwise: a line every
        LINE_INTERVAL seconds once the stage's size is known (a percentage is worth a log line)."""
        if self.quiet or (not self.live and self._total is None):
            return
        now = time.monotonic()
        if now - self._last < (0.2 if self.live else self.LINE_INTERVAL):
            return
        self._last = now
        line = progress_line(self._stage, done, now - self._t0, self._total, self._estimate)
        if self.live:
            self.stream.write(f"\r  {line}   ")
            self._dirty = True
        else:
            self.stream.write(f"pg-backup:   {line}\n")
        self.stream.flush()

    def waiting(self, what: str, hint: str = "", interval: float = LINE_INTERVAL) -> Callable[[float], None]:
        """A callback for a long wait without bytes to count (a spread checkpoint): called with the
        seconds waited so far, as often as the caller likes, it says "still waiting for <what>" once
        every ``interval`` seconds."""
        due = [interval]

        def tick(waited: float) -> None:
            if waited >= due[0]:
                due[0] = (int(waited // interval) + 1) * interval
                self.note(f"still waiting for {what}: {human_duration(waited)} so far" + (f" ({hint})" if hint else ""))
        return tick

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
