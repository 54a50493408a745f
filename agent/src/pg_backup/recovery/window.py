"""The recoverable window and the choice of base backup (docs/pitr.md, "The recoverable window").

One :class:`Catalog` reads the physical manifests and lists the WAL archive once per command; from it
come how far each base backup can recover (:class:`Reach`), the :class:`Window` (``list``, ``pitr``'s
errors) and :func:`choose_backup`.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..context import Context
from ..errors import NotFoundError, UsageError
from ..manifest import Manifest, iso, parse_iso
from ..wal.names import format_lsn, parse_lsn_arg, parse_wal_name
from .chain import chain_problem
from .targets import RecoveryTarget


@dataclass
class Window:
    """From the oldest base backup's stop point to the end of the newest WAL segment reachable from
    it without a gap (following timeline switches). ``earlier`` lists recoverable stretches cut off
    from this one by a gap; ``gaps`` the missing WAL segment ranges after the oldest backup."""

    start_time: str
    start_lsn: str
    end_time: Optional[str]
    end_lsn: Optional[str]
    end_segment: Optional[str]
    timelines: List[int]
    gaps: List[str]
    start_backup_id: str
    newest_backup_id: str
    backups: int
    earlier: List[Dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        end = f"{_short_time(self.end_time)} ({self.end_lsn}, segment {self.end_segment})" if self.end_time \
            else "(no WAL archived after it)"
        text = (f"{_short_time(self.start_time)} ({self.start_lsn}, end of {self.start_backup_id}) .. {end}; "
                f"timeline(s) {', '.join(str(t) for t in self.timelines) or 'none'}")
        for part in self.earlier:
            text += f"; also {_short_time(part['start_time'])} .. {_short_time(part['end_time'])}"
        if self.gaps:
            text += f"; WAL gaps: {', '.join(self.gaps[:3])}{' ...' if len(self.gaps) > 3 else ''}"
        return text


class OutsideWindow(NotFoundError):
    """The target is not inside the recoverable window (exit 7); the message prints the window."""

    def __init__(self, message: str, window: Optional[Window], *, hint: Optional[str] = None):
        super().__init__(message, hint=hint)
        self.window = window


def _short_time(value: Optional[str]) -> str:
    return value.replace("T", " ")[:19] + " UTC" if value else "?"


def _iso(ts: Optional[dt.datetime]) -> Optional[str]:
    return iso(ts) if ts else None


def _stop_time(m: Manifest) -> dt.datetime:
    return parse_iso(m.stop_time) if m.stop_time else m.finished


def _aware(ts: dt.datetime) -> dt.datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)


@dataclass
class Reach:
    """How far recovery from one base backup can go: the last contiguous archived segment."""

    manifest: Manifest
    usable: bool
    end: Any = None                 # WalEntry of the last reachable segment, None if nothing after it
    why: str = ""

    @property
    def end_time(self) -> Optional[dt.datetime]:
        return _aware(self.end.modified) if self.end is not None else None

    def end_lsn(self, segment_size: int) -> Optional[int]:
        return (self.end.segno + 1) * segment_size if self.end is not None else None


class Catalog:
    """Physical manifests and the WAL archive, read once per command."""

    def __init__(self, ctx: Context, manifests: Optional[Sequence[Manifest]] = None):
        self.ctx = ctx
        source = ctx.repo.manifests() if manifests is None else manifests
        self.physical = sorted([m for m in source if m.kind == "physical" and m.stop_lsn and m.start_wal],
                               key=lambda m: (_stop_time(m), m.backup_id))
        self.by_id = {m.backup_id: m for m in self.physical}
        self.archive = ctx.wal_archive
        sizes = [m.wal_segment_size for m in self.physical if m.wal_segment_size]
        self.archive.identity()        # a forged archive.json is refused (exit 4) before any WAL is used
        self.segment_size = sizes[-1] if sizes else self.archive.segment_size()
        entries = self.archive.entries(segment_size=self.segment_size) if self.physical else []
        self.segments = [e for e in entries if e.kind == "segment"]
        self.by_name = {e.name: e for e in self.segments}
        self.timelines = sorted({e.timeline for e in entries if e.kind in ("segment", "history")})
        self.newest = max(self.segments, key=lambda e: (e.timeline, e.segno or 0)) if self.segments else None
        self._reach: Dict[str, Reach] = {}
        self._gaps: Optional[List[Tuple[str, str]]] = None

    def _segno(self, name: str) -> int:
        return parse_wal_name(name).segno(self.segment_size) or 0

    def gaps(self) -> List[Tuple[str, str]]:
        """Missing segment ranges from the oldest backup's start along the newest timeline's
        path: one listing of the archive for all backups (positions only grow along a path)."""
        if self._gaps is None:
            start = min((m.start_wal or "" for m in self.physical), key=self._segno, default=None)
            self._gaps = self.archive.gaps(start, segment_size=self.segment_size) if start and self.segments else []
        return self._gaps

    def reach(self, m: Manifest) -> Reach:
        if m.backup_id in self._reach:
            return self._reach[m.backup_id]
        r = Reach(m, usable=True)
        missing = [n for n in (m.start_wal, m.stop_wal) if n not in self.by_name]
        broken = chain_problem(m, self.by_id)
        if broken:
            # An incremental backup is a base only with its whole chain (docs/pitr.md, "Incremental chains").
            r.usable, r.why = False, broken
        elif missing:
            r.usable, r.why = False, f"its WAL {', '.join(str(x) for x in missing)} is not in the archive"
        else:
            start, stop = self._segno(m.start_wal or ""), self._segno(m.stop_wal or "")
            after = [g for g in self.gaps() if self._segno(g[1]) >= start]
            if not after:
                r.end = self.newest
            elif self._segno(after[0][0]) <= stop:
                r.usable, r.why = False, f"WAL it needs is missing from the archive ({after[0][0]}..{after[0][1]})"
            else:
                first, tli = self._segno(after[0][0]), int(after[0][0][:8], 16)
                before = [e for e in self.segments if (e.segno or 0) < first and e.timeline <= tli]
                r.end = max(before, key=lambda e: (e.segno or 0, e.timeline)) if before else None
        self._reach[m.backup_id] = r
        return r

    def window(self) -> Optional[Window]:
        usable = [self.reach(m) for m in self.physical]
        usable = [r for r in usable if r.usable]
        if not usable:
            return None
        size = self.segment_size
        final = max(usable, key=lambda r: (r.end_lsn(size) or 0))
        final_end = final.end_lsn(size)
        chain = [r for r in usable if r.end_lsn(size) == final_end]
        first = chain[0]
        earlier: List[Dict[str, Any]] = []
        seen_ends = set()
        for r in usable:
            if r.end_lsn(size) == final_end or r.end_lsn(size) in seen_ends:
                continue
            seen_ends.add(r.end_lsn(size))
            earlier.append({"start_time": _iso(_stop_time(r.manifest)), "start_lsn": r.manifest.stop_lsn,
                            "end_time": _iso(r.end_time), "end_lsn": format_lsn(r.end_lsn(size) or 0),
                            "backup_id": r.manifest.backup_id})
        gaps = [f"{a}..{b}" if a != b else a for a, b in self.gaps()]
        return Window(start_time=_iso(_stop_time(first.manifest)) or "", start_lsn=first.manifest.stop_lsn or "",
                      end_time=_iso(first.end_time), end_lsn=format_lsn(final_end) if final_end else None,
                      end_segment=first.end.name if first.end is not None else None, timelines=self.timelines,
                      gaps=gaps, start_backup_id=first.manifest.backup_id,
                      newest_backup_id=self.physical[-1].backup_id, backups=len(self.physical), earlier=earlier)


def recoverable_window(ctx: Context, manifests: Optional[Sequence[Manifest]] = None) -> Optional[Window]:
    """The window point-in-time recovery can reach now, or None without a usable physical backup."""
    return Catalog(ctx, manifests).window()


def choose_backup(catalog: Catalog, target: RecoveryTarget, backup_id: Optional[str] = None) -> Tuple[Manifest, List[str]]:
    """The newest usable base backup that ended before the target (or the named one), checked
    against the WAL archive; raises OutsideWindow (printing the window) when none can reach it."""
    ctx = catalog.ctx
    notes: List[str] = []
    if backup_id:
        m = ctx.repo.load_manifest(backup_id)
        if m.kind != "physical":
            raise UsageError(f"backup {backup_id} is a {m.kind} backup; point-in-time recovery needs a physical base "
                             f"backup", hint=f"restore it with 'pg-backup restore {backup_id} --database NAME', or "
                                             f"see 'pg-backup list' for physical ones")
        candidates = [m]
    else:
        candidates = list(reversed(catalog.physical))
        if not candidates:
            raise NotFoundError(f"no physical base backup in {ctx.repo.location}",
                                hint="take one with 'pg-backup backup --physical' (with WAL archiving on)")
    window = catalog.window()
    size = catalog.segment_size
    t_time, t_lsn = target.time, target.lsn
    if t_time is not None:
        before = [m for m in candidates if _stop_time(m) < t_time]
    elif t_lsn is not None:
        before = [m for m in candidates if parse_lsn_arg(m.stop_lsn or "0/0") <= t_lsn]
    elif target.kind == "xid" and not backup_id:
        xid = int(target.value or 0)
        before = [m for m in candidates if m.next_xid is not None and m.next_xid <= xid]
        if not before:
            before = candidates[-1:]
            notes.append(f"transaction {xid} was assigned before every base backup ended: starting from the oldest "
                         f"one, {before[0].backup_id if before else '-'}")
    else:
        before = candidates
    if not before:
        where = candidates[0].backup_id if backup_id else "the oldest base backup"
        raise OutsideWindow(f"target {target.describe()} is before the end of {where}: outside the recoverable window "
                            f"{window.describe() if window else '(none)'}", window,
                            hint="choose a later target" + ("" if not backup_id else " or an older --backup-id"))
    unusable = []
    for m in before:
        r = catalog.reach(m)
        if not r.usable:
            unusable.append(f"{m.backup_id}: {r.why}")
            if backup_id:
                raise OutsideWindow(f"backup {m.backup_id} cannot be recovered: {r.why}", window,
                                    hint="choose another backup (see 'pg-backup list')")
            continue
        end_time, end_lsn = r.end_time, r.end_lsn(size)
        if t_time is not None and (end_time is None or t_time > end_time):
            raise OutsideWindow(f"target {target.describe()} is after the newest archived WAL reachable from "
                                f"{m.backup_id} ({_short_time(_iso(end_time))}): outside the recoverable window "
                                f"{window.describe() if window else '(none)'}", window,
                                hint="choose an earlier target, or wait until the WAL holding it is archived")
        if t_lsn is not None and (end_lsn is None or t_lsn > end_lsn):
            raise OutsideWindow(f"target {target.describe()} is after the newest archived WAL reachable from "
                                f"{m.backup_id} ({format_lsn(end_lsn) if end_lsn else 'none'}): outside the "
                                f"recoverable window {window.describe() if window else '(none)'}", window,
                                hint="choose an earlier target, or wait until the WAL holding it is archived")
        notes += [f"skipped {u}" for u in unusable]
        newest = catalog.newest
        if target.kind == "latest" and r.end is not None and newest is not None and r.end.name != newest.name:
            notes.append(f"WAL after {r.end.name} cannot be reached from {m.backup_id} (missing segments: "
                         f"{', '.join(window.gaps[:3]) if window else '?'}): recovery ends there, not at {newest.name}")
        return m, notes
    raise OutsideWindow(f"no base backup before target {target.describe()} can be recovered ({'; '.join(unusable)}); "
                        f"recoverable window: {window.describe() if window else '(none)'}", window,
                        hint="choose a target inside the window")
