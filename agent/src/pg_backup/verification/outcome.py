"""What a restore verification or a drill found, and the one way its verdict becomes an exit code.

Both ``verify --restore`` and ``drill`` fill an :class:`Outcome` as they go (a check that does not
hold, a row count that differs, a target missed) and keep the error that stopped them, if any.
:func:`exit_and_error` is the single mapping from that outcome to the command's exit code and error
line: a verification that could not finish exits with its error's own code, one that finished and
found a failure exits ``EXIT_INTEGRITY``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import EXIT_INTEGRITY, EXIT_OK


@dataclass
class CheckResult:
    name: str
    database: str
    sql: str
    expect: str
    status: str = "failed"          # passed, failed or skipped
    value: Any = None
    detail: str = ""


@dataclass
class Outcome:
    backup_id: str
    kind: str
    tier: str
    started_at: str
    databases: List[Dict[str, Any]] = field(default_factory=list)
    checks: List[CheckResult] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    kept: List[str] = field(default_factory=list)
    error: Optional[str] = None
    error_exit_code: Optional[int] = None

    @property
    def passed(self) -> bool:
        return not self.failures and self.error is None

    def fail(self, message: str) -> None:
        self.failures.append(message)


def exit_and_error(outcome: Outcome, *, unfinished: str, failed: str, unfinished_note: str = "",
                   every_failure: bool = False) -> Tuple[int, Optional[str]]:
    """(exit code, error line) of an outcome: ``EXIT_OK`` and None when it passed.

    Could not finish (the restore or recovery raised): that error's exit code (``EXIT_INTEGRITY``
    when it had none) and ``<unfinished>: <error><unfinished_note>``. Finished with failures:
    ``EXIT_INTEGRITY`` and ``<failed>: <the first failure> (and N more)``, or every failure joined by
    ``; `` with ``every_failure``."""
    if outcome.error is not None:
        return outcome.error_exit_code or EXIT_INTEGRITY, f"{unfinished}: {outcome.error}{unfinished_note}"
    if not outcome.passed:
        if every_failure:
            shown = "; ".join(outcome.failures)
        else:
            more = f" (and {len(outcome.failures) - 1} more)" if len(outcome.failures) > 1 else ""
            shown = f"{outcome.failures[0]}{more}"
        return EXIT_INTEGRITY, f"{failed}: {shown}"
    return EXIT_OK, None


def jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return jsonable(dataclasses.asdict(value))
    return str(value)
