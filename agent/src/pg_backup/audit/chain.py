"""The audit hash chain: every audit record names the SHA-256 of the cluster's previous one.

Writing (:func:`append`): the chain's entries are small objects ``audit/chain/<seq>.json`` (the
sequence number, 12 digits, in the key), written create-only like every object. A writer finds the
head (the highest entry: a cached hint, then HEAD requests, never a listing), puts the record's
``chain`` field (``seq``, ``prev_sha256``: the SHA-256 of the previous record's bytes), then claims
entry ``seq`` (naming the record's key and SHA-256) and only then writes the record. Two writers of
one cluster (a backup and a refused wal-push, two hosts) cannot both claim one sequence number: the
store answers the second with a conflict and it retries with the next. The chain cannot fork
without a record that :func:`verify` reports.

Verifying (:func:`verify`): one listing of the entries and one per month of records; each entry's
record must exist, hash to the entry's SHA-256, carry the entry's sequence number and name the
previous record's SHA-256. Reported breaks: ``gap`` (entries missing), ``missing`` (a record
deleted), ``edited`` (bytes changed), ``fork`` (a second record claiming a taken number),
``unchained`` (a record outside the chain written after it began: forged, or by an agent without
the chain). Records written before the chain began are accepted and counted
(``unchained, before <date>``).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..errors import NotFoundError, PgBackupError
from ..manifest import iso
from ..repository import Repository
from ..signing import SIGNATURE_SUFFIX, SignatureError
from ..storage.base import ObjectInfo, PutOptions

#: Tries to claim a sequence number before giving up (each conflict means another writer won one).
CLAIM_ATTEMPTS = 20
ENTRY_NAME = re.compile(r"^(\d{12})\.json$")
SIDECAR = re.compile(r"^\d{12}\.json\.")            # an entry's companion object (e.g. its signature)
RECORD_KEY = re.compile(r"^audit/\d{4}/\d{2}/[^/]+\.json$")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode(record: Dict[str, Any]) -> bytes:
    return (json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _put(repo: Repository, key: str, data: bytes) -> None:
    """The one way audit objects reach the repository: create-only (a clash raises FileExistsError),
    after their detached signature ``<key>.sig`` on a host with the cluster's signing key (docs/signing.md)."""
    repo.put_signed(key, data, PutOptions(content_type="application/json"), operational=True)


def read_entry(repo: Repository, seq: int) -> Optional[Dict[str, Any]]:
    """Entry ``seq`` of the chain, None if there is none; an unreadable one is reported as a break."""
    try:
        raw = repo.storage.get_bytes(repo.audit_chain_key(seq))
    except NotFoundError:
        return None
    return parse_entry(raw, seq)


def parse_entry(raw: bytes, seq: int) -> Dict[str, Any]:
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise ValueError(f"audit chain entry {seq} is not a JSON object")
    return doc


def head_cache_path(state_dir: str, cluster: str) -> str:
    """The head ``health`` last verified (``{"seq", "sha256", "checked_at"}``); writers start from it."""
    return os.path.join(state_dir, f"audit-chain-{cluster}.json")


def cached_head(state_dir: Optional[str], cluster: str) -> Dict[str, Any]:
    if not state_dir:
        return {}
    try:
        with open(head_cache_path(state_dir, cluster), encoding="utf-8") as fh:
            doc = json.load(fh)
        return doc if isinstance(doc, dict) and isinstance(doc.get("seq"), int) else {}
    except (OSError, ValueError):
        return {}


def find_head(repo: Repository, hint: int = 0) -> int:
    """The highest sequence number in use (0: no chain yet), from ``hint`` (a number known to have been in
    use, or 0) with O(log n) existence checks: doubling steps up, then a binary search down. Without a
    hint and without entry 1 (a new chain, or entry 1 deleted) one listing of the entries decides."""
    exists = lambda seq: repo.storage.exists(repo.audit_chain_key(seq))  # noqa: E731
    low = max(hint, 0)
    if low == 0 and not exists(1):
        prefix = repo.audit_chain_prefix
        names = (ENTRY_NAME.match(info.key[len(prefix):]) for info in repo.storage.list(prefix))
        return max((int(m.group(1)) for m in names if m), default=0)
    step = 1
    while exists(low + step):
        low, step = low + step, step * 2
    high = low + step                      # not in use; everything above low up to high is unknown
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if exists(mid) else (low, mid)
    return low


def append(repo: Repository, record: Dict[str, Any], key: str, hint: int = 0) -> int:
    """Chain ``record`` (adds its ``chain`` field) and store it under ``key``; returns its sequence number."""
    head = find_head(repo, hint)
    for _ in range(CLAIM_ATTEMPTS):
        prev = read_entry(repo, head) if head else None
        seq = head + 1
        record["chain"] = {"seq": seq, "prev_sha256": prev["sha256"] if prev else None}
        data = encode(record)
        entry = {"seq": seq, "record": key[len(repo.root):], "sha256": sha256(data),
                 "prev_sha256": record["chain"]["prev_sha256"], "operation": record.get("operation"),
                 "started_at": record.get("started_at"), "finished_at": record.get("finished_at")}
        try:
            _put(repo, repo.audit_chain_key(seq), encode(entry))
        except FileExistsError:            # another writer took this number: follow it
            head = find_head(repo, seq)
            continue
        _put(repo, key, data)
        return seq
    raise PgBackupError(f"could not claim an audit chain entry after {CLAIM_ATTEMPTS} attempts (other writers "
                        f"kept taking them)")


@dataclass
class Break:
    kind: str                   # gap | missing | edited | fork | unchained | unreadable | forged
    message: str
    seq: Optional[int] = None
    key: Optional[str] = None


@dataclass
class ChainReport:
    entries: int = 0
    first_seq: Optional[int] = None
    head_seq: int = 0
    head_sha256: Optional[str] = None
    began: Optional[str] = None                 # when the first entry was stored: the chain's start
    unchained_before: int = 0                   # records written before the chain began (accepted)
    unsigned_before: int = 0                    # entries written before signing was enabled (accepted)
    breaks: List[Break] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        return {"entries": self.entries, "first_seq": self.first_seq, "head_seq": self.head_seq,
                "head_sha256": self.head_sha256, "began": self.began,
                "unchained_before": self.unchained_before, "unsigned_before": self.unsigned_before,
                "breaks": [{k: v for k, v in vars(b).items() if v is not None} for b in self.breaks]}


def _entries(repo: Repository, report: ChainReport) -> List[int]:
    seqs = []
    for info in repo.storage.list(repo.audit_chain_prefix):
        m = ENTRY_NAME.match(info.key[len(repo.audit_chain_prefix):])
        if m:
            seqs.append(int(m.group(1)))
        elif not SIDECAR.match(info.key[len(repo.audit_chain_prefix):]):
            report.breaks.append(Break("unreadable", f"{info.key} in the audit chain is not a chain entry",
                                       key=info.key))
    return sorted(seqs)


def _since_index(repo: Repository, seqs: List[int], since: Optional[dt.datetime]) -> int:
    """Index of the first entry finished at or after ``since`` (binary search over the entries' times: entries
    are claimed when their operation ends, so the end times follow the chain's order, up to clock skew)."""
    if since is None:
        return 0
    stamp = iso(since)
    low, high = 0, len(seqs)
    while low < high:
        mid = (low + high) // 2
        entry = read_entry(repo, seqs[mid]) or {}
        if str(entry.get("finished_at") or entry.get("started_at") or "") < stamp:
            low = mid + 1
        else:
            high = mid
    return low


def check_entries(repo: Repository, seqs: List[int], report: ChainReport,
                  prev: Optional[Tuple[int, Optional[str]]] = None) -> Dict[str, int]:
    """Walk ``seqs`` (ascending) after ``prev`` (sequence number and record SHA-256 already verified, or
    None to start at the first): add breaks to ``report``; return record key -> sequence number."""
    chained: Dict[str, int] = {}
    signed: Optional[bool] = None
    for seq in seqs:
        where = f"audit chain entry {seq}"
        if prev is not None and seq != prev[0] + 1:
            report.breaks.append(Break("gap", f"audit chain entries {prev[0] + 1}..{seq - 1} are missing (deleted)",
                                       seq=prev[0] + 1))
        try:
            raw = repo.storage.get_bytes(repo.audit_chain_key(seq))
            entry = parse_entry(raw, seq)
        except NotFoundError:
            report.breaks.append(Break("gap", f"{where} is missing (deleted)", seq=seq))
            continue
        except (ValueError, PgBackupError) as exc:
            report.breaks.append(Break("unreadable", f"{where} cannot be read: {exc}", seq=seq))
            prev = (seq, None)
            continue
        if signed is None:                 # does the chain before this walk carry signatures already?
            signed = prev is not None and repo.storage.exists(repo.audit_chain_key(prev[0]) + SIGNATURE_SUFFIX)
        signed = _check_signature(repo, seq, raw, signed, report)
        report.entries += 1
        report.first_seq = seq if report.first_seq is None else report.first_seq
        key = repo.root + str(entry.get("record"))
        chained[key] = seq
        try:
            data: Optional[bytes] = repo.storage.get_bytes(key)
        except NotFoundError:
            data = None
        if data is None:
            report.breaks.append(Break("missing", f"{where}: its record {key} is missing (deleted)", seq=seq, key=key))
        elif sha256(data) != entry.get("sha256"):
            report.breaks.append(Break("edited", f"{where}: record {key} no longer hashes to the SHA-256 the chain "
                                                 f"holds (edited)", seq=seq, key=key))
        else:
            _check_record_link(data, entry, seq, key, report)
        if prev is not None and prev[1] is not None and entry.get("prev_sha256") != prev[1]:
            report.breaks.append(Break("edited", f"{where} names a previous record other than entry {prev[0]}'s "
                                                 f"(entry {prev[0]} or its record was replaced)", seq=seq, key=key))
        prev = (seq, entry.get("sha256"))
        report.head_seq, report.head_sha256 = seq, entry.get("sha256")
    return chained


def _check_signature(repo: Repository, seq: int, raw: bytes, signed: bool, report: ChainReport) -> bool:
    """Judge entry ``seq``'s signature (docs/signing.md; it covers its record through the SHA-256 it
    holds): a bad or untrusted one is a ``forged`` break; an unsigned one too once an earlier entry was
    signed, else it predates signing (counted in ``unsigned_before``). Returns whether signing has begun."""
    key = repo.audit_chain_key(seq)
    try:
        return repo.record_signer(key, raw, f"audit chain entry {key}", operational=True) is not None or signed
    except SignatureError as exc:
        if signed or repo.storage.exists(key + SIGNATURE_SUFFIX):
            report.breaks.append(Break("forged", f"{exc.message}: forged, or written by someone holding only "
                                                 f"write access to the bucket", seq=seq, key=key))
            return signed
        report.unsigned_before += 1
        return False


def _check_record_link(data: bytes, entry: Dict[str, Any], seq: int, key: str, report: ChainReport) -> None:
    try:
        link = json.loads(data).get("chain") or {}
    except (ValueError, AttributeError):
        link = {}
    if link.get("seq") != seq or link.get("prev_sha256") != entry.get("prev_sha256"):
        report.breaks.append(Break("edited", f"audit chain entry {seq}: record {key} does not carry the chain "
                                             f"link its entry names", seq=seq, key=key))


def _records(repo: Repository, since: Optional[dt.datetime], now: dt.datetime) -> Iterator[ObjectInfo]:
    if since is None:
        for info in repo.storage.list(repo.audit_records_prefix):
            if RECORD_KEY.match(info.key[len(repo.root):]):
                yield info
        return
    year, month = since.year, since.month
    while (year, month) <= (now.year, now.month):
        yield from (info for info in repo.storage.list(repo.audit_month_prefix(year, month))
                    if info.key.endswith(".json"))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def verify(repo: Repository, now: dt.datetime, since: Optional[dt.datetime] = None) -> ChainReport:
    """Check the chain (from the first entry finished at or after ``since``) and every record of the period."""
    report = ChainReport()
    seqs = _entries(repo, report)
    began = repo.storage.head(repo.audit_chain_key(seqs[0])) if seqs else None
    if seqs and seqs[0] != 1:
        report.breaks.append(Break("gap", f"audit chain entries 1..{seqs[0] - 1} are missing (deleted)", seq=1))
    report.began = iso(began.modified) if began else None
    start = _since_index(repo, seqs, since)
    prev = None
    if start > 0:                                  # the entry before the period anchors its first link
        before = read_entry(repo, seqs[start - 1]) or {}
        prev = (seqs[start - 1], before.get("sha256"))
    chained = check_entries(repo, seqs[start:], report, prev)
    claimed = set(chained.values())
    low = iso(since) if since else ""
    for info in _records(repo, since, now):
        if info.key not in chained:
            _unchained(repo, info, claimed, began.modified if began else None, low, report)
    return report


def _unchained(repo: Repository, info: ObjectInfo, claimed: set, began: Optional[dt.datetime], low: str,
               report: ChainReport) -> None:
    """A record no walked entry names: before the chain (accepted), before the period, or a break. When it
    was stored is the store's time (the object's modification time), not what the record says."""
    try:
        doc = json.loads(repo.storage.get_bytes(info.key))
    except (ValueError, PgBackupError):
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    link = doc.get("chain") if isinstance(doc.get("chain"), dict) else None
    if low and str(doc.get("finished_at") or doc.get("started_at") or "") < low and link is not None \
            and link.get("seq") not in claimed:
        return                                     # chained before the period verified
    if link is not None and link.get("seq") in claimed:
        report.breaks.append(Break("fork", f"record {info.key} claims audit chain entry {link.get('seq')}, which "
                                           f"names another record (forged, or a second writer bypassed the chain)",
                                   seq=link.get("seq"), key=info.key))
    elif link is None and (began is None or info.modified < began):
        report.unchained_before += 1
    else:
        report.breaks.append(Break("unchained", f"record {info.key} is not in the audit chain"
                                                + (f" (it claims entry {link.get('seq')})" if link else "")
                                                + " although stored after the chain began: forged, or written by "
                                                  "an agent without the chain", key=info.key))
