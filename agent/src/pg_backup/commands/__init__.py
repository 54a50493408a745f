"""The agent's commands: one module per command (or family), each a function that takes the
command's options as keyword arguments and returns a :class:`CommandResult`.

Commands use services (wal/, recovery/, verification/, postgres/, the repository, ...) and never
each other; only :mod:`pg_backup.cli` imports them. The CLI turns a result into text, the JSON
document (``schema_version``) and the exit code, so no service returns CLI-only keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import EXIT_OK


@dataclass
class CommandResult:
    """What a command hands the CLI.

    ``fields``: the command's own keys of the JSON document (after ``schema_version``, ``command``,
    ``ok`` and ``exit_code``); the audit record also reads ``backup_id``, ``bytes`` and
    ``target_database`` from them. ``text``: the lines printed without ``--json``. ``raw``: printed
    as is in place of text and JSON (Nagios and Prometheus formats). ``exit_code``/``error``: a
    failure the command reports without raising (the document is still printed, the error goes to
    stderr). ``audit_result``: the audit record's result when it is neither success nor failure
    (e.g. ``skipped``)."""

    fields: Dict[str, Any] = field(default_factory=dict)
    text: List[str] = field(default_factory=list)
    exit_code: int = EXIT_OK
    error: Optional[str] = None
    raw: Optional[str] = None
    audit_result: Optional[str] = None

