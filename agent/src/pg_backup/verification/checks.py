"""What a verification proves in a restored copy: the configured ``verify.checks`` hold, and every
table has the rows counted at backup time (``backup.row_counts``).

Both run against any server the caller names (the configured one holding scratch databases, or a
scratch server recovered from a physical backup) and note what they find in an :class:`Outcome`.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Dict, Optional, Sequence

from ..config import VerifyCheck
from ..postgres.client import Postgres, SnapshotSession
from ..expectations import ExpectationError, parse_expectation
from .outcome import CheckResult, Outcome

CHECK_TIMEOUT_MS = 10 * 60 * 1000


def run_checks(pg: Postgres, checks: Sequence[VerifyCheck], database_map: Dict[str, str],
               outcome: Outcome, *, where: str) -> None:
    """Run each configured check in the restored copy of its database (``database_map``: original ->
    restored name; a database missing from it is skipped with the reason)."""
    for check in checks:
        res = CheckResult(check.name, check.database, check.sql, check.expect)
        outcome.checks.append(res)
        try:
            expectation = parse_expectation(check.expect)
        except ExpectationError as exc:
            res.detail = str(exc)
            outcome.fail(f"check {check.name!r}: {exc}")
            continue
        target = database_map.get(check.database)
        if target is None:
            res.status, res.detail = "skipped", f"database {check.database!r} is not in this backup"
            outcome.notes.append(f"check {check.name!r} skipped: {res.detail}")
            continue
        try:
            res.value = one_value(pg, target, check.sql)
        except CheckQueryError as exc:
            res.detail = str(exc)
            outcome.fail(f"check {check.name!r} on {where}: {exc}")
            continue
        ok, why = expectation.holds(res.value)
        res.status = "passed" if ok else "failed"
        res.detail = why
        if not ok:
            outcome.fail(f"check {check.name!r} does not hold on {where}: {why}")


class CheckQueryError(Exception):
    """A check's query failed, or did not return exactly one value."""


def one_value(pg: Postgres, dbname: str, query: str) -> Any:
    """The single value ``query`` returns in ``dbname`` (dates as ISO text), within CHECK_TIMEOUT_MS."""
    import psycopg

    with pg.connect(dbname) as conn:
        try:
            conn.execute(f"SET statement_timeout = {CHECK_TIMEOUT_MS}")
            cur = conn.execute(query)
            rows = cur.fetchall() if cur.description else []
            width = len(cur.description or [])
        except psycopg.Error as exc:
            raise CheckQueryError(f"query failed: {str(exc).strip().splitlines()[0]}") from None
    if len(rows) != 1 or width != 1:
        raise CheckQueryError(f"query returned {len(rows)} row(s) of {width} column(s); a check needs exactly "
                              f"one value")
    value = rows[0][0]
    if isinstance(value, (dt.date, dt.datetime)):
        value = value.isoformat()
    return value


def compare_row_counts(pg: Postgres, dbname: str, recorded: Optional[Dict[str, int]], outcome: Outcome,
                       label: str) -> Dict[str, Any]:
    """Count every table of the restored database and compare with the counts recorded at backup time."""
    if recorded is None:
        return {"recorded": False, "detail": "row counts were not recorded at backup time (backup.row_counts: "
                                             "false); only the checks ran"}
    session = SnapshotSession(pg, dbname)
    try:
        restored = session.row_counts()
    finally:
        session.close()
    mismatches = []
    for table, expected in sorted(recorded.items()):
        got = restored.get(table)
        if got != expected:
            mismatches.append({"table": table, "recorded": expected, "restored": got})
            outcome.fail(f"database {label!r}: table {table} has {'no table' if got is None else got} rows "
                         f"restored, {expected} recorded at backup time")
    return {"recorded": True, "tables": len(recorded), "rows": sum(recorded.values()), "mismatches": mismatches}
