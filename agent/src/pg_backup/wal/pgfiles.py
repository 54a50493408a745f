"""Reading PostgreSQL's own files: the identity of the cluster that wrote a WAL file (its segment's
page header, or ``global/pg_control``) and the files waiting in ``pg_wal/archive_status``.

Standard library only.
"""
from __future__ import annotations

import os
import struct
from typing import List, Optional, Tuple

from .names import WalNameError, parse_wal_name, sort_key

XLP_LONG_HEADER = 0x0002


def read_segment_header(path: str) -> Optional[Tuple[int, int, int]]:
    """(system identifier, segment size, block size) from a segment's long page header, or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(40)
    except OSError:
        return None
    if len(head) < 40:
        return None
    _magic, info = struct.unpack_from("<HH", head, 0)
    if not info & XLP_LONG_HEADER:
        return None
    sysid, seg_size, blcksz = struct.unpack_from("<QII", head, 24)
    if sysid == 0 or seg_size == 0 or seg_size & (seg_size - 1):
        return None
    return sysid, seg_size, blcksz


def read_control_sysid(datadir: str) -> Optional[int]:
    """The system identifier: the first 8 bytes of global/pg_control."""
    try:
        with open(os.path.join(datadir, "global", "pg_control"), "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    if len(head) < 8:
        return None
    return struct.unpack("<Q", head)[0] or None


def datadir_of(pg_wal: str) -> str:
    """The data directory of a pg_wal directory given as PostgreSQL passes it (cwd is the data dir)."""
    if os.path.basename(pg_wal) in ("pg_wal", "pg_xlog"):
        return os.path.dirname(pg_wal)
    return os.getcwd()


def ready_files(pg_wal: str) -> List[str]:
    """Names with a .ready status file, in PostgreSQL's archiving order (history files first)."""
    try:
        names = os.listdir(os.path.join(pg_wal, "archive_status"))
    except OSError:
        return []
    result = []
    for entry in names:
        if not entry.endswith(".ready"):
            continue
        name = entry[:-len(".ready")]
        try:
            result.append(parse_wal_name(name))
        except WalNameError:
            continue
    result.sort(key=sort_key)
    return [w.name for w in result]
