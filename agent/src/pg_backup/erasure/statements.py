"""The checks an erasure's statements pass before they run in production (pure: no database needed).

Statements are parsed by PostgreSQL's own parser (``pglast`` wraps libpg_query, the server's grammar
as a library), not by regular expressions: a string literal holding ``;`` or ``DROP``, a writable
CTE or a three-part name are what they are, not what a pattern guesses. An erasure must replay the
same way years later on an old copy, so the rules are strict:

- only ``DELETE`` and ``UPDATE`` at the top level (no DDL, no transaction control, no ``SET``, no
  ``SELECT`` even with side effects, no ``INSERT``/``MERGE`` anywhere, no ``SELECT INTO``);
- no ``RETURNING`` (it would print the erased data), no parameters (``$1``);
- no ``CURRENT_DATE``/``CURRENT_USER``-style values: a replay next year must pick the same rows;
- a table named with a database part must name the erasure's database;
- the functions called are checked against the live server by :mod:`.live` (immutable only).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from ..errors import UsageError

ALLOWED_TOP = {"DeleteStmt": "DELETE", "UpdateStmt": "UPDATE"}
#: Statement nodes that may appear inside an allowed statement (subqueries, writable CTEs of the same kinds).
ALLOWED_NESTED = {"SelectStmt", "DeleteStmt", "UpdateStmt"}
MAX_STATEMENTS = 100
_KIND_NAMES = {"TransactionStmt": "transaction control (the erasure runs in one transaction of its own)",
               "VariableSetStmt": "SET", "InsertStmt": "INSERT", "MergeStmt": "MERGE", "SelectStmt": "SELECT"}


@dataclass
class CheckedStatement:
    sql: str                                   # the statement's own text, as the operator wrote it
    kind: str                                  # "DELETE" or "UPDATE"
    relation: Tuple[Optional[str], str]        # (schema or None, table) of the target
    functions: List[Tuple[Optional[str], str]] = field(default_factory=list)   # (schema or None, name) called

    @property
    def relation_text(self) -> str:
        schema, table = self.relation
        return f"{schema}.{table}" if schema else table


def _pglast():  # type: ignore[no-untyped-def]
    """Imported when needed: only ``erasure add`` parses SQL."""
    try:
        import pglast
        from pglast.parser import ParseError
    except ImportError:  # pragma: no cover - a broken install
        raise UsageError("the SQL parser pglast is not installed", hint="reinstall pg-backup with its dependencies") \
            from None
    return pglast, ParseError


def _names(nodes: Sequence[object]) -> List[str]:
    return [getattr(n, "sval", None) or "" for n in nodes]


def _walk(node: object, found: List[object]) -> None:
    """Every pglast node below ``node`` (depth first), into ``found``."""
    if isinstance(node, (list, tuple)):
        for item in node:
            _walk(item, found)
        return
    slots = getattr(type(node), "__slots__", None)
    if slots is None or type(node).__module__ != "pglast.ast":
        return
    found.append(node)
    for name in slots:
        _walk(getattr(node, name, None), found)


def check_statements(texts: Sequence[str], database: str) -> List[CheckedStatement]:
    """Parse and check ``texts`` (each may hold several statements); UsageError naming the first problem."""
    pglast, parse_error = _pglast()
    result: List[CheckedStatement] = []
    for n_text, text in enumerate(texts, start=1):
        try:
            raws = pglast.parse_sql(text)
        except parse_error as exc:
            raise UsageError(f"--sql #{n_text} does not parse as PostgreSQL: {exc.args[0]}; nothing was run") from None
        if not raws:
            raise UsageError(f"--sql #{n_text} holds no statement")
        for raw in raws:
            end = raw.stmt_location + raw.stmt_len if raw.stmt_len else len(text)
            sql = text[raw.stmt_location:end].strip().rstrip(";").strip()
            result.append(_check_one(raw.stmt, sql, database, f"statement {len(result) + 1}"))
    if len(result) > MAX_STATEMENTS:
        raise UsageError(f"{len(result)} statements in one erasure; at most {MAX_STATEMENTS}",
                         hint="split the request into several erasures")
    return result


def _refuse(label: str, why: str) -> UsageError:
    # The statement is named by its position, never quoted: it names data subjects, and errors reach logs.
    return UsageError(f"refused {label}: {why}; nothing was run or recorded",
                      hint="an erasure is DELETE or UPDATE statements only (see docs/erasure.md)")


def _check_one(stmt: object, sql: str, database: str, label: str) -> CheckedStatement:
    kind = ALLOWED_TOP.get(type(stmt).__name__)
    if kind is None:
        what = _KIND_NAMES.get(type(stmt).__name__) or type(stmt).__name__.replace("Stmt", "").upper()
        raise _refuse(label, f"{what} is not a data-changing DELETE or UPDATE statement")
    nodes: List[object] = []
    _walk(stmt, nodes)
    functions: List[Tuple[Optional[str], str]] = []
    for node in nodes:
        name = type(node).__name__
        if name.endswith("Stmt") and name not in ALLOWED_NESTED:
            raise _refuse(label, f"it contains {name.replace('Stmt', '').upper()} (only DELETE and UPDATE change data "
                               f"in an erasure)")
        if name == "SelectStmt" and getattr(node, "intoClause", None) is not None:
            raise _refuse(label, "SELECT INTO creates a table")
        if name == "ReturningClause" or (name in ("DeleteStmt", "UpdateStmt") and getattr(node, "returningList", None)):
            raise _refuse(label, "RETURNING would print the erased data")
        if name == "ParamRef":
            raise _refuse(label, "parameters ($1) have no value in a recorded erasure")
        if name == "SQLValueFunction":
            raise _refuse(label, "CURRENT_DATE, CURRENT_USER and the like give another answer on every replay")
        if name == "RangeVar" and getattr(node, "catalogname", None) not in (None, database):
            raise _refuse(label, f"it names database {node.catalogname!r}, not {database!r}")  # type: ignore[attr-defined]
        if name == "FuncCall":
            parts = _names(node.funcname)  # type: ignore[attr-defined]
            functions.append((parts[-2] if len(parts) > 1 else None, parts[-1]))
    relation = stmt.relation  # type: ignore[attr-defined]
    return CheckedStatement(sql=sql, kind=kind, relation=(relation.schemaname, relation.relname),
                            functions=sorted(set(functions), key=lambda f: (f[0] or "", f[1])))
