"""WAL file names and positions: the one place that knows how PostgreSQL names WAL files, how an
LSN is written, how positions map to segments, and what a WAL file's object is called in the archive.

Standard library only and no dataclasses (whose import costs milliseconds): the fast path of
``wal-push``/``wal-fetch`` uses this module.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple, Optional, Tuple

DEFAULT_SEGMENT_SIZE = 16 << 20
SUFFIX = ".zst.gpg"                 # every WAL object: zstd, then OpenPGP
KINDS = ("segment", "partial", "backup", "history")
LONG_PAGE_HEADER = 40    # SizeOfXLogLongPHD: the first page of a WAL segment
SHORT_PAGE_HEADER = 24   # SizeOfXLogShortPHD: every other WAL page

_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_PARTIAL_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$")
_BACKUP_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.([0-9A-F]{8})\.backup$")
_HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


class WalNameError(ValueError):
    """Not a WAL file name PostgreSQL would archive."""


class WalName(NamedTuple):
    """A parsed WAL file name. ``log``/``seg`` are the two halves of a segment name (None for history)."""

    name: str
    timeline: int
    kind: str
    log: Optional[int] = None
    seg: Optional[int] = None
    offset: Optional[int] = None     # .backup: the start offset within the segment

    def segno(self, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Optional[int]:
        if self.log is None or self.seg is None:
            return None
        return self.log * segments_per_xlogid(segment_size) + self.seg

    @property
    def segment(self) -> Optional[str]:
        """The 24-character segment name this file belongs to (None for history files)."""
        return self.name[:24] if self.log is not None else None


# -- names -----------------------------------------------------------------------------------------

def check_segment_size(segment_size: int) -> int:
    if segment_size < (1 << 20) or segment_size > (1 << 30) or segment_size & (segment_size - 1):
        raise ValueError(f"WAL segment size {segment_size} is not a power of two between 1 MiB and 1 GiB")
    return segment_size


def segments_per_xlogid(segment_size: int) -> int:
    return 0x100000000 // check_segment_size(segment_size)


def parse_wal_name(name: str) -> WalName:
    """Parse a file name PostgreSQL archives; raise WalNameError for anything else."""
    m = _SEGMENT_RE.match(name)
    if m:
        return WalName(name, int(m.group(1), 16), "segment", int(m.group(2), 16), int(m.group(3), 16))
    m = _PARTIAL_RE.match(name)
    if m:
        return WalName(name, int(m.group(1), 16), "partial", int(m.group(2), 16), int(m.group(3), 16))
    m = _BACKUP_RE.match(name)
    if m:
        return WalName(name, int(m.group(1), 16), "backup", int(m.group(2), 16), int(m.group(3), 16),
                       int(m.group(4), 16))
    m = _HISTORY_RE.match(name)
    if m:
        return WalName(name, int(m.group(1), 16), "history")
    raise WalNameError(f"{name!r} is not a WAL file name (a 24-hex-digit segment, .partial, .backup or "
                       f"<timeline>.history)")


def is_wal_name(name: str) -> bool:
    try:
        parse_wal_name(name)
    except WalNameError:
        return False
    return True


def is_segment_name(name: str) -> bool:
    """A complete segment's name (24 hex digits), not a .partial, .backup or .history file."""
    return _SEGMENT_RE.match(name) is not None


def segment_name(tli: int, segno: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per = segments_per_xlogid(segment_size)
    return f"{tli:08X}{segno // per:08X}{segno % per:08X}"


def next_segment(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    w = parse_wal_name(name)
    if w.kind != "segment":
        raise WalNameError(f"{name!r} is not a segment name")
    return segment_name(w.timeline, (w.segno(segment_size) or 0) + 1, segment_size)


def history_file_name(tli: int) -> str:
    return f"{tli:08X}.history"


def sort_key(w: WalName) -> Tuple[int, int, int, int, str]:
    """PostgreSQL's archiving order: history files first, then by timeline and position."""
    if w.kind == "history":
        return (0, w.timeline, 0, 0, w.name)
    return (1, w.log or 0, w.seg or 0, w.timeline, w.name)


# -- objects in the archive ------------------------------------------------------------------------

def object_name(name: str) -> str:
    """The object of WAL file ``name`` relative to the archive's prefix: ``<timeline>/<name>.zst.gpg``
    (the timeline is the name's first 8 hex digits). Raises WalNameError for anything else."""
    w = parse_wal_name(name)
    return f"{w.timeline:08X}/{name}{SUFFIX}"


def name_of_object(relative: str) -> Optional[str]:
    """The WAL file name of an object named by :func:`object_name`, or None for any other object."""
    if not relative.endswith(SUFFIX):
        return None
    tli_dir, _, name = relative[:-len(SUFFIX)].partition("/")
    if "/" in name:
        return None
    try:
        w = parse_wal_name(name)
    except WalNameError:
        return None
    return name if tli_dir == f"{w.timeline:08X}" else None


# -- positions (LSNs) ------------------------------------------------------------------------------

def parse_lsn(lsn: str) -> int:
    m = _LSN_RE.match(lsn.strip())
    if not m:
        raise ValueError(f"{lsn!r} is not a WAL location like 0/3000060")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def parse_lsn_arg(text: Any) -> int:
    """:func:`parse_lsn` for a location given by the user (a recovery target) or read back from the
    server: a usage error that says how to write one."""
    try:
        return parse_lsn(str(text))
    except ValueError:
        from ..errors import UsageError

        raise UsageError(f"{text!r} is not a WAL location (LSN); write it like 0/3000060") from None


def format_lsn(pos: int) -> str:
    return f"{pos >> 32:X}/{pos & 0xFFFFFFFF:X}"


def lsn_to_segment(lsn: str, tli: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """The segment holding byte position ``lsn`` on timeline ``tli`` (like pg_walfile_name)."""
    return segment_name(tli, parse_lsn(lsn) // check_segment_size(segment_size), segment_size)


def segment_end(name: str, segment_size: int) -> int:
    """Byte position just past the end of WAL segment ``name`` (TTTTTTTTXXXXXXXXYYYYYYYY)."""
    log, seg = int(name[8:16], 16), int(name[16:24], 16)
    per_log = 0x100000000 // segment_size
    return (log * per_log + seg + 1) * segment_size


def wal_range(start_lsn: int, start_timeline: int, stop_lsn: int, stop_timeline: int,
              segment_size: int) -> Tuple[str, str]:
    """The first and last WAL file a base backup needs: the segment of its start (redo) point and
    the segment holding the last byte before its stop point (the server's XLByteToPrevSeg)."""
    first = segment_name(start_timeline, start_lsn // segment_size, segment_size)
    last = segment_name(stop_timeline, max(stop_lsn - 1, start_lsn) // segment_size, segment_size)
    return first, last


def record_end(insert_lsn: str, block_size: int, segment_size: int) -> str:
    """The end of the last WAL record from ``pg_current_wal_insert_lsn()``, which points past the page
    header when the insert position is at a page start (after a WAL switch, say); replay positions
    on a restored server never include that header."""
    pos = parse_lsn(insert_lsn)
    if pos % segment_size == LONG_PAGE_HEADER:
        pos -= LONG_PAGE_HEADER
    elif pos % block_size == SHORT_PAGE_HEADER:
        pos -= SHORT_PAGE_HEADER
    return format_lsn(pos)
