"""Health of the audit hash chain (pg_backup.audit.chain), bounded so it costs a health run little.

Each run checks the entries written since the last head it verified (kept in the state directory,
``audit-chain-<cluster>.json``: sequence number and SHA-256), at most :data:`MAX_ENTRIES` of them,
and first that the remembered head is still there unchanged. Finding the head costs O(log n)
existence checks, no listing. ``audit_chain`` is a warning on any break (gap, deleted or edited
record); the full check, including records outside the chain, is ``pg-backup audit verify``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from ..audit.chain import Break, ChainReport, cached_head, check_entries, find_head, head_cache_path, read_entry
from ..errors import PgBackupError
from ..manifest import iso
from .checks import Check

MAX_ENTRIES = 500


def _save(path: str, doc: Dict[str, Any]) -> None:
    try:
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)
    except OSError:
        pass  # the next run checks the same entries again


def probe_chain(repo: Any, state_dir: str, now: Any) -> ChainReport:
    path = head_cache_path(state_dir, repo.cluster)
    known = cached_head(state_dir, repo.cluster)
    report = ChainReport()
    prev = None
    if known.get("seq"):
        seq, sha = known["seq"], known.get("sha256")
        entry = read_entry(repo, seq)
        if entry is None:
            report.breaks.append(Break("missing", f"audit chain entry {seq}, verified {known.get('checked_at')}, is "
                                                  f"gone (deleted)", seq=seq))
        elif entry.get("sha256") != sha:
            report.breaks.append(Break("edited", f"audit chain entry {seq} changed since it was verified "
                                                 f"{known.get('checked_at')}", seq=seq))
        prev = (seq, sha)
    start = prev[0] if prev else 0
    head = find_head(repo, start)
    report.head_seq = head
    check_entries(repo, list(range(start + 1, min(head, start + MAX_ENTRIES) + 1)), report, prev)
    if not report.breaks and report.head_sha256:
        _save(path, {"seq": report.head_seq, "sha256": report.head_sha256, "checked_at": iso(now)})
    elif not report.breaks and prev:
        report.head_seq, report.head_sha256 = prev[0], prev[1]
    return report


def audit_chain_checks(repo: Any, state_dir: str, now: Any) -> List[Check]:
    try:
        report = probe_chain(repo, state_dir, now)
    except (PgBackupError, ValueError) as exc:
        return [Check("audit_chain", "unknown", f"the audit chain cannot be read: {exc}")]
    if report.breaks:
        first = report.breaks[0]
        return [Check("audit_chain", "warning",
                      f"the audit chain is broken in {len(report.breaks)} place(s) ({first.kind}: {first.message}): "
                      f"run pg-backup audit verify, restore the objects from the bucket's versions and find who "
                      f"changed them", float(len(report.breaks)), 1, None)]
    if not report.head_seq:
        return [Check("audit_chain", "ok", "no audit chain yet (no audited operation since the chain began)", 0.0)]
    return [Check("audit_chain", "ok", f"audit chain intact through entry {report.head_seq}"
                  + (f" ({report.entries} new checked)" if report.entries else ""), 0.0)]
