"""Re-applying the erasure register to restored data, before anyone is given it.

Every path that brings old data back (restore, pitr, verify --restore, drill, the extract playbook
through restore) calls :func:`reapply` once the data is in place and before it hands it over. Every
record of a restored database is applied, oldest first, in one transaction per database, with the
search_path it was recorded with. The register is read again after each round until no new record
appears, so an erasure recorded while the restore ran is applied too.

A record that fails (its table is missing from that old schema, a statement errors) rolls back its
database's transaction and raises :class:`ErasureReplayError` (exit 9: nothing is handed over),
unless the operator named it with ``--skip-erasure ID --skip-reason TEXT``: a skip is written to the
audit trail (local and repository) the moment it is used.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..audit import AuditRecord, write_local, write_remote
from ..context import Context
from ..errors import NotFoundError, PgBackupError, RefusedError, UsageError
from ..postgres.client import Postgres
from ..postgres.server import stop_server
from ..repository import ERASURE_ID
from .register import ErasureRecord, load_register

MAX_ROUNDS = 20


class ErasureReplayError(RefusedError):
    """A recorded erasure could not be re-applied: the restored data is not handed over (exit 9)."""


def parse_skips(ids: Sequence[str], reason: Optional[str]) -> Dict[str, str]:
    """``--skip-erasure ID`` (repeatable) and ``--skip-reason TEXT`` as {id: reason}."""
    if not ids:
        if reason:
            raise UsageError("--skip-reason applies to --skip-erasure ID; name the record to skip")
        return {}
    if not (reason or "").strip():
        raise UsageError("--skip-erasure needs --skip-reason TEXT: every skipped erasure is audited with its reason")
    bad = [i for i in ids if not ERASURE_ID.match(i)]
    if bad:
        raise UsageError(f"--skip-erasure {bad[0]!r} is not an erasure id", hint="see 'pg-backup erasure list'")
    return {i: str(reason).strip() for i in ids}


def check_skips(ctx: Context, skips: Mapping[str, str]) -> None:
    """Before any work: every skipped id must be in the register (a typo must not pass silently)."""
    if not skips:
        return
    known = set(ctx.repo.erasure_ids())
    missing = [i for i in skips if i not in known]
    if missing:
        raise NotFoundError(f"--skip-erasure {missing[0]}: no such record in {ctx.repo.location}; nothing was changed",
                            hint="see 'pg-backup erasure list'")


def _audit_skip(ctx: Context, record: ErasureRecord, reason: str, what: str) -> None:
    audit = AuditRecord("erasure-skip", [], ctx.cluster, clock=ctx.clock)
    doc = audit.finish(result="success", exit_code=0, erasure_id=record.erasure_id, database=record.database,
                       request_id=record.request_id, skip_reason=reason, target=what)
    for warning in (write_local(ctx.settings.audit_log_path, doc), write_remote(ctx.repo, doc, audit.started)):
        if warning:
            ctx.progress.warn(warning)


def first_line(exc: BaseException) -> str:
    """The first line of an error (a server's primary message, without DETAIL lines that may quote data)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _apply(pg: Postgres, target_db: str, records: List[ErasureRecord], *, selective: bool,
           what: str) -> List[Dict[str, Any]]:
    """Every record of one database in one transaction; ErasureReplayError (rolled back) on a failure."""
    applied: List[Dict[str, Any]] = []
    with pg.connect(target_db, autocommit=False) as conn:
        try:
            for record in records:
                entry: Dict[str, Any] = {"erasure_id": record.erasure_id, "database": record.database,
                                         "target_database": target_db, "request_id": record.request_id,
                                         "rows": 0, "deleted": {}, "not_restored": []}
                path = ", ".join('"' + s.replace('"', '""') + '"' for s in record.search_path)
                conn.execute("SELECT set_config('search_path', %s, true)", (path,))
                for n, st in enumerate(record.statements, start=1):
                    table = st.get("table") or ""
                    if selective and table and \
                            conn.execute("SELECT to_regclass(%s) IS NULL", (table,)).fetchone()[0]:
                        entry["not_restored"].append(table)
                        continue
                    try:
                        rows = conn.execute(st["sql"]).rowcount
                    except Exception as exc:  # psycopg.Error: roll back everything of this database
                        raise ErasureReplayError(
                            f"erasure {record.erasure_id} could not be re-applied to database {target_db!r} "
                            f"({what}): statement {n} ({st.get('kind')} on {table or '?'}) failed: "
                            f"{first_line(exc)}; nothing was handed over",
                            hint=f"fix the cause, or hand the data over without this record with --skip-erasure "
                                 f"{record.erasure_id} --skip-reason TEXT (audited)") from None
                    entry["rows"] += max(rows, 0)
                    if st.get("kind") == "DELETE" and table:
                        entry["deleted"][table] = entry["deleted"].get(table, 0) + max(rows, 0)
                applied.append(entry)
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
    return applied


def reapply(ctx: Context, pg: Postgres, databases: Mapping[str, str], *, what: str, selective: bool = False,
            skips: Optional[Mapping[str, str]] = None, report_missing: bool = False) -> Dict[str, Any]:
    """Apply every recorded erasure of ``databases`` ({recorded database: database on ``pg``}) and
    return what was done: ``applied`` (with rows per table), ``skipped`` (with the reasons),
    ``not_applicable`` (``report_missing``: records of databases the restored server lacks).
    ``selective``: only some tables were restored; a statement whose table is absent is noted, not run."""
    skips = dict(skips or {})
    doc: Dict[str, Any] = {"applied": [], "skipped": [], "not_applicable": [], "records_read": 0}
    seen: set = set()
    for _round in range(MAX_ROUNDS):
        new = [i for i in ctx.repo.erasure_ids() if i not in seen]
        if not new:
            break
        seen.update(new)
        records = load_register(ctx.repo, ctx.gpg, new)
        doc["records_read"] += len(records)
        by_db: Dict[str, List[ErasureRecord]] = {}
        for record in records:
            target = databases.get(record.database)
            if target is None:
                if report_missing:
                    doc["not_applicable"].append({"erasure_id": record.erasure_id, "database": record.database,
                                                  "why": "the database is not in the restored data"})
            elif record.erasure_id in skips:
                reason = skips[record.erasure_id]
                _audit_skip(ctx, record, reason, what)
                doc["skipped"].append({"erasure_id": record.erasure_id, "database": record.database, "reason": reason})
                ctx.progress.warn(f"erasure {record.erasure_id} NOT applied to {what} (--skip-erasure: {reason})")
            else:
                by_db.setdefault(target, []).append(record)
        for target_db, recs in by_db.items():
            ctx.progress.stage(f"erasure register: re-applying {len(recs)} record(s) to database {target_db!r}")
            doc["applied"] += _apply(pg, target_db, recs, selective=selective, what=what)
    return doc


def reapply_after_recovery(ctx: Context, pg: Postgres, data_dir: str, *,
                           skips: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """The register applied to a promoted server (every database it has) before it is reported ready;
    on a failure the server is stopped, so nothing is handed over, and the error is raised."""
    check_skips(ctx, skips or {})
    try:
        names = [d.name for d in pg.databases()]
        return reapply(ctx, pg, {n: n for n in names}, what=f"the server recovered into {data_dir}", skips=skips,
                       report_missing=True)
    except PgBackupError as exc:
        stop_server(data_dir, mode="fast")
        exc.hint = "; ".join(filter(None, [exc.hint, f"the recovered server was stopped; its data directory {data_dir} "
                                                     f"still holds the rows the erasure removes"]))
        raise


def not_started_note(ctx: Context) -> Optional[str]:
    """For a recovery left unstarted: the register cannot be applied to a server that does not run."""
    count = len(ctx.repo.erasure_ids())
    if not count:
        return None
    return (f"the erasure register ({count} record(s)) is NOT applied: the server was not started; start it and apply "
            f"the register before anyone uses it (pg-backup erasure replay, docs/erasure.md)")


def summary_line(doc: Optional[Dict[str, Any]]) -> str:
    """One line for text output: which records were applied, skipped or did not apply."""
    if not doc:
        return "erasure register: not applied"
    if doc.get("deferred"):
        return (f"erasure register: {len(doc['pending'])} record(s) NOT applied yet (--defer-erasure; marker "
                f"{doc['marker']}): start the server, then run: {doc['command']}")
    parts = [f"{len(doc['applied'])} applied" + (f" ({', '.join(a['erasure_id'] for a in doc['applied'])})"
                                                 if doc["applied"] else "")]
    if doc["skipped"]:
        parts.append(f"{len(doc['skipped'])} SKIPPED ({', '.join(s['erasure_id'] for s in doc['skipped'])})")
    if doc["not_applicable"]:
        parts.append(f"{len(doc['not_applicable'])} for databases not restored")
    return "erasure register: " + ", ".join(parts)


def expected_row_counts(recorded: Optional[Dict[str, int]], doc: Optional[Dict[str, Any]],
                        database: str) -> Optional[Dict[str, int]]:
    """Row counts recorded at backup time less the rows the re-applied erasures deleted (so a
    verification compares like with like)."""
    if not recorded or not doc:
        return recorded
    expected = dict(recorded)
    for entry in doc.get("applied", []):
        if entry.get("database") != database:
            continue
        for table, rows in entry.get("deleted", {}).items():
            if table in expected:
                expected[table] -= rows
    return expected
