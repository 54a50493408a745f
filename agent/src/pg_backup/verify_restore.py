"""``verify --restore``: prove a backup restores, by restoring it.

Logical backups: every database of the backup is restored (the ordinary restore code, checksums
first) into a scratch database with a unique name (``pgb_verify_<backup time>_<random>_<n>``) on the
configured server; the original databases are never touched. Physical backups: ``pitr.recover``
restores the base backup (and the WAL it needs to be consistent) into a scratch data directory under
``verify.scratch_dir`` and starts it on ``verify.scratch_port`` with archiving off.

Then: row counts are compared with those recorded at backup time (``backup.row_counts``), and every
``verify.checks`` query runs in the restored copy of its database. Scratch databases and data
directories are removed afterwards (kept when ``verify.keep_failed`` is set and the verification
failed). The outcome goes to the audit log (by the CLI) and to the repository catalog under
``<cluster>/audit/verifications/`` so ``health`` can find the last successful verification from
storage alone.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import random
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from .config import VerifyCheck
from .context import Context
from .errors import EXIT_INTEGRITY, NotFoundError, PgBackupError, UsageError
from .manifest import Manifest, iso
from .postgres import Postgres, SnapshotSession
from .storage.base import PutOptions, Storage
from .verify_checks import ExpectationError, parse_expectation

VERIFICATIONS_DIR = "audit/verifications/"
_RECORD_RE = re.compile(r"^(\d{8}T\d{6}Z)-(.+)-([0-9a-f]{6})-(passed|failed)\.json$")
CHECK_TIMEOUT_MS = 10 * 60 * 1000


# -- choosing the backup ---------------------------------------------------------------------------

def select_backup(ctx: Context, backup_id: Optional[str], *, tier: Optional[str] = None, random_pick: bool = False,
                  kind: Optional[str] = None) -> Manifest:
    """The named backup, or the newest (``random_pick``: a random one) of the tier and kind asked for."""
    if backup_id:
        if tier or random_pick:
            raise UsageError("name a BACKUP_ID or choose with --tier/--random, not both")
        manifest = ctx.repo.load_manifest(backup_id)
        if kind and manifest.kind != kind:
            raise UsageError(f"backup {backup_id} is a {manifest.kind} backup, not {kind}")
        return manifest
    candidates = [m for m in ctx.repo.manifests()
                  if (not tier or m.tier == tier) and (not kind or m.kind == kind)]
    if not candidates:
        what = " ".join(filter(None, [tier, kind])) or "committed"
        raise NotFoundError(f"no {what} backup in {ctx.repo.location} to verify",
                            hint="see 'pg-backup list'")
    if random_pick:
        return random.SystemRandom().choice(candidates)
    return candidates[-1]  # manifests() is oldest first


# -- outcome ---------------------------------------------------------------------------------------

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
            res.value = _one_value(pg, target, check.sql)
        except _CheckQueryError as exc:
            res.detail = str(exc)
            outcome.fail(f"check {check.name!r} on {where}: {exc}")
            continue
        ok, why = expectation.holds(res.value)
        res.status = "passed" if ok else "failed"
        res.detail = why
        if not ok:
            outcome.fail(f"check {check.name!r} does not hold on {where}: {why}")


class _CheckQueryError(Exception):
    pass


def _one_value(pg: Postgres, dbname: str, query: str) -> Any:
    import psycopg

    with pg.connect(dbname) as conn:
        try:
            conn.execute(f"SET statement_timeout = {CHECK_TIMEOUT_MS}")
            cur = conn.execute(query)
            rows = cur.fetchall() if cur.description else []
            width = len(cur.description or [])
        except psycopg.Error as exc:
            raise _CheckQueryError(f"query failed: {str(exc).strip().splitlines()[0]}") from None
    if len(rows) != 1 or width != 1:
        raise _CheckQueryError(f"query returned {len(rows)} row(s) of {width} column(s); a check needs exactly "
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


# -- logical ---------------------------------------------------------------------------------------

def _scratch_name(manifest: Manifest, token: str, n: int) -> str:
    stamp = manifest.backup_id.split("-")[0].lower()
    return f"pgb_verify_{stamp}_{token}_{n}"


def _verify_logical(ctx: Context, manifest: Manifest, outcome: Outcome) -> None:
    from .restore import _drop_database, run_restore

    if not manifest.databases:
        outcome.notes.append("the backup holds no database (globals only): nothing to restore")
    token = secrets.token_hex(3)
    created: List[str] = []
    database_map: Dict[str, str] = {}
    major = ctx.pg.server_info().major
    try:
        for n, db in enumerate(manifest.databases, start=1):
            scratch = _scratch_name(manifest, token, n)
            entry: Dict[str, Any] = {"name": db.name, "scratch_database": scratch, "restored": False}
            outcome.databases.append(entry)
            ctx.progress.stage(f"verify {manifest.backup_id}: restoring database {db.name!r} into scratch "
                               f"database {scratch!r}")
            created.append(scratch)
            res = run_restore(ctx, manifest.backup_id, database=db.name, target=scratch, no_owner=True)
            entry.update(restored=True, restore_seconds=res["duration_seconds"])
            database_map[db.name] = scratch
            entry["row_counts"] = compare_row_counts(ctx.pg, scratch, db.row_counts, outcome, db.name)
            if not entry["row_counts"]["recorded"]:
                outcome.notes.append(f"database {db.name!r}: {entry['row_counts']['detail']}")
        outcome.notes.append("restored without ownership and privileges (pg_restore --no-owner --no-acl): roles "
                             "are globals, which a scratch restore on this server leaves alone")
        ctx.progress.stage(f"verify {manifest.backup_id}: running {len(ctx.settings.verify.checks)} check(s)")
        run_checks(ctx.pg, ctx.settings.verify.checks, database_map, outcome, where="the restored copy")
    finally:
        keep = ctx.settings.verify.keep_failed and not outcome.passed
        for name in created:
            if keep:
                outcome.kept.append(f"database {name}")
                continue
            # run_restore already dropped a database it failed to fill; IF EXISTS makes this safe.
            _drop_database(ctx, name, major)


# -- physical --------------------------------------------------------------------------------------

def scratch_postgres(ctx: Context, host: str, port: int) -> Postgres:
    """A client for a scratch server restored by pitr.recover (same role and client settings)."""
    return Postgres(dataclasses.replace(ctx.settings.postgres, host=host, port=port))


def _verify_physical(ctx: Context, manifest: Manifest, outcome: Outcome) -> None:
    from . import pitr

    root = ctx.scratch_root()
    data_dir = os.path.join(root, f"verify-{manifest.backup_id}-{secrets.token_hex(3)}")
    port = ctx.settings.verify.scratch_port
    started_server = False
    try:
        ctx.progress.stage(f"verify {manifest.backup_id}: restoring the base backup into {data_dir} "
                           f"(port {port}, archiving off)")
        result = pitr.recover(ctx, pitr.consistent_target(), data_dir, port=port, start=True, archiving=False,
                              backup_id=manifest.backup_id)
        started_server = True
        outcome.databases.append({"data_dir": data_dir, "port": result.port, "restored": True,
                                  "reached": jsonable(result.reached),
                                  "phases": {k: round(v, 3) for k, v in (result.phases or {}).items()}})
        pg = scratch_postgres(ctx, pitr.socket_host(result), result.port)
        names = _database_names(pg)
        recorded = {d.name: d.row_counts for d in manifest.databases}
        if any(v is not None for v in recorded.values()):
            for name, counts in recorded.items():
                if name in names:
                    compare_row_counts(pg, name, counts, outcome, name)
        else:
            outcome.notes.append("row counts are not recorded for physical backups; only the checks ran")
        run_checks(pg, ctx.settings.verify.checks, {n: n for n in names}, outcome, where="the restored server")
    finally:
        if ctx.settings.verify.keep_failed and not outcome.passed:
            outcome.kept.append(f"data directory {data_dir}" + (f" (server running on port {port})"
                                                                 if started_server else ""))
        else:
            remove_scratch_server(data_dir)


def remove_scratch_server(data_dir: str) -> None:
    """Stop a scratch server (if it runs) and remove its data directory."""
    from . import pitr

    if os.path.exists(os.path.join(data_dir, "postmaster.pid")):
        try:
            pitr.stop_server(data_dir)
        except PgBackupError:
            pass
    shutil.rmtree(data_dir, ignore_errors=True)


def _database_names(pg: Postgres) -> List[str]:
    with pg.connect() as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate")]


def jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return jsonable(dataclasses.asdict(value))
    return str(value)


# -- the catalog of verifications -------------------------------------------------------------------

def verification_key(cluster_root: str, when: dt.datetime, backup_id: str, passed: bool) -> str:
    stamp = when.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return (f"{cluster_root}{VERIFICATIONS_DIR}{stamp}-{backup_id}-{secrets.token_hex(3)}-"
            f"{'passed' if passed else 'failed'}.json")


def record_verification(ctx: Context, document: Dict[str, Any], when: dt.datetime) -> Optional[str]:
    """Store one verification's outcome in the repository; returns its key, or None with a warning."""
    key = verification_key(ctx.repo.root, when, document["backup_id"], bool(document["passed"]))
    try:
        ctx.storage.put_bytes(key, (json.dumps(document, indent=1, sort_keys=True, default=str) + "\n").encode(),
                              PutOptions(content_type="application/json"), overwrite=False)
        return key
    except Exception as exc:  # the verification happened; failing to note it must not hide its result
        ctx.progress.warn(f"cannot record the verification in the repository ({key}): {exc}")
        return None


@dataclass
class VerificationRecord:
    key: str
    when: dt.datetime
    backup_id: str
    passed: bool


def verification_history(storage: Storage, cluster_root: str) -> List[VerificationRecord]:
    """Every recorded verification, oldest first, from object names alone (one listing, no reads)."""
    prefix = f"{cluster_root}{VERIFICATIONS_DIR}"
    found = []
    for info in storage.list(prefix):
        m = _RECORD_RE.match(info.key[len(prefix):])
        if not m:
            continue
        when = dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
        found.append(VerificationRecord(info.key, when, m.group(2), m.group(4) == "passed"))
    found.sort(key=lambda r: (r.when, r.key))
    return found


# -- the command -----------------------------------------------------------------------------------

def run_verify_restore(ctx: Context, backup_id: Optional[str], *, tier: Optional[str] = None,
                       random_pick: bool = False, kind: Optional[str] = None) -> Dict[str, Any]:
    manifest = select_backup(ctx, backup_id, tier=tier, random_pick=random_pick, kind=kind)
    if manifest.kind not in ("logical", "physical"):
        raise UsageError(f"backup {manifest.backup_id} is of unknown kind {manifest.kind!r}")
    ctx.gpg.require_key(manifest.encryption.fingerprint, f"backup {manifest.backup_id}")
    started = ctx.clock()
    t0 = time.monotonic()
    outcome = Outcome(manifest.backup_id, manifest.kind, manifest.tier, iso(started))
    ctx.progress.stage(f"verify --restore {manifest.backup_id} ({manifest.kind}, {manifest.tier})")
    try:
        if manifest.kind == "logical":
            _verify_logical(ctx, manifest, outcome)
        else:
            _verify_physical(ctx, manifest, outcome)
    except PgBackupError as exc:
        outcome.error, outcome.error_exit_code = str(exc), exc.exit_code
    finished = ctx.clock()
    doc = outcome_document(outcome, started, finished, time.monotonic() - t0)
    doc["record"] = record_verification(ctx, doc, finished)
    result: Dict[str, Any] = dict(doc)
    result["_text"] = render_text(doc)
    if outcome.error is not None:
        result["_exit"] = outcome.error_exit_code or EXIT_INTEGRITY
        result["_error"] = f"restore verification of {manifest.backup_id} could not finish: {outcome.error}"
    elif not outcome.passed:
        result["_exit"] = EXIT_INTEGRITY
        more = f" (and {len(outcome.failures) - 1} more)" if len(outcome.failures) > 1 else ""
        result["_error"] = f"restore verification of {manifest.backup_id} FAILED: {outcome.failures[0]}{more}"
    return result


def outcome_document(outcome: Outcome, started: dt.datetime, finished: dt.datetime, seconds: float) -> Dict[str, Any]:
    return {
        "backup_id": outcome.backup_id, "kind": outcome.kind, "tier": outcome.tier,
        "passed": outcome.passed, "result": "passed" if outcome.passed else "failed",
        "started_at": iso(started), "finished_at": iso(finished), "duration_seconds": round(seconds, 3),
        "databases": outcome.databases, "checks": [dataclasses.asdict(c) for c in outcome.checks],
        "failures": outcome.failures, "restore_error": outcome.error, "notes": outcome.notes, "kept": outcome.kept,
    }


def render_text(doc: Dict[str, Any]) -> List[str]:
    verdict = "PASSED" if doc["passed"] else "FAILED"
    lines = [f"restore verification of {doc['backup_id']} ({doc['kind']}, {doc['tier']}): {verdict} "
             f"in {doc['duration_seconds']:.1f} s"]
    for db in doc["databases"]:
        if "name" in db:
            rc = db.get("row_counts") or {}
            counts = (f"{rc['tables']} table(s), {len(rc['mismatches'])} row-count mismatch(es)" if rc.get("recorded")
                      else "row counts not recorded at backup time")
            lines.append(f"  database {db['name']!r} -> {db['scratch_database']!r}: "
                         f"{'restored' if db.get('restored') else 'NOT restored'}; {counts}")
        else:
            lines.append(f"  server restored into {db['data_dir']} (port {db['port']})")
    for c in doc["checks"]:
        shown = "" if c["value"] is None and c["status"] == "skipped" else f" = {c['value']!r}"
        lines.append(f"  {c['status'].upper():<7} check {c['name']!r} ({c['database']}){shown} expect "
                     f"{c['expect']}{': ' + c['detail'] if c['detail'] else ''}")
    if not doc["checks"]:
        lines.append("  no verify.checks configured")
    lines += [f"  failure: {f}" for f in doc["failures"]]
    if doc["restore_error"]:
        lines.append(f"  error: {doc['restore_error']}")
    lines += [f"  note: {n}" for n in doc["notes"]]
    lines += [f"  kept for inspection: {k}" for k in doc["kept"]]
    if doc.get("record"):
        lines.append(f"  recorded as {doc['record']}")
    return lines
