"""What the repository keeps of verifications and drills, and the one reader of each.

Every restore verification (and every drill, as a verification of the newest backup) is recorded
under ``<cluster>/audit/verifications/`` with its time, backup and verdict in the object name, so
``health`` finds the last successful verification from one listing (no reads). Each drill keeps its
reports under ``<cluster>/audit/drills/<drill id>/``; the history of drills is read back from the
``report.json`` objects. The keys come from :class:`~pg_backup.repository.Repository`.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from ..errors import NotFoundError, PgBackupError
from ..manifest import iso
from ..repository import VERIFICATION_NAME, Repository
from ..signing import SignatureError
from ..storage.base import PutOptions
from .outcome import Outcome

#: Drill reports read for the history (table and chart of a new report).
HISTORY_LIMIT = 200


# -- verifications ---------------------------------------------------------------------------------

def outcome_document(outcome: Outcome, started: dt.datetime, finished: dt.datetime, seconds: float) -> Dict[str, Any]:
    """The record of one ``verify --restore`` (also its JSON result, with the record's key added)."""
    return {
        "backup_id": outcome.backup_id, "kind": outcome.kind, "tier": outcome.tier,
        "passed": outcome.passed, "result": "passed" if outcome.passed else "failed",
        "started_at": iso(started), "finished_at": iso(finished), "duration_seconds": round(seconds, 3),
        "databases": outcome.databases, "checks": [dataclasses.asdict(c) for c in outcome.checks],
        "failures": outcome.failures, "restore_error": outcome.error, "notes": outcome.notes, "kept": outcome.kept,
    }


def record_verification(repo: Repository, document: Dict[str, Any], when: dt.datetime,
                        warn: Callable[[str], None]) -> Optional[str]:
    """Store one verification's outcome in the repository; returns its key, or None with ``warn``."""
    key = repo.verification_key(when, document["backup_id"], bool(document["passed"]))
    try:
        repo.put_signed(key, (json.dumps(document, indent=1, sort_keys=True, default=str) + "\n").encode(),
                        PutOptions(content_type="application/json"), operational=True)
        return key
    except Exception as exc:  # the verification happened; failing to note it must not hide its result
        warn(f"cannot record the verification in the repository ({key}): {exc}")
        return None


@dataclass
class VerificationRecord:
    key: str
    when: dt.datetime
    backup_id: str
    passed: bool


def verification_history(repo: Repository, warn: Optional[Callable[[str], None]] = None, *,
                         newest: bool = False) -> List[VerificationRecord]:
    """Every recorded verification, oldest first, from object names alone (one listing, no reads) when
    no signing key is configured. Otherwise each record's signature is judged (docs/signing.md) and one
    without a trusted signature is left out, named to ``warn``; ``newest`` judges only from the newest
    record back to the newest trusted passed one (what ``health`` needs) and returns just those."""
    prefix = repo.verifications_prefix
    found = []
    for info in repo.storage.list(prefix):
        m = VERIFICATION_NAME.match(info.key[len(prefix):])
        if not m:
            continue
        when = dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
        found.append(VerificationRecord(info.key, when, m.group(2), m.group(4) == "passed"))
    found.sort(key=lambda r: (r.when, r.key))
    return _trusted(repo, found, warn, newest) if repo.verifies else found


def _trusted(repo: Repository, found: List[VerificationRecord], warn: Optional[Callable[[str], None]],
             newest: bool) -> List[VerificationRecord]:
    kept: List[VerificationRecord] = []
    for record in reversed(found):
        try:
            repo.read_signed(record.key, f"verification record {record.key}", operational=True)
        except SignatureError as exc:
            if warn:
                warn(f"ignoring {exc.message}")
            continue
        except NotFoundError:           # deleted since the listing
            continue
        kept.append(record)
        if newest and record.passed:
            break
    return kept[::-1]


# -- drill reports ---------------------------------------------------------------------------------

def _drill_report_keys(repo: Repository) -> List[str]:
    """Every ``report.json`` of a drill, oldest first (drill ids are timestamps)."""
    return sorted(o.key for o in repo.storage.list(repo.drills_prefix) if o.key.endswith("/report.json"))


def _read_report(repo: Repository, key: str) -> Any:
    return json.loads(repo.read_signed(key, f"drill report {key}", operational=True))


def drill_history(repo: Repository, warn: Callable[[str], None]) -> List[Dict[str, Any]]:
    """The newest HISTORY_LIMIT drill reports, oldest first; an unreadable one is skipped with ``warn``."""
    reports = []
    for key in _drill_report_keys(repo)[-HISTORY_LIMIT:]:
        try:
            doc = _read_report(repo, key)
        except SignatureError as exc:
            warn(f"ignoring {exc.message}")
            continue
        except (PgBackupError, ValueError) as exc:
            warn(f"skipping unreadable drill report {key}: {exc}")
            continue
        if isinstance(doc, dict) and doc.get("drill_id"):
            reports.append(doc)
    reports.sort(key=lambda r: (r.get("started_at") or "", r["drill_id"]))
    return reports


def newest_drill(repo: Repository, warn: Optional[Callable[[str], None]] = None) -> Optional[Dict[str, Any]]:
    """The newest drill's report with a trusted signature (an untrusted one is named to ``warn``), or
    None: no drill yet, or one that cannot be read (health then shows no drill metrics rather than failing)."""
    try:
        for key in reversed(_drill_report_keys(repo)):
            try:
                doc = _read_report(repo, key)
            except SignatureError as exc:
                if warn:
                    warn(f"ignoring {exc.message}")
                continue
            return doc if isinstance(doc, dict) else None
        return None
    except (PgBackupError, ValueError):
        return None
