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
from typing import Any, Dict, List, Optional, Sequence

from .manifest import iso, utcnow
from .repository import Repository
from .storage.base import PutOptions

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


def write_remote(repo: Repository, record: Dict[str, Any], started: dt.datetime) -> Optional[str]:
    """Copy the record into the repository's append-only audit area (never overwriting)."""
    try:
        key = repo.audit_key(started, record["operation"], secrets.token_hex(3))
        repo.storage.put_bytes(key, (json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode(),
                               PutOptions(content_type="application/json"), overwrite=False)
        return None
    except Exception as exc:  # audit must not turn a successful backup into a failure
        return f"cannot copy audit record to the repository: {exc}"


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())
