"""The audit trail: one JSON record per operation, kept locally and copied to the repository.

Records never contain secrets: arguments are recorded as the operator typed them, and the agent
takes no secret on its command line in the first place.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import secrets
import socket
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..manifest import iso, utcnow
from ..repository import Repository

AUDIT_SCHEMA_VERSION = 1


class AuditRecord:
    def __init__(self, operation: str, argv: List[str], cluster: Optional[str], clock: Any = utcnow):
        self.clock = clock
        self.started = clock()
        self._t0 = time.monotonic()
        self.data: Dict[str, Any] = {
            "schema_version": AUDIT_SCHEMA_VERSION, "operation": operation, "cluster": cluster,
            "host": socket.gethostname(), "os_user": os_user(), "pid": os.getpid(),
            "arguments": list(argv), "started_at": iso(self.started),
        }

    def finish(self, *, result: str, exit_code: int, error: Optional[str] = None, **details: Any) -> Dict[str, Any]:
        self.data.update({"finished_at": iso(self.clock()), "duration_seconds": round(time.monotonic() - self._t0, 3),
                          "result": result, "exit_code": exit_code})
        if error:
            self.data["error"] = error
        self.data.update({k: v for k, v in details.items() if v is not None})
        return self.data


def redact_arguments(argv: List[str], flags: Sequence[str]) -> List[str]:
    """``argv`` with the values of ``flags`` replaced: an erasure's statements and reason name data
    subjects, and audit records are kept in plaintext (the encrypted erasure record holds them)."""
    out: List[str] = []
    hide = False
    for arg in argv:
        name, eq, _ = arg.partition("=")
        if hide:
            out.append("<redacted>")
            hide = False
        elif name in flags and eq:
            out.append(f"{name}=<redacted>")
        else:
            out.append(arg)
            hide = arg in flags
    return out


def write_local(path: str, record: Dict[str, Any]) -> Optional[str]:
    """Append to the local JSON-lines log (0600). Returns a warning instead of failing the operation."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
        return None
    except OSError as exc:
        return f"cannot write local audit log {path}: {exc.strerror}"


def write_remote(repo: Repository, record: Dict[str, Any], started: dt.datetime,
                 state_dir: Optional[str] = None) -> Optional[str]:
    """Copy the record into the repository's append-only audit area (never overwriting), as the next
    link of the cluster's hash chain (:mod:`.chain`: adds the record's ``chain`` field). The head search
    starts at the newest entry this process wrote or ``health`` verified (``state_dir``)."""
    from .chain import append, cached_head

    try:
        key = repo.audit_key(started, record["operation"], secrets.token_hex(3))
        hint = max(_CHAIN_HINT.get(repo.cluster, 0), cached_head(state_dir, repo.cluster).get("seq", 0))
        _CHAIN_HINT[repo.cluster] = append(repo, record, key, hint)
        return None
    except Exception as exc:  # audit must not turn a successful backup into a failure
        return f"cannot copy audit record to the repository: {exc}"


#: The newest chain entry this process wrote, per cluster: the next write starts its head search there.
_CHAIN_HINT: Dict[str, int] = {}


def read_remote(repo: Repository, since: dt.datetime, until: dt.datetime,
                warn: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """The repository's audit records of operations started in [since, until), oldest first: one listing
    per month of the period, and only the records whose key's time is inside it are read. A record
    without a trusted signature (docs/signing.md) is left out, named to ``warn``."""
    from ..signing import SignatureError

    since, until = since.astimezone(dt.timezone.utc), until.astimezone(dt.timezone.utc)
    low, high = f"{since:%Y%m%dT%H%M%S}Z", f"{until:%Y%m%dT%H%M%S}Z"
    records: List[Dict[str, Any]] = []
    year, month = since.year, since.month
    while (year, month) <= (until.year, until.month):
        prefix = repo.audit_month_prefix(year, month)
        for info in repo.storage.list(prefix):
            stamp = info.key[len(prefix):].split("-", 1)[0]
            if low <= stamp < high and info.key.endswith(".json"):
                try:
                    doc = json.loads(repo.read_signed(info.key, f"audit record {info.key}", operational=True))
                except SignatureError as exc:
                    if warn:
                        warn(f"ignoring {exc.message}")
                    continue
                except ValueError:
                    doc = {"operation": "unreadable", "error": f"{info.key} is not JSON"}
                if isinstance(doc, dict):
                    records.append(dict(doc, key=info.key))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    records.sort(key=lambda r: (str(r.get("started_at") or ""), r["key"]))
    return records


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())
