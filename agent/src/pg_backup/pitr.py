"""Point-in-time recovery (``pg-backup pitr``) and the recoverable window (DESIGN §7).

Function API (used by ``verify --restore``, ``drill`` and the CLI)::

    recover(ctx, target, data_dir, *, port=None, start=True, archiving=False, backup_id=None,
            progress=None, tablespace_map=None, timeout=None) -> RecoveryResult
    recoverable_window(ctx) -> Optional[Window]
    stop_server(data_dir)                  # pg_ctl stop -m fast, for cleanup
    socket_host(result) -> str             # where a client reaches the recovered server
    time_target(T) / lsn_target(L) / xid_target(X) / name_target(N) / latest_target() / consistent_target()

A recovery: choose the newest base backup that ended before the target, check its objects'
SHA-256 (downloading them from S3 into a private directory first, so nothing is decrypted from
an unchecked object), move an existing data directory aside (never delete), decrypt and extract
the base and tablespace archives, write ``recovery.signal`` and the recovery settings into
``postgresql.auto.conf`` (restore_command = ``pg-backup wal-fetch``, one recovery_target_*,
timeline latest, action promote, archiving off unless asked), start the server, wait for the
promotion and report the point reached. After the promotion the recovery-only settings are taken
out of ``postgresql.auto.conf`` again.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from .context import Context
from .errors import IntegrityError, NotFoundError, PgBackupError, PostgresError, RefusedError, UsageError
from .manifest import Manifest, parse_iso
from .physical import BASE_OBJECT, format_lsn, open_wal_archive, parse_lsn
from .pipeline import CHUNK, iter_plaintext
from .postgres import Postgres
from .progress import Progress, human_bytes

RECOVERY_CONFIG_NAME = "pg-backup.recovery.yml"   # the agent configuration restore_command uses
RECOVERY_LOG = os.path.join("log", "pg-backup-recovery.log")
AUTO_CONF = "postgresql.auto.conf"
BLOCK_BEGIN = "# BEGIN pg-backup pitr"
BLOCK_END = "# END pg-backup pitr"
RESTORED_TABLESPACES = "pg_tblspc_restored"
MAX_SOCKET_PATH = 100       # sun_path is 108 bytes; "/.s.PGSQL.65535" takes 15 of them
RECOVERY_ONLY = ("restore_command", "recovery_target", "recovery_target_time", "recovery_target_lsn",
                 "recovery_target_xid", "recovery_target_name", "recovery_target_inclusive",
                 "recovery_target_timeline", "recovery_target_action", "lc_messages")


class OutsideWindow(NotFoundError):
    """The target is not inside the recoverable window (exit 7); the message prints the window."""

    def __init__(self, message: str, window: Optional["Window"], *, hint: Optional[str] = None):
        super().__init__(message, hint=hint)
        self.window = window


# -- targets -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops. ``kind`` is time, lsn, xid, name, latest (all archived WAL) or
    immediate (as soon as the base backup is consistent)."""

    kind: str
    value: Optional[str] = None
    inclusive: bool = True

    def describe(self) -> str:
        if self.kind == "latest":
            return "the end of the archived WAL"
        if self.kind == "immediate":
            return "the end of the base backup (consistent point)"
        label = {"time": "time", "lsn": "WAL location", "xid": "transaction", "name": "restore point"}[self.kind]
        return f"{label} {self.value}{'' if self.inclusive else ' (exclusive)'}"

    @property
    def time(self) -> Optional[dt.datetime]:
        return parse_target_time(self.value or "") if self.kind == "time" else None

    @property
    def lsn(self) -> Optional[int]:
        return parse_lsn(self.value or "") if self.kind == "lsn" else None

    def settings(self) -> Dict[str, str]:
        """The recovery_target_* parameters: exactly one target (none for latest)."""
        if self.kind == "latest":
            return {}
        if self.kind == "immediate":
            return {"recovery_target": "immediate"}
        out = {f"recovery_target_{self.kind}": self.value or ""}
        if self.kind in ("time", "lsn", "xid"):
            out["recovery_target_inclusive"] = "on" if self.inclusive else "off"
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "inclusive": self.inclusive, "description": self.describe()}


def parse_target_time(text: str) -> dt.datetime:
    """ISO 8601 with a zone: 2026-11-25T14:03:00Z, 2026-11-25 14:03:00.5+01, ...+01:00."""
    raw = text.strip()
    m = re.match(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$",
                 raw, re.I)
    if not m:
        raise UsageError(f"target time {text!r} is not an ISO 8601 time like 2026-11-25T14:03:00Z")
    date, clock, frac, zone = m.groups()
    if not zone:
        raise UsageError(f"target time {text!r} has no time zone; add one, e.g. {raw}Z or {raw}+01:00")
    if len(clock) == 5:
        clock += ":00"
    zone = "+00:00" if zone.upper() == "Z" else zone
    if len(zone) == 3:
        zone += ":00"
    elif ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    micro = (frac or "0")[:6].ljust(6, "0")
    try:
        return dt.datetime.fromisoformat(f"{date}T{clock}.{micro}{zone}")
    except ValueError as exc:
        raise UsageError(f"target time {text!r}: {exc}") from None


def time_target(when: Any, inclusive: bool = True) -> RecoveryTarget:
    ts = when if isinstance(when, dt.datetime) else parse_target_time(str(when))
    if ts.tzinfo is None:
        raise UsageError("a target time needs a time zone")
    value = ts.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    return RecoveryTarget("time", value, inclusive)


def lsn_target(lsn: str, inclusive: bool = True) -> RecoveryTarget:
    return RecoveryTarget("lsn", format_lsn(parse_lsn(lsn)), inclusive)


def xid_target(xid: Any, inclusive: bool = True) -> RecoveryTarget:
    text = str(xid).strip()
    if not text.isdigit() or int(text) < 3:
        raise UsageError(f"target transaction id {xid!r} is not a normal transaction id (a number >= 3)")
    return RecoveryTarget("xid", str(int(text)), inclusive)


def name_target(name: str) -> RecoveryTarget:
    if not name or len(name.encode()) >= 64:
        raise UsageError(f"restore point name {name!r} must have 1 to 63 bytes (pg_create_restore_point's limit)")
    return RecoveryTarget("name", name)


def latest_target() -> RecoveryTarget:
    return RecoveryTarget("latest")


def consistent_target() -> RecoveryTarget:
    return RecoveryTarget("immediate")


# -- the recoverable window --------------------------------------------------------------------

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


def _short_time(value: Optional[str]) -> str:
    return value.replace("T", " ")[:19] + " UTC" if value else "?"


def _stop_time(m: Manifest) -> dt.datetime:
    return parse_iso(m.stop_time) if m.stop_time else m.finished


@dataclass
class _Reach:
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


def _aware(ts: dt.datetime) -> dt.datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)


def _iso(ts: Optional[dt.datetime]) -> Optional[str]:
    return ts.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if ts else None


class _Catalog:
    """Physical manifests and the WAL archive, read once per command."""

    def __init__(self, ctx: Context, manifests: Optional[Sequence[Manifest]] = None):
        self.ctx = ctx
        source = ctx.repo.manifests() if manifests is None else manifests
        self.physical = sorted([m for m in source if m.kind == "physical" and m.stop_lsn and m.start_wal],
                               key=lambda m: (_stop_time(m), m.backup_id))
        self.archive = open_wal_archive(ctx)
        sizes = [m.wal_segment_size for m in self.physical if m.wal_segment_size]
        self.segment_size = sizes[-1] if sizes else self.archive.segment_size()
        entries = self.archive.entries(segment_size=self.segment_size) if self.physical else []
        self.segments = [e for e in entries if e.kind == "segment"]
        self.by_name = {e.name: e for e in self.segments}
        self.timelines = sorted({e.timeline for e in entries if e.kind in ("segment", "history")})
        self.newest = max(self.segments, key=lambda e: (e.timeline, e.segno or 0)) if self.segments else None
        self._reach: Dict[str, _Reach] = {}
        self._gaps: Optional[List[Tuple[str, str]]] = None

    def _segno(self, name: str) -> int:
        from .walarchive import parse_wal_name

        return parse_wal_name(name).segno(self.segment_size) or 0

    def gaps(self) -> List[Tuple[str, str]]:
        """Missing segment ranges from the oldest backup's start along the newest timeline's
        path: one listing of the archive for all backups (positions only grow along a path)."""
        if self._gaps is None:
            start = min((m.start_wal or "" for m in self.physical), key=self._segno, default=None)
            self._gaps = self.archive.gaps(start, segment_size=self.segment_size) if start and self.segments else []
        return self._gaps

    def reach(self, m: Manifest) -> _Reach:
        if m.backup_id in self._reach:
            return self._reach[m.backup_id]
        r = _Reach(m, usable=True)
        missing = [n for n in (m.start_wal, m.stop_wal) if n not in self.by_name]
        if missing:
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
    return _Catalog(ctx, manifests).window()


# -- choosing the base backup ------------------------------------------------------------------

def choose_backup(catalog: _Catalog, target: RecoveryTarget, backup_id: Optional[str] = None) -> Tuple[Manifest, List[str]]:
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
        before = [m for m in candidates if parse_lsn(m.stop_lsn or "0/0") <= t_lsn]
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


# -- binaries, data directory, tablespaces -----------------------------------------------------

def _binary_major(path: str) -> Optional[int]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return None
    m = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(m.group(1)) if m else None


def server_bin_dir(ctx: Optional[Context], major: int) -> str:
    """The directory with ``postgres`` and ``pg_ctl`` of exactly this major version."""
    candidates = []
    if ctx is not None and ctx.settings.postgres.bin_dir:
        candidates.append(ctx.settings.postgres.bin_dir)
    candidates += [f"/usr/lib/postgresql/{major}/bin", f"/usr/pgsql-{major}/bin"]
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                             timeout=30, check=False).stdout.strip())
        except OSError:
            pass
    for d in candidates:
        if d and os.path.exists(os.path.join(d, "pg_ctl")) and _binary_major(os.path.join(d, "postgres")) == major:
            return d
    raise PostgresError(f"PostgreSQL {major} server binaries (postgres, pg_ctl) not found in "
                        f"{', '.join(c for c in candidates if c)}",
                        hint=f"install postgresql-{major} or set postgres.bin_dir to its bin directory")


def _running_pid(data_dir: str) -> Optional[int]:
    """The postmaster pid if postmaster.pid names a live process, else None."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8", errors="replace") as fh:
            first = fh.readline().strip()
    except OSError:
        return None
    if not first.lstrip("-").isdigit():
        return None
    pid = abs(int(first))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None  # exited, not yet reaped
    except (OSError, IndexError):
        pass
    return pid


def _pid_file_lines(data_dir: str) -> List[str]:
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8", errors="replace") as fh:
            return fh.read().splitlines()
    except OSError:
        return []


def check_data_dir(data_dir: str) -> None:
    """Refuse a data directory that is a file or that a running server uses (nothing is changed)."""
    if os.path.lexists(data_dir) and not os.path.isdir(data_dir):
        raise RefusedError(f"{data_dir} exists and is not a directory; nothing was changed",
                           hint="choose another --data-dir")
    pid = _running_pid(data_dir) if os.path.isdir(data_dir) else None
    if pid is not None:
        raise RefusedError(f"a PostgreSQL server (pid {pid}) is running in {data_dir}; nothing was changed",
                           hint="stop it first (pg_ctl stop), or recover into another --data-dir")
    parent = os.path.dirname(data_dir)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {parent} for the data directory: {exc.strerror}",
                         hint="choose a --data-dir this user may create") from None


def prepare_data_dir(data_dir: str, stamp: str) -> Optional[str]:
    """Make ``data_dir`` an empty 0700 directory; move a non-empty one aside (never delete).
    Returns where the old one went, or None."""
    moved = None
    check_data_dir(data_dir)
    if os.path.isdir(data_dir) and os.listdir(data_dir):
        moved = f"{data_dir}.pitr-{stamp}"
        n = 0
        while os.path.lexists(moved):
            n += 1
            moved = f"{data_dir}.pitr-{stamp}-{n}"
        try:
            os.rename(data_dir, moved)
        except OSError as exc:
            raise RefusedError(f"cannot move the existing {data_dir} aside to {moved}: {exc.strerror}; nothing was "
                               f"changed", hint="move or empty it yourself (is it a mount point?), or choose "
                                                "another --data-dir") from None
    try:
        if not os.path.isdir(data_dir):
            os.mkdir(data_dir, 0o700)
        os.chmod(data_dir, 0o700)
    except OSError as exc:
        raise UsageError(f"cannot create data directory {data_dir}: {exc.strerror}",
                         hint="choose a --data-dir this user may create") from None
    return moved


def _occupied(location: str, major: int) -> bool:
    """True when ``location`` already holds a tablespace of this major version (PG_<major>_...)."""
    try:
        return any(name.startswith(f"PG_{major}_") for name in os.listdir(location))
    except FileNotFoundError:
        return False
    except OSError:
        return True


def plan_tablespaces(manifest: Manifest, data_dir: str, mapping: Optional[Dict[str, str]],
                     notes: List[str]) -> List[Dict[str, Any]]:
    """Where each tablespace of the backup is restored: a mapping entry (by old location, name or
    oid), else its original location when that holds no tablespace of this version yet, else
    ``<data_dir>/pg_tblspc_restored/<oid>`` (never into someone's live tablespace)."""
    major = manifest.server_version_num // 10000
    mapping = dict(mapping or {})
    planned = []
    for ts in manifest.tablespaces:
        oid, old, name = int(ts["oid"]), str(ts.get("location") or ""), ts.get("name")
        new = None
        for key in (old, str(name or ""), str(oid)):
            if key and key in mapping:
                new = os.path.abspath(mapping.pop(key))
                break
        if new is not None:
            if os.path.isdir(new) and os.listdir(new):
                raise RefusedError(f"tablespace {name or oid}: {new} is not empty; nothing was changed",
                                   hint="map it to an empty or new directory")
        elif old and not _occupied(old, major):
            new = old
        else:
            new = os.path.join(data_dir, RESTORED_TABLESPACES, str(oid))
            notes.append(f"tablespace {name or oid}: {old} is in use (holds a PostgreSQL {major} tablespace), so it "
                         f"was restored into {new}; map it elsewhere with --tablespace-map {old}=NEW")
        if "\n" in new or "\r" in new:
            raise UsageError(f"tablespace path {new!r} contains a line break")
        planned.append({"oid": oid, "name": name, "location": old, "restored_to": new, "object": ts["object"]})
    if mapping:
        raise UsageError(f"--tablespace-map names {', '.join(sorted(mapping))}, which backup {manifest.backup_id} "
                         f"has no tablespace for", hint="tablespaces in it: " + (", ".join(
                             f"{t.get('name')} ({t.get('location')})" for t in manifest.tablespaces) or "none"))
    return planned


def make_tablespace_dirs(planned: List[Dict[str, Any]]) -> None:
    for t in planned:
        try:
            os.makedirs(t["restored_to"], mode=0o700, exist_ok=True)
            os.chmod(t["restored_to"], 0o700)
        except OSError as exc:
            raise UsageError(f"cannot create tablespace directory {t['restored_to']}: {exc.strerror}",
                             hint=f"map it elsewhere with --tablespace-map {t['location']}=NEW") from None


# -- download, decrypt, extract ----------------------------------------------------------------

class _Timer:
    def __init__(self) -> None:
        self.phases: Dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = round(self.phases.get(name, 0.0) + max(seconds, 0.0), 3)


def _fetch_objects(ctx: Context, manifest: Manifest, names: List[str], spool: Optional[str],
                   progress: Progress) -> Tuple[Any, Dict[str, str]]:
    """Check every object's SHA-256 before anything is decrypted. A local repository is hashed in
    place; objects in S3 are downloaded into the private ``spool`` directory while hashed (one
    download, ciphertext only). Returns (storage, {object name: key}) to read them from."""
    from .storage.local import LocalStorage

    keys = {n: ctx.repo.object_key(manifest.backup_id, n) for n in names}
    ctx.storage.make_readable(list(keys.values()),
                              progress=lambda d, t, m: progress.note(f"archived objects: {d}/{t} readable ({m})"))
    local = ctx.settings.repository.type == "local" or spool is None
    for name in names:
        obj = manifest.object_named(name)
        what = f"{manifest.backup_id}/{name}"
        progress.stage(f"{'checking' if local else 'downloading and checking'} {what} ({human_bytes(obj.size)})")
        digest, seen = hashlib.sha256(), 0
        out = None
        if not local:
            out = os.open(os.path.join(spool or "", name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for block in ctx.storage.iter_chunks(keys[name], CHUNK):
                digest.update(block)
                seen += len(block)
                if out is not None:
                    view = memoryview(block)
                    while view:
                        view = view[os.write(out, view):]
                progress.bytes("download", seen)
        finally:
            if out is not None:
                os.close(out)
        if seen != obj.size:
            raise IntegrityError(f"{what}: stored size {seen} bytes differs from the manifest's {obj.size}")
        if digest.hexdigest() != obj.sha256:
            raise IntegrityError(f"{what}: SHA-256 {digest.hexdigest()} differs from the manifest's {obj.sha256}")
    if local:
        return ctx.storage, keys
    return LocalStorage(spool or ""), {n: n for n in names}


def extract_archive(ctx: Context, storage: Any, key: str, manifest: Manifest, name: str, dest: str,
                    timer: _Timer, progress: Progress) -> int:
    """Decrypt, decompress and untar one archive into ``dest`` (GNU tar reading a pipe: no
    plaintext file besides the extracted data itself)."""
    obj = manifest.object_named(name)
    what = f"{manifest.backup_id}/{name}"
    progress.stage(f"extracting {what} into {dest}")
    tar = shutil.which("tar") or "/bin/tar"
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen([tar, "-x", "-f", "-", "-C", dest, "--no-same-owner", "--no-same-permissions"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
    from .pipes import widen

    widen(proc.stdin)
    t0 = time.monotonic()
    blocked = 0.0
    total = 0

    def tar_error() -> str:
        errors.seek(0)
        return errors.read().decode(errors="replace").strip()[-300:] or f"exit code {proc.returncode}"

    try:
        assert proc.stdin is not None
        for block in iter_plaintext(storage, key, ctx.gpg, manifest.encryption.fingerprint, what=what,
                                    expected_sha256=obj.sha256):
            w0 = time.monotonic()
            proc.stdin.write(block)
            blocked += time.monotonic() - w0
            total += len(block)
            progress.bytes("extract", total)
        w0 = time.monotonic()
        proc.stdin.close()
        proc.wait()
        blocked += time.monotonic() - w0
    except BrokenPipeError:
        proc.wait()
        raise IntegrityError(f"{what}: tar stopped reading: {tar_error()}") from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if proc.returncode is not None and proc.returncode != 0:
            message = tar_error()
            errors.close()
            raise IntegrityError(f"{what}: tar failed to extract it: {message}")
        errors.close()
    if total != obj.raw_size:
        raise IntegrityError(f"{what}: decompressed to {total} bytes, the manifest says {obj.raw_size}")
    elapsed = time.monotonic() - t0
    timer.add("decrypt_decompress", elapsed - blocked)
    timer.add("extract", blocked)
    return total


# -- recovery settings -------------------------------------------------------------------------

def _conf_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def agent_executable() -> str:
    """The pg-backup console script restore_command runs (the one running now)."""
    here = os.path.join(os.path.dirname(sys.executable), "pg-backup")
    if os.access(here, os.X_OK):
        return here
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0).startswith("pg-backup") and os.access(argv0, os.X_OK):
        return argv0
    found = shutil.which("pg-backup")
    if found:
        return os.path.abspath(found)
    raise UsageError("cannot find the pg-backup executable for restore_command",
                     hint="run pg-backup from its virtualenv's bin directory or put it on PATH")


def write_recovery_config(ctx: Context, data_dir: str) -> str:
    """The agent configuration restore_command uses, as a private copy inside the data directory:
    it holds no secrets (only paths to them) and cannot change under a running recovery."""
    from .config import to_dict

    path = os.path.join(data_dir, RECOVERY_CONFIG_NAME)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# Written by pg-backup pitr for restore_command; removed after the promotion.\n")
        yaml.safe_dump(to_dict(ctx.settings), fh, sort_keys=False, allow_unicode=True)
    return path


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def _strip_block(text: str) -> str:
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith(BLOCK_BEGIN):
            inside = True
            continue
        if line.startswith(BLOCK_END):
            inside = False
            continue
        if not inside:
            out.append(line)
    return "".join(out)


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.pgb-{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_auto_conf(data_dir: str, settings: Dict[str, str], comment: str) -> None:
    """Append one marked block of settings to postgresql.auto.conf (replacing an earlier block)."""
    path = os.path.join(data_dir, AUTO_CONF)
    base = _strip_block(_read_text(path))
    if base and not base.endswith("\n"):
        base += "\n"
    lines = [f"{BLOCK_BEGIN}: {comment}"] + [f"{k} = {_conf_quote(v)}" for k, v in settings.items()] + [BLOCK_END]
    _write_atomic(path, base + "\n".join(lines) + "\n")


def recovery_settings(ctx: Context, target: RecoveryTarget, data_dir: str, config_path: str, *,
                      port: Optional[int], socket_dir: Optional[str], archiving: bool) -> Dict[str, str]:
    cmd = (f"{shlex.quote(agent_executable())} --config {shlex.quote(config_path)} --quiet wal-fetch %f %p")
    out: Dict[str, str] = {"restore_command": cmd}
    out.update(target.settings())
    out.update({"recovery_target_timeline": "latest", "recovery_target_action": "promote", "lc_messages": "C"})
    out.update(server_overrides(port=port, socket_dir=socket_dir, archiving=archiving))
    return out


def server_overrides(*, port: Optional[int], socket_dir: Optional[str], archiving: bool) -> Dict[str, str]:
    """What stays after the promotion: the scratch port, loopback and socket, and archiving off."""
    out: Dict[str, str] = {}
    if port is not None:
        out.update({"port": str(port), "listen_addresses": "127.0.0.1", "unix_socket_directories": socket_dir or ""})
    if not archiving:
        # DESIGN §5.7: a recovered copy never archives into the production prefix; a promoted copy
        # must not wait for synchronous standbys it does not have either.
        out.update({"archive_mode": "off", "archive_command": "", "synchronous_standby_names": ""})
    return out


_PATH_SETTINGS = re.compile(r"^\s*(data_directory|hba_file|ident_file|external_pid_file)\s*=?", re.I)
_ABS_INCLUDE = re.compile(r"^\s*(include_dir|include_if_exists|include)\s*=?\s*'(/[^']*|[^']*\.\.[^']*)'", re.I)


def adopt_config(data_dir: str, manifest: Manifest, notes: List[str]) -> None:
    """Make the configuration files the backup kept from outside the data directory (Debian's
    /etc/postgresql/...) work inside it: settings that point at the original cluster's paths
    (data_directory, hba_file, ident_file, external_pid_file) and includes by absolute path are
    commented out, so the recovered server can never open the original data directory."""
    path = os.path.join(data_dir, "postgresql.conf")
    dropped, out = [], []
    for line in _read_text(path).splitlines():
        if _PATH_SETTINGS.match(line) or _ABS_INCLUDE.match(line):
            dropped.append(line.strip())
            line = f"#pg-backup pitr: {line}"
        out.append(line)
    _write_atomic(path, "\n".join(out) + "\n")
    where = ", ".join(sorted((manifest.extra or {}).get("config_files", {}).values())) or "outside the data directory"
    notes.append(f"postgresql.conf, pg_hba.conf and pg_ident.conf came from {where} (kept with the backup) and now "
                 f"live in the data directory" + (f"; commented out: {'; '.join(dropped)}" if dropped else ""))


def rewrite_tablespace_map(data_dir: str, planned: List[Dict[str, Any]]) -> None:
    if not planned:
        return
    path = os.path.join(data_dir, "tablespace_map")
    present = _read_text(path)
    oids = {str(t["oid"]) for t in planned}
    listed = {line.split(" ", 1)[0] for line in present.splitlines() if line.strip()}
    if listed != oids:
        raise IntegrityError(f"tablespace_map in the base backup lists {sorted(listed)}, the manifest {sorted(oids)}")
    _write_atomic(path, "".join(f"{t['oid']} {t['restored_to']}\n" for t in planned))


# -- the server ----------------------------------------------------------------------------------

def _log_path(data_dir: str) -> str:
    return os.path.join(data_dir, RECOVERY_LOG)


def _log_problem(data_dir: str) -> str:
    """The last FATAL/PANIC line of the recovery log (lc_messages is C during recovery)."""
    lines = _read_text(_log_path(data_dir)).splitlines()
    bad = [ln for ln in lines if "FATAL:" in ln or "PANIC:" in ln]
    pick = bad[-1] if bad else (lines[-1] if lines else "no log")
    return pick.split("FATAL:", 1)[-1].split("PANIC:", 1)[-1].strip()


def _log_stop_record(data_dir: str) -> Optional[str]:
    for ln in reversed(_read_text(_log_path(data_dir)).splitlines()):
        if "recovery stopping" in ln or "consistent recovery state reached" in ln:
            return ln.split("LOG:", 1)[-1].strip()
    return None


def scratch_postgres(ctx: Context, host: str, port: int) -> Postgres:
    """A client of the recovered server with the configured role and client settings."""
    return Postgres(dataclasses.replace(ctx.settings.postgres, host=host, port=port))


def _pg_ctl_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_MESSAGES"] = "C"
    return env


def start_server(bin_dir: str, data_dir: str) -> None:
    os.makedirs(os.path.join(data_dir, "log"), mode=0o700, exist_ok=True)
    proc = subprocess.run([os.path.join(bin_dir, "pg_ctl"), "-D", data_dir, "-l", _log_path(data_dir), "-W",
                           "start"], capture_output=True, text=True, env=_pg_ctl_env(), timeout=120, check=False)
    if proc.returncode != 0:
        raise PostgresError(f"pg_ctl could not start the recovered server in {data_dir}: "
                            f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no detail']}")


def socket_host(result: "RecoveryResult") -> str:
    """Host for a client of the recovered server: its Unix socket directory, else loopback."""
    return result.socket_dir or result.host or "127.0.0.1"


def _connect_info(data_dir: str) -> Tuple[Optional[int], Optional[str], Optional[str]]:
    """(port, socket dir, listen address) from postmaster.pid."""
    lines = _pid_file_lines(data_dir)
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    sock = lines[4].strip() if len(lines) > 4 and lines[4].strip() else None
    addr = lines[5].strip() if len(lines) > 5 and lines[5].strip() else None
    if addr in ("*", "0.0.0.0", "::"):
        addr = "127.0.0.1"
    return port, sock, addr


def _pm_status(data_dir: str) -> str:
    """The postmaster's status word in postmaster.pid: starting, standby (consistent but refusing
    connections: hot_standby off), ready (accepting connections, read-only while in recovery) or
    stopping; "" before it is written."""
    lines = _pid_file_lines(data_dir)
    return lines[7].strip() if len(lines) > 7 else ""


_REACHED_SQL = ("SELECT pg_last_xact_replay_timestamp(), pg_last_wal_replay_lsn()::text,"
                " ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int")


def wait_for_promotion(ctx: Context, data_dir: str, timer: _Timer, progress: Progress,
                       timeout: Optional[float]) -> Tuple[Dict[str, Any], Tuple[Optional[int], Optional[str], Optional[str]]]:
    """Wait until the server accepts connections and has left recovery; raise with the log's FATAL
    line if it stops. Returns (what was reached, connection info). Connections are attempted only
    once postmaster.pid says the server accepts them, so the log stays free of refusals."""
    t0 = time.monotonic()
    ready_at: Optional[float] = None
    last_note = t0
    deadline = t0 + timeout if timeout else None
    conn = None
    try:
        while True:
            time.sleep(0.1)
            status = _pm_status(data_dir)
            if _running_pid(data_dir) is None and time.monotonic() - t0 > 1.0:
                time.sleep(0.5)
                if _running_pid(data_dir) is None:
                    raise PostgresError(f"the recovered server in {data_dir} stopped: {_log_problem(data_dir)}",
                                        hint=f"see {_log_path(data_dir)}")
            if status in ("standby", "ready") and ready_at is None:
                ready_at = time.monotonic()
                timer.add("startup", ready_at - t0)
            port, sock, addr = _connect_info(data_dir)
            if status == "ready" and port is not None:
                try:
                    if conn is None:
                        conn = scratch_postgres(ctx, sock or addr or "127.0.0.1", port).connect()
                    in_recovery, at = conn.execute("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text").fetchone()
                    if not in_recovery:
                        row = conn.execute(_REACHED_SQL).fetchone()
                        timer.add("wal_replay", time.monotonic() - (ready_at or t0))
                        return ({"time": _iso(row[0]) if row[0] else None, "lsn": row[1], "timeline": row[2]},
                                (port, sock, addr))
                except PostgresError:
                    conn = None
                except Exception:  # psycopg.Error: the server went away under us; the checks above tell
                    if conn is not None:
                        conn.close()
                    conn = None
                    continue
                if time.monotonic() - last_note > 10:
                    last_note = time.monotonic()
                    progress.note(f"replaying WAL: at {at}")
            if deadline and time.monotonic() > deadline:
                raise PostgresError(f"the recovered server in {data_dir} did not finish recovery within "
                                    f"{timeout:.0f} s", hint=f"it is still running; see {_log_path(data_dir)}")
    finally:
        if conn is not None:
            conn.close()


def stop_server(data_dir: str, mode: str = "fast", timeout: int = 120) -> None:
    """Stop a server recovered by :func:`recover` (no-op if it is not running)."""
    pid = _running_pid(data_dir)
    if pid is None:
        return
    _, sock, _ = _connect_info(data_dir)
    bin_dir = None
    try:
        bin_dir = os.path.dirname(os.path.realpath(f"/proc/{pid}/exe"))
    except OSError:
        pass
    if not bin_dir or not os.path.exists(os.path.join(bin_dir, "pg_ctl")):
        major = int(_read_text(os.path.join(data_dir, "PG_VERSION")).strip() or 0)
        bin_dir = server_bin_dir(None, major)
    proc = subprocess.run([os.path.join(bin_dir, "pg_ctl"), "-D", data_dir, "-m", mode, "-w", "-t", str(timeout),
                           "stop"], capture_output=True, text=True, env=_pg_ctl_env(), timeout=timeout + 30,
                          check=False)
    if proc.returncode != 0 and _running_pid(data_dir) is not None:
        raise PostgresError(f"could not stop the server in {data_dir}: {(proc.stderr or proc.stdout).strip()}")
    if sock and os.path.basename(sock).startswith("pgb-sock-"):
        shutil.rmtree(sock, ignore_errors=True)


def _finish_config(data_dir: str, overrides: Dict[str, str], config_path: str, notes: List[str]) -> None:
    """After the promotion: keep only the lasting overrides in postgresql.auto.conf (the recovery
    settings are read only during recovery; no reload needed) and remove the configuration copy
    restore_command used."""
    try:
        write_auto_conf(data_dir, overrides, "recovered by pg-backup pitr (recovery settings removed after promotion)")
    except OSError as exc:
        notes.append(f"could not remove the recovery settings from {AUTO_CONF}: {exc}")
    try:
        os.unlink(config_path)
    except OSError:
        pass


# -- recover -------------------------------------------------------------------------------------

@dataclass
class RecoveryResult:
    data_dir: str
    port: Optional[int]
    backup_id: str
    target: RecoveryTarget
    reached: Optional[Dict[str, Any]]          # {"time", "lsn", "timeline"} once promoted
    phases: Dict[str, float]
    started: bool = False
    socket_dir: Optional[str] = None
    host: Optional[str] = None
    archiving: bool = False
    moved_aside: Optional[str] = None
    tablespaces: List[Dict[str, Any]] = field(default_factory=list)
    stop_record: Optional[str] = None
    log_file: Optional[str] = None
    restored_bytes: int = 0
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["target"] = self.target.to_dict()
        return doc


def _socket_dir_for(data_dir: str) -> str:
    if len(os.path.join(data_dir, ".s.PGSQL.65535")) <= MAX_SOCKET_PATH:
        return data_dir
    path = tempfile.mkdtemp(prefix="pgb-sock-")
    os.chmod(path, 0o700)
    return path


def recover(ctx: Context, target: RecoveryTarget, data_dir: str, *, port: Optional[int] = None, start: bool = True,
            archiving: bool = False, backup_id: Optional[str] = None, progress: Optional[Progress] = None,
            tablespace_map: Optional[Dict[str, str]] = None, timeout: Optional[float] = None) -> RecoveryResult:
    """Restore a base backup into ``data_dir`` and recover to ``target`` (see the module docstring).

    ``port``: the recovered server listens there on 127.0.0.1 and a Unix socket in the data
    directory (a scratch server); None keeps the backup's own settings. ``archiving``: keep the
    backup's archive settings (only for a server that replaces production); otherwise archive_mode is
    off. ``start=False`` stops after writing the files. Raises OutsideWindow (exit 7) for a target
    outside the recoverable window, RefusedError (exit 9) when a server runs in ``data_dir``."""
    progress = progress or ctx.progress
    data_dir = os.path.abspath(data_dir)
    timer = _Timer()
    catalog = _Catalog(ctx)
    manifest, notes = choose_backup(catalog, target, backup_id)
    major = manifest.server_version_num // 10000
    ctx.gpg.require_key(manifest.encryption.fingerprint, f"backup {manifest.backup_id}")
    bin_dir = server_bin_dir(ctx, major)
    if os.geteuid() == 0:
        raise RefusedError("PostgreSQL refuses to run as root", hint="run pg-backup pitr as the postgres OS user")
    stamp = ctx.clock().strftime("%Y%m%dT%H%M%SZ")
    progress.stage(f"pitr: {target.describe()} from base backup {manifest.backup_id} into {data_dir}")
    check_data_dir(data_dir)
    planned = plan_tablespaces(manifest, data_dir, tablespace_map, notes)
    config_obj = next((o.name for o in manifest.objects if o.role == "config"), None)
    names = [BASE_OBJECT] + [t["object"] for t in planned] + ([config_obj] if config_obj else [])
    spool = None
    if ctx.settings.repository.type != "local":
        spool = tempfile.mkdtemp(prefix=f".{os.path.basename(data_dir)}.pgb-download-", dir=os.path.dirname(data_dir))
    restored = 0
    moved = None
    try:
        # Checksums first: nothing is moved or written before every object matches its manifest.
        t0 = time.monotonic()
        storage, keys = _fetch_objects(ctx, manifest, names, spool, progress)
        timer.add("download", time.monotonic() - t0)
        moved = prepare_data_dir(data_dir, stamp)
        if moved:
            notes.append(f"the existing {data_dir} was moved aside to {moved} (nothing was deleted)")
            progress.note(notes[-1])
        make_tablespace_dirs(planned)
        restored += extract_archive(ctx, storage, keys[BASE_OBJECT], manifest, BASE_OBJECT, data_dir, timer, progress)
        for t in planned:
            restored += extract_archive(ctx, storage, keys[t["object"]], manifest, t["object"], t["restored_to"],
                                        timer, progress)
        if not os.path.exists(os.path.join(data_dir, "postgresql.conf")):
            if config_obj is None:
                raise PostgresError(f"backup {manifest.backup_id} has no postgresql.conf (it lived outside the data "
                                    f"directory and this backup did not keep it)",
                                    hint=f"copy a postgresql.conf, pg_hba.conf and pg_ident.conf into {data_dir} and "
                                         f"start it yourself (--no-start), or use a newer backup")
            extract_archive(ctx, storage, keys[config_obj], manifest, config_obj, data_dir, timer, progress)
            adopt_config(data_dir, manifest, notes)
    except PgBackupError as exc:
        if os.path.isdir(data_dir) and os.listdir(data_dir):
            left = f"the incomplete {data_dir} is left for inspection"
            exc.hint = "; ".join(filter(None, [exc.hint, left + (f"; the previous one is at {moved}" if moved else "")]))
        raise
    finally:
        if spool:
            shutil.rmtree(spool, ignore_errors=True)
    os.chmod(data_dir, 0o700)
    rewrite_tablespace_map(data_dir, planned)
    for stale in ("postmaster.pid", "postmaster.opts", "standby.signal"):
        try:
            os.unlink(os.path.join(data_dir, stale))
        except FileNotFoundError:
            pass
    socket_dir = _socket_dir_for(data_dir) if port is not None else None
    config_path = write_recovery_config(ctx, data_dir)
    settings = recovery_settings(ctx, target, data_dir, config_path, port=port, socket_dir=socket_dir,
                                 archiving=archiving)
    write_auto_conf(data_dir, settings, f"recovery of {manifest.backup_id} to {target.describe()}")
    with open(os.path.join(data_dir, "recovery.signal"), "w", encoding="utf-8"):
        pass
    if not archiving:
        notes.append("archiving is off in the recovered server (archive_mode = off): it never archives into the "
                     "production prefix")
    result = RecoveryResult(data_dir=data_dir, port=port, backup_id=manifest.backup_id, target=target, reached=None,
                            phases=timer.phases, socket_dir=socket_dir, host="127.0.0.1" if port is not None else None,
                            archiving=archiving, moved_aside=moved, tablespaces=planned,
                            log_file=_log_path(data_dir), restored_bytes=restored, notes=notes)
    if not start:
        progress.stage(f"pitr: {data_dir} is ready for recovery (not started: start it with pg_ctl -D {data_dir} start)")
        return result
    progress.stage(f"pitr: starting the server to replay WAL up to {target.describe()}")
    start_server(bin_dir, data_dir)
    try:
        reached, conn_info = wait_for_promotion(ctx, data_dir, timer, progress, timeout)
    except BaseException as exc:
        try:
            stop_server(data_dir, mode="immediate")
        except PgBackupError:
            pass
        if isinstance(exc, PostgresError):
            raise _explain_failure(exc, target, manifest, catalog) from None
        raise
    result.started = True
    result.reached = reached
    result.port = conn_info[0]
    result.socket_dir = conn_info[1] or socket_dir
    result.host = conn_info[2] or result.host
    result.stop_record = _log_stop_record(data_dir)
    _finish_config(data_dir, server_overrides(port=port, socket_dir=socket_dir, archiving=archiving), config_path,
                   notes)
    result.phases = timer.phases
    progress.stage(f"pitr: promoted on timeline {reached['timeline']} at {reached['lsn']}"
                   f"{', last commit ' + reached['time'] if reached.get('time') else ''}")
    return result


def _explain_failure(exc: PostgresError, target: RecoveryTarget, manifest: Manifest, catalog: _Catalog) -> PgBackupError:
    text = exc.message
    window = None
    try:
        window = catalog.window()
    except PgBackupError:
        pass
    where = f"; recoverable window: {window.describe()}" if window else ""
    if "before configured recovery target was reached" in text:
        return OutsideWindow(f"recovery from {manifest.backup_id} replayed all archived WAL without reaching "
                             f"{target.describe()}{where}", window,
                             hint="a restore point or transaction from before the backup needs an older --backup-id; "
                                  "a later one is not archived yet (or never existed)")
    if "before consistent recovery point" in text:
        return OutsideWindow(f"{target.describe()} lies before the end of base backup {manifest.backup_id}{where}",
                             window, hint="pass an older --backup-id")
    return exc


# -- the command ---------------------------------------------------------------------------------

def target_from_args(args: Any) -> RecoveryTarget:
    inclusive = not getattr(args, "exclusive", False)
    if getattr(args, "latest", False):
        if not inclusive:
            raise UsageError("--exclusive applies to --target-time, --target-lsn and --target-xid")
        return latest_target()
    if args.target_time:
        return time_target(args.target_time, inclusive)
    if args.target_lsn:
        return lsn_target(args.target_lsn, inclusive)
    if args.target_xid:
        return xid_target(args.target_xid, inclusive)
    if args.target_name:
        if not inclusive:
            raise UsageError("--exclusive does not apply to a restore point (--target-name)")
        return name_target(args.target_name)
    raise UsageError("pitr needs one target: --target-time, --target-lsn, --target-xid, --target-name or --latest")


def parse_tablespace_map(items: Sequence[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for item in items or ():
        old, sep, new = item.partition("=")
        if not sep or not old or not new or not os.path.isabs(new):
            raise UsageError(f"--tablespace-map {item!r}: expected OLD=NEW with NEW an absolute path (OLD: the "
                             f"tablespace's original location, name or oid)")
        out[old] = new
    return out


def run_pitr(ctx: Context, args: Any) -> Dict[str, Any]:
    target = target_from_args(args)
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port")
    mapping = parse_tablespace_map(getattr(args, "tablespace_map", None) or [])
    try:
        result = recover(ctx, target, args.data_dir, port=args.port, start=not args.no_start,
                         archiving=args.keep_archiving, backup_id=args.backup_id, tablespace_map=mapping)
    except OutsideWindow as exc:
        return {"window": exc.window.to_dict() if exc.window else None, "target": target.to_dict(),
                "_exit": exc.exit_code, "_error": str(exc), "_text": []}
    doc = result.to_dict()
    lines = [f"recovered base backup {result.backup_id} into {result.data_dir} "
             f"({human_bytes(result.restored_bytes)} restored) for {target.describe()}"]
    if result.reached:
        r = result.reached
        lines.append(f"  promoted: timeline {r['timeline']}, WAL {r['lsn']}, last commit {r['time'] or 'none replayed'}")
        where = f"port {result.port}" + (f", socket {result.socket_dir}" if result.socket_dir else "")
        lines.append(f"  running ({where}); stop it with pg_ctl -D {result.data_dir} stop")
    else:
        lines.append(f"  not started: pg_ctl -D {result.data_dir} -l {result.log_file} start")
    if result.stop_record:
        lines.append(f"  {result.stop_record}")
    lines.append("  phases: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in result.phases.items()))
    lines += [f"  note: {n}" for n in result.notes]
    doc["_text"] = lines
    return doc
