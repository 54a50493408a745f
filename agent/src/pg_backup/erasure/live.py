"""``erasure add``: run the checked statements in production, in one transaction, and record them
once they committed.

Order matters. The statements commit first and the record is written after: the register never
holds an erasure that production does not. If the write fails after the commit, the error says so
plainly; running the same command again is safe (a DELETE of rows already gone deletes nothing) and
writes the record. Everything that can fail before the commit (the key, the storage, the database,
the statements' form and functions) is checked before anything runs.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

from .. import __version__
from ..audit import os_user
from ..context import Context
from ..errors import NotFoundError, PgBackupError, PostgresError, RefusedError, UsageError
from ..manifest import iso
from ..postgres.client import qualified_name
from .register import ErasureRecord, new_erasure_id, store_record
from .replay import first_line
from .statements import CheckedStatement, check_statements

_VOLATILITY = {"v": "volatile", "s": "stable", "i": "immutable"}
_FUNCTIONS_SQL = ("SELECT p.oid::regprocedure::text, p.provolatile FROM pg_proc p"
                  " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = %s"
                  " AND (n.nspname = %s OR (%s::text IS NULL AND n.nspname = ANY (current_schemas(true))))")
_RELATION_SQL = ("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                 " WHERE c.oid = to_regclass(CASE WHEN %s::text IS NULL THEN quote_ident(%s)"
                 " ELSE quote_ident(%s) || '.' || quote_ident(%s) END)")


class ErasureNotRecorded(PgBackupError):
    """The statements committed in production but the record could not be written (exit code of the cause)."""

    def __init__(self, message: str, *, exit_code: int, hint: Optional[str] = None):
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


@dataclass
class Recorded:
    record: ErasureRecord
    key: str
    warnings: List[str] = field(default_factory=list)


def _check_functions(conn: Any, statements: Sequence[CheckedStatement]) -> None:
    """Only immutable functions: a replay years later must pick the same rows (now(), random() and
    dblink_exec() do not)."""
    for n, st in enumerate(statements, start=1):
        for schema, name in st.functions:
            for signature, volatility in conn.execute(_FUNCTIONS_SQL, (name, schema, schema)).fetchall():
                if volatility != "i":
                    raise UsageError(f"refused statement {n} ({st.kind} on {st.relation_text}): it calls {signature}, "
                                     f"which is "
                                     f"{_VOLATILITY.get(volatility, volatility)}; nothing was run or recorded",
                                     hint="an erasure may call only immutable functions, so that every replay "
                                          "changes the same rows (write the values out instead)")


def _resolve_tables(conn: Any, database: str, statements: Sequence[CheckedStatement]) -> List[str]:
    tables = []
    for st in statements:
        schema, table = st.relation
        row = conn.execute(_RELATION_SQL, (schema, table, schema, table)).fetchone()
        if row is None:
            raise NotFoundError(f"table {st.relation_text} does not exist in database {database!r}; nothing was run "
                                f"or recorded")
        tables.append(qualified_name(row[0], row[1]))
    return tables


def record_erasure(ctx: Context, *, database: str, sql: Sequence[str], request_id: Optional[str],
                   reason: Optional[str]) -> Recorded:
    """Check, run (one transaction) and record one erasure; see the module docstring for the order."""
    if not sql:
        raise UsageError("give the erasure's statements with --sql (repeatable)")
    statements = check_statements(sql, database)
    ctx.gpg.encryption_fingerprint()      # no key, no erasure: it could not be recorded after the commit
    ctx.storage.check()
    info = ctx.pg.server_info()
    if info.in_recovery:
        raise RefusedError(f"the server at {ctx.settings.postgres.host}:{ctx.settings.postgres.port} is a standby; "
                           f"nothing was run or recorded", hint="record the erasure on the primary")
    if not ctx.pg.database_exists(database):
        raise NotFoundError(f"database {database!r} does not exist on this server; nothing was run or recorded")
    ctx.progress.stage(f"erasure: {len(statements)} statement(s) in database {database!r}, one transaction")
    conn = ctx.pg.connect(database, autocommit=False)
    try:
        search_path = list(conn.execute("SELECT current_schemas(false)").fetchone()[0])
        _check_functions(conn, statements)
        tables = _resolve_tables(conn, database, statements)
        done = []
        for n, (st, table) in enumerate(zip(statements, tables), start=1):
            try:
                rows = conn.execute(st.sql).rowcount
            except Exception as exc:  # psycopg.Error: one server line, no data values from DETAIL
                conn.rollback()
                raise PostgresError(f"statement {n} ({st.kind} on {table}) failed in database {database!r}: "
                                    f"{first_line(exc)}; the transaction was rolled back and nothing was "
                                    f"recorded") from None
            done.append({"sql": st.sql, "kind": st.kind, "table": table, "rows": rows})
        xid, committed_at = conn.execute("SELECT pg_current_xact_id()::text, clock_timestamp()").fetchone()
        try:
            conn.commit()
        except Exception as exc:
            raise PostgresError(f"COMMIT failed in database {database!r}: {first_line(exc)}; nothing was "
                                f"recorded") from None
    finally:
        conn.close()
    try:
        record = ErasureRecord(
            erasure_id=new_erasure_id(ctx.clock(), ctx.repo.erasure_ids()), recorded_at=iso(ctx.clock()),
            cluster=ctx.cluster, database=database, statements=done, search_path=search_path, os_user=os_user(),
            host=socket.gethostname(), request_id=request_id, reason=reason, committed_at=iso(committed_at),
            transaction_id=xid, system_identifier=info.system_identifier, server_version_num=info.version_num,
            agent_version=__version__)
        key = store_record(ctx.repo, ctx.gpg, record)
    except Exception as exc:
        code = exc.exit_code if isinstance(exc, PgBackupError) else 1
        raise ErasureNotRecorded(
            f"the statements COMMITTED in database {database!r} ({sum(d['rows'] for d in done)} row(s)), but the "
            f"erasure record could not be written: {exc}", exit_code=code,
            hint="fix the cause and run the same 'pg-backup erasure add' again: the statements change nothing the "
                 "second time and the record is then written") from None
    warnings = [f"statement {n} ({d['kind']} on {d['table']}) changed no rows: check its WHERE clause"
                for n, d in enumerate(done, start=1) if d["rows"] == 0]
    return Recorded(record, key, warnings)
