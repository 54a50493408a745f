"""The WAL archive of one cluster in storage (DESIGN §2, §5): reading it, its timelines and gaps, and
which WAL files retention may delete.

Layout (the keys come from :class:`pg_backup.repository.Repository`)::

    <cluster>/wal/archive.json                      identity: system identifier, segment size (create-if-absent)
    <cluster>/wal/<TLI>/<FILENAME>.zst.gpg          every file PostgreSQL hands over: segments, .partial,
                                                    .backup and <TLI>.history, never overwritten
    <cluster>/wal/conflicts/<ts>-<name>-<rand>.json a push that met different content (or another cluster)

Each WAL object carries metadata (S3 user metadata; an extended attribute or a sidecar locally):
``pgb-sha256``/``pgb-size`` of the *plaintext* file (ciphertext is not deterministic, and a host in
public-key mode cannot decrypt, so duplicates are recognised by this hash), ``pgb-key`` (the key
fingerprint needed to decrypt) and, for ``.history`` files, ``pgb-history``: the timeline's ancestry
as ``parent@lsn`` pairs, so gaps can be followed across timeline switches without decrypting.

Everything here is importable without boto3, psycopg or zstandard.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .names import (DEFAULT_SEGMENT_SIZE, format_lsn, history_file_name, name_of_object, parse_lsn, parse_wal_name,
                    segment_name, sort_key)

# Metadata keys on WAL objects (S3 lowercases user metadata keys; keep them lowercase).
META_SHA256 = "pgb-sha256"
META_SIZE = "pgb-size"
META_KEY = "pgb-key"
META_HISTORY = "pgb-history"
META_SYSID = "pgb-sysid"


@dataclass(frozen=True)
class WalEntry:
    name: str
    key: str
    size: int
    modified: dt.datetime
    timeline: int
    kind: str                       # "segment" | "partial" | "backup" | "history"
    segno: Optional[int]


@dataclass(frozen=True)
class WalConflict:
    """A recorded push that was refused: different content under an archived name, or another cluster."""

    key: str
    name: str
    reason: str
    recorded_at: str
    host: str = ""
    detail: Dict[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        where = f" from {self.host}" if self.host else ""
        return f"{self.name}: {self.reason}{where} at {self.recorded_at} (record {self.key})"


# -- timeline history files ------------------------------------------------------------------------

def parse_history(text: str) -> List[Tuple[int, int]]:
    """A timeline history file's entries: (parent timeline, switch position) in order.

    Each line is ``<parentTLI>\\t<switchpoint>\\t<reason>``; comments and blank lines are skipped."""
    entries: List[Tuple[int, int]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"malformed timeline history line {line!r}")
        entries.append((int(parts[0]), parse_lsn(parts[1])))
    return entries


def encode_history_meta(entries: Sequence[Tuple[int, int]], limit: int = 1500) -> str:
    """``1@0/3000000;2@0/5000000`` (most recent entries kept if it would exceed ``limit`` characters;
    a leading ``~`` then marks the ancestry as truncated)."""
    parts = [f"{tli}@{format_lsn(pos)}" for tli, pos in entries]
    text = ";".join(parts)
    while len(text) > limit and parts:
        parts.pop(0)
        text = "~" + ";".join(parts)
    return text


def decode_history_meta(text: str) -> Tuple[List[Tuple[int, int]], bool]:
    """(entries, complete) from :func:`encode_history_meta` output."""
    truncated = text.startswith("~")
    entries = []
    for part in text.lstrip("~").split(";"):
        if part:
            tli, _, lsn = part.partition("@")
            entries.append((int(tli), parse_lsn(lsn)))
    return entries, not truncated


# -- the archive -----------------------------------------------------------------------------------

class WalArchive:
    """Read access to ``<cluster>/wal/`` (writes are in :mod:`pg_backup.wal.push`). Its keys are the
    repository's (``repo``: a :class:`pg_backup.repository.Repository`, whose ``wal_key`` and friends
    name every object; not imported here, so the archive sits beside the repository, not above it).
    Get it from ``Context.wal_archive``."""

    def __init__(self, repo: Any):
        self.repo = repo
        self.storage = repo.storage
        self.cluster = repo.cluster
        self.root = repo.wal_prefix
        self._identity: Optional[dict] = None
        self._identity_read = False
        self._raw_identity = b""
        #: archive.json has no signature (written before signing was enabled), see :meth:`identity`.
        self.unsigned = False
        #: Conflict records :meth:`conflicts` left out: no trusted signature (one line each, naming the object).
        self.untrusted_conflicts: List[str] = []

    # keys ----------------------------------------------------------------------------------------
    def key_for(self, name: str) -> str:
        return self.repo.wal_key(name)

    @property
    def identity_key(self) -> str:
        return self.repo.wal_identity_key

    @property
    def conflicts_prefix(self) -> str:
        return self.repo.wal_conflicts_prefix

    def name_of(self, key: str) -> Optional[str]:
        """The WAL file name stored under ``key``, or None if the key is not a WAL object."""
        if not key.startswith(self.root):
            return None
        return name_of_object(key[len(self.root):])

    # identity ------------------------------------------------------------------------------------
    def identity(self, *, fresh: bool = False) -> Optional[dict]:
        """archive.json as a dict, or None if nothing was ever pushed. Read once (it never changes once
        written); ``fresh`` reads it again (after losing the race to create it).

        Its detached signature (``archive.json.sig``) is checked like a manifest's (docs/signing.md): a
        forged identity is refused (exit 4). One written before signing was enabled (no ``.sig``) is
        accepted on the host holding the cluster's signing key (``unsigned`` is then set, and wal-push
        adds the signature once it has matched the identity to its own cluster: :meth:`adopt_identity`),
        elsewhere only while signing is not required (``--allow-unsigned``)."""
        if fresh:
            self._identity_read = False
        if not self._identity_read:
            from ..errors import IntegrityError, NotFoundError
            from ..signing import SignatureError

            try:
                raw = self.storage.get_bytes(self.identity_key)
            except NotFoundError:
                return None
            self.unsigned = False
            try:
                self.unsigned = self.repo.record_signer(self.identity_key, raw, f"WAL archive identity "
                                                                               f"{self.identity_key}") is None
            except SignatureError:
                if self.storage.exists(self.identity_key + ".sig") or not self.repo.signs:
                    raise
                self.unsigned = True           # written before signing: this host may adopt it (migration)
            self._raw_identity = raw
            try:
                data = json.loads(raw)
                if not isinstance(data, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                raise IntegrityError(f"{self.identity_key} is not valid JSON ({exc})",
                                     hint="inspect it; it names the cluster this WAL archive belongs to") from None
            self._identity, self._identity_read = data, True
        return self._identity

    def adopt_identity(self) -> bool:
        """Sign an identity written before signing was enabled (``archive.json.sig``, create-only; the
        identity itself is never rewritten). Only for the cluster whose identity it is: wal-push calls it
        after matching the system identifier. True when a signature was added."""
        if not (self.identity() is not None and self.unsigned and self.repo.signs):
            return False
        try:
            self.repo.sign_existing(self.identity_key, self._raw_identity)
        except FileExistsError:                # another host migrated it first: judge that signature
            self.identity(fresh=True)
            return False
        self.unsigned = False
        return True

    def segment_size(self) -> int:
        ident = self.identity() or {}
        size = ident.get("wal_segment_size")
        return int(size) if isinstance(size, int) and size > 0 else DEFAULT_SEGMENT_SIZE

    # listing -------------------------------------------------------------------------------------
    def entries(self, timeline: Optional[int] = None, segment_size: Optional[int] = None) -> List[WalEntry]:
        """Every WAL object (sorted by PostgreSQL's archiving order), optionally of one timeline."""
        size = segment_size or self.segment_size()
        prefix = self.root if timeline is None else f"{self.root}{timeline:08X}/"
        found: List[Tuple[Tuple, WalEntry]] = []
        for info in self.storage.list(prefix):
            name = self.name_of(info.key)
            if name is None:
                continue
            w = parse_wal_name(name)
            found.append((sort_key(w), WalEntry(name, info.key, info.size, info.modified, w.timeline, w.kind,
                                                w.segno(size))))
        found.sort(key=lambda pair: pair[0])
        return [entry for _, entry in found]

    def has(self, name: str) -> bool:
        return self.storage.head(self.key_for(name)) is not None

    def newest_segment(self) -> Optional[WalEntry]:
        """The complete segment furthest along (highest timeline, then position)."""
        segments = [e for e in self.entries() if e.kind == "segment"]
        if not segments:
            return None
        return max(segments, key=lambda e: (e.timeline, e.segno or 0))

    # timelines and gaps --------------------------------------------------------------------------
    def timeline_history(self, tli: int) -> Optional[Tuple[List[Tuple[int, int]], bool]]:
        """Ancestry of ``tli`` from its .history object's metadata: ([(parent, switch_pos), ...], complete).
        None when the archive has no history file for it (timeline 1 never has one)."""
        info = self.storage.head(self.key_for(history_file_name(tli)))
        if info is None:
            return None
        meta = (getattr(info, "metadata", None) or {}).get(META_HISTORY)
        if meta is None:
            return None
        return decode_history_meta(meta)

    def gaps(self, start_name: Optional[str] = None,
             segment_size: Optional[int] = None) -> List[Tuple[str, str]]:
        """Missing segment ranges ``(first, last)`` (inclusive) that recovery from ``start_name`` (default:
        the oldest archived segment on the newest timeline's ancestry) to the newest archived segment of
        the newest timeline would need. Timeline switches are followed through the newest timeline's
        .history metadata; on each timeline of the path only the part before the next switch is needed.
        Without history information each timeline is checked on its own from its first segment."""
        size = segment_size or self.segment_size()
        entries = [e for e in self.entries(segment_size=size) if e.kind == "segment"]
        have: Dict[int, set] = {}
        for e in entries:
            have.setdefault(e.timeline, set()).add(e.segno)
        start: Optional[Tuple[int, int]] = None
        if start_name:
            w = parse_wal_name(start_name)
            start = (w.timeline, w.segno(size) or 0)
        if not have:
            return []
        newest_tli = max(have)
        if start is not None:
            newest_tli = max(newest_tli, start[0])
        path = self._timeline_path(newest_tli, size)
        if path is None:
            return self._gaps_per_timeline(have, start, size)
        # path: [(tli, first_segno or None, end_segno or None)], oldest first; end is exclusive.
        result: List[Tuple[str, str]] = []
        if start is not None:
            # Begin on the start's timeline (it must be on the path; otherwise check it alone).
            tlis = [p[0] for p in path]
            if start[0] not in tlis:
                return self._gaps_per_timeline(have, start, size)
            path = path[tlis.index(start[0]):]
            path[0] = (path[0][0], start[1], path[0][2])
        else:
            # Begin at the oldest segment on the path.
            while path and not have.get(path[0][0]):
                path = path[1:]
            if not path:
                return []
            first = min(have[path[0][0]])
            path[0] = (path[0][0], first, path[0][2])
        for i, (tli, lo, end) in enumerate(path):
            segs = have.get(tli, set())
            if lo is None:
                lo = min(segs) if segs else None
                if lo is None:
                    continue
            if end is None:  # the newest timeline: up to its newest segment
                hi = max(segs) if segs else lo - 1
            else:
                hi = end - 1
            result.extend(_missing_ranges(tli, lo, hi, segs, size))
            if i + 1 < len(path) and path[i + 1][1] is None:
                # The next timeline starts at the segment holding the switch point.
                nxt = path[i + 1]
                path[i + 1] = (nxt[0], end if end is not None else hi + 1, nxt[2])
        return result

    def _timeline_path(self, newest_tli: int, size: int) -> Optional[List[Tuple[int, Optional[int], Optional[int]]]]:
        """[(tli, None, end_segno_exclusive)] from the oldest ancestor to ``newest_tli``; None if unknown."""
        if newest_tli == 1:
            return [(1, None, None)]
        hist = self.timeline_history(newest_tli)
        if hist is None:
            return None
        entries, complete = hist
        if not complete:
            return None
        path: List[Tuple[int, Optional[int], Optional[int]]] = []
        for parent, switch in entries:
            # The parent timeline is needed up to (not including) the segment holding the switch point;
            # that segment is read from the child timeline. A switch exactly on a segment boundary
            # needs nothing of that segment from the parent either.
            path.append((parent, None, switch // size))
        path.append((newest_tli, None, None))
        return path

    def _gaps_per_timeline(self, have: Dict[int, set], start: Optional[Tuple[int, int]],
                           size: int) -> List[Tuple[str, str]]:
        result: List[Tuple[str, str]] = []
        for tli in sorted(have):
            segs = have[tli]
            if start is not None and tli < start[0]:
                continue
            lo = start[1] if (start is not None and tli == start[0]) else min(segs)
            result.extend(_missing_ranges(tli, lo, max(segs), segs, size))
        return result

    # conflicts -----------------------------------------------------------------------------------
    def conflicts(self) -> List[WalConflict]:
        """Recorded refused pushes (critical in health until an operator removes the record). A record
        without a trusted signature (docs/signing.md) is left out and named in ``untrusted_conflicts``."""
        from ..errors import NotFoundError
        from ..signing import SignatureError

        found: List[WalConflict] = []
        self.untrusted_conflicts = []
        for info in self.storage.list(self.conflicts_prefix):
            if not info.key.endswith(".json"):
                continue
            try:
                data = json.loads(self.repo.read_signed(info.key, f"WAL conflict record {info.key}"))
            except NotFoundError:
                continue
            except SignatureError as exc:
                self.untrusted_conflicts.append(f"ignoring {exc.message}")
                continue
            except ValueError:
                data = {"name": info.key.rsplit("/", 1)[-1], "reason": "unreadable conflict record"}
            found.append(WalConflict(info.key, str(data.get("name", "?")), str(data.get("reason", "?")),
                                     str(data.get("recorded_at", "")), str(data.get("host", "")),
                                     {k: v for k, v in data.items()
                                      if k not in ("name", "reason", "recorded_at", "host")}))
        return found


def _missing_ranges(tli: int, lo: int, hi: int, have: Iterable[Optional[int]], size: int) -> List[Tuple[str, str]]:
    present = {s for s in have if s is not None}
    result: List[Tuple[str, str]] = []
    run_start: Optional[int] = None
    for segno in range(lo, hi + 1):
        if segno in present:
            if run_start is not None:
                result.append((segment_name(tli, run_start, size), segment_name(tli, segno - 1, size)))
                run_start = None
        elif run_start is None:
            run_start = segno
    if run_start is not None:
        result.append((segment_name(tli, run_start, size), segment_name(tli, hi, size)))
    return result


# -- WAL retention (DESIGN §6), a pure function of manifests -----------------------------------------

@dataclass(frozen=True)
class PhysicalRef:
    """What WAL retention needs of one retained physical backup's manifest."""

    backup_id: str
    started: dt.datetime
    timeline: Optional[int]
    start_wal: Optional[str]
    stop_wal: Optional[str]


@dataclass
class WalRetentionPlan:
    delete: List[WalEntry] = field(default_factory=list)
    keep: int = 0
    anchor: Optional[str] = None            # backup id whose start_wal bounds the PITR window
    keep_from: Optional[str] = None         # oldest segment kept on the anchor's timeline and after
    reason: str = ""


def plan_wal_retention(entries: Sequence[WalEntry], backups: Sequence[PhysicalRef], wal_hours: int,
                       now: dt.datetime, segment_size: int = DEFAULT_SEGMENT_SIZE) -> WalRetentionPlan:
    """Which WAL files prune may delete, from the retained physical backups alone (never file times).

    Kept: everything at or after the ``start_wal`` of the *anchor* -- the newest retained physical
    backup that started at or before ``now - wal_hours`` (else the oldest retained one) -- on its
    timeline and later ones; each retained backup's ``start_wal``..``stop_wal`` range on its timeline;
    every .history file. Without a retained physical backup nothing is deleted."""
    plan = WalRetentionPlan()
    if not backups:
        plan.keep = len(entries)
        plan.reason = "no physical backup is retained: WAL is kept (nothing to anchor a recovery window to)"
        return plan
    unusable = [b.backup_id for b in backups if not (b.start_wal and b.stop_wal)]
    if unusable:
        plan.keep = len(entries)
        plan.reason = (f"physical backup(s) {', '.join(unusable)} have no start_wal/stop_wal in their manifest: "
                       f"WAL is kept")
        return plan
    ordered = sorted(backups, key=lambda b: (b.started, b.backup_id))
    window_start = now - dt.timedelta(hours=wal_hours)
    before = [b for b in ordered if b.started <= window_start]
    anchor = before[-1] if before else ordered[0]
    a = parse_wal_name(anchor.start_wal or "")
    a_tli, a_seg = a.timeline, a.segno(segment_size) or 0
    ranges = []
    for b in ordered:
        s, e = parse_wal_name(b.start_wal or ""), parse_wal_name(b.stop_wal or "")
        ranges.append((s.timeline, e.timeline, s.segno(segment_size) or 0, e.segno(segment_size) or 0))
    plan.anchor = anchor.backup_id
    plan.keep_from = segment_name(a_tli, a_seg, segment_size)
    for entry in entries:
        if entry.kind == "history" or entry.segno is None:
            plan.keep += 1
            continue
        keep = entry.timeline >= a_tli and entry.segno >= a_seg
        if not keep:
            for s_tli, e_tli, lo, hi in ranges:
                if s_tli <= entry.timeline <= e_tli and lo <= entry.segno <= hi:
                    keep = True
                    break
        if keep:
            plan.keep += 1
        else:
            plan.delete.append(entry)
    when = "started before the WAL window" if before else "oldest retained (none started before the WAL window)"
    plan.reason = (f"keeping WAL from {plan.keep_from} (start of {anchor.backup_id}, {when}; window "
                   f"{wal_hours} h), each retained physical backup's range and every .history file")
    return plan
