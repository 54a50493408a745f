"""Command line: ``pg-backup [--config FILE] [--json] COMMAND ...``.

The CLI, its ``--json`` documents (each with ``schema_version``) and its exit codes are the
contract with the Ansible collection and with operators' scripts. Errors are mapped to exit codes
here and only here.

This module parses the arguments, hands each command (:mod:`pg_backup.commands`) its options as
keyword arguments, and renders the :class:`~pg_backup.commands.CommandResult` it returns as text
lines, the JSON document or raw output, with the exit code and the audit record. It is entered
through :func:`pg_backup.main.console_main` (the WAL fast path comes first).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import traceback
from typing import Any, Callable, Dict, List, Optional

from . import __version__
from . import config as config_mod
from .audit import AuditRecord, redact_arguments, write_local, write_remote
from .commands import CommandResult
from .context import Context
from .errors import (EXIT_CODES, EXIT_INTERNAL, EXIT_OK, ConfigError, Interrupted, PgBackupError, UsageError,
                     error_type_for)
from .keys.arguments import add_keys_parser
from .lock import ClusterLock
from .manifest import parse_iso, utcnow
from .progress import Progress

JSON_SCHEMA_VERSION = 1
TEST_CLOCK_ENV = "PG_BACKUP_TEST_NOW"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and the usage exit code, like every other error
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document on stdout (with schema_version)")
    common.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                        help="no progress lines on stderr")
    p = _Parser(prog="pg-backup", parents=[common],
                description="Encrypted, checksummed PostgreSQL backups to S3-compatible or local storage.")
    p.add_argument("--config", "-c", help=f"configuration file (default ${config_mod.ENV_CONFIG} or "
                                          f"{config_mod.DEFAULT_CONFIG_PATH})")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    p.add_argument("--version", action="version", version=f"pg-backup {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    b = sub.add_parser("backup", parents=[common],
                       help="take a logical backup of every (or the named) database, or a physical base backup")
    b.add_argument("--tier", choices=("daily", "weekly", "monthly"),
                   help="retention tier (required for logical backups; physical backups default to daily)")
    b.add_argument("--physical", action="store_true",
                   help="take a physical base backup (pg_basebackup) for point-in-time recovery")
    b.add_argument("--incremental", action="store_true",
                   help="with --physical: incremental to the newest physical backup (PostgreSQL 17+, summarize_wal "
                        "on); a full backup that says why when it cannot be, or exit 2 with physical.incremental "
                        "always")
    b.add_argument("--full", action="store_true", help="with --physical: a full backup whatever "
                                                       "physical.incremental says (starts a new chain)")
    b.add_argument("--database", "-d", action="append", default=[], metavar="NAME",
                   help="back up only this database (repeatable)")
    b.add_argument("--skip-if-standby", action="store_true",
                   help="exit 0 without a backup when the server is a standby (for schedules on every node)")

    ls = sub.add_parser("list", parents=[common], help="list committed backups, oldest first")
    ls.add_argument("--tier", choices=("daily", "weekly", "monthly"))

    sh = sub.add_parser("show", parents=[common], help="show one backup's manifest")
    sh.add_argument("backup_id")

    v = sub.add_parser("verify", parents=[common], help="re-hash stored objects against their manifests")
    v.add_argument("backup_id", nargs="?")
    v.add_argument("--all", action="store_true", help="verify every backup")
    v.add_argument("--deep", action="store_true", help="also decrypt, decompress and read each archive's TOC "
                   "(physical: run pg_verifybackup on an extracted copy)")
    v.add_argument("--restore", action="store_true",
                   help="restore into a scratch database or data directory, compare row counts and run the "
                        "configured checks, then clean up")
    v.add_argument("--tier", choices=("daily", "weekly", "monthly"), help="with --restore: pick from this tier")
    v.add_argument("--random", action="store_true", help="with --restore: pick a random backup (of --tier)")
    v.add_argument("--kind", choices=("logical", "physical"), help="with --restore: pick only this kind")

    wp = sub.add_parser("wal-push", parents=[common],
                        help="archive_command: store one WAL file durably (exit 0 only once it is durable)")
    wp.add_argument("path", help="the WAL file (%%p: relative to the data directory)")
    wc = sub.add_parser("wal-check", parents=[common],
                        help="prove archiving works: switch WAL and wait for the segment in the archive")
    wc.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                    help="give up after this long (default 60)")
    wf = sub.add_parser("wal-fetch", parents=[common],
                        help="restore_command: fetch one WAL file (exit 7 at once if the archive lacks it)")
    wf.add_argument("name", help="the WAL file name (%%f)")
    wf.add_argument("dest", help="where to write it (%%p)")

    pt = sub.add_parser("pitr", parents=[common],
                        help="point-in-time recovery: base backup + WAL into a data directory")
    target = pt.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-time", metavar="T", help="recover up to this time (ISO 8601 with a zone)")
    target.add_argument("--target-lsn", metavar="L", help="recover up to this WAL location, e.g. 0/3000060")
    target.add_argument("--target-xid", metavar="X", help="recover up to this transaction id")
    target.add_argument("--target-name", metavar="N", help="recover up to this named restore point")
    target.add_argument("--latest", action="store_true", help="recover everything archived")
    pt.add_argument("--data-dir", required=True, metavar="DIR",
                    help="data directory to restore into (an existing one is moved aside, never deleted)")
    pt.add_argument("--port", type=int, metavar="P", help="port the restored server listens on")
    pt.add_argument("--no-start", action="store_true", help="prepare the data directory but do not start it")
    pt.add_argument("--backup-id", metavar="ID", help="use this base backup instead of the newest suitable one")
    pt.add_argument("--exclusive", action="store_true", help="stop just before the target instead of after it")
    pt.add_argument("--keep-archiving", action="store_true",
                    help="leave archive_command as restored (for replacing production); default turns archiving "
                         "off so a scratch restore never archives into the production prefix")
    pt.add_argument("--tablespace-map", action="append", default=[], metavar="OLD=NEW",
                    help="restore the tablespace at OLD (its original location, name or oid) into NEW (repeatable); "
                         "default: the original location if it is free")

    dr = sub.add_parser("drill", parents=[common],
                        help="disaster-recovery drill: restore the latest state on a scratch port, check it, "
                             "measure RTO and RPO, write a report")
    dr.add_argument("--data-dir", metavar="DIR", help="scratch data directory (default under verify.scratch_dir)")
    dr.add_argument("--port", type=int, metavar="P", help="scratch port (default drill.port)")
    dr.add_argument("--keep", action="store_true", help="leave the restored server running for inspection")
    dc = sub.add_parser("drill-chart", parents=[common],
                        help="write the RTO/RPO history chart of every drill (PNG): drawn here with the charts "
                             "extra, else the one the newest drill stored")
    dc.add_argument("--output", "-o", required=True, metavar="FILE", help="PNG file to write")

    r = sub.add_parser("restore", parents=[common], help="restore one database of a logical backup")
    r.add_argument("backup_id")
    r.add_argument("--database", "-d", metavar="NAME", help="database in the backup (optional if it holds one)")
    r.add_argument("--target-database", metavar="NEW", help="restore under this name (default: the original name)")
    r.add_argument("--replace", action="store_true",
                   help="replace an existing target database (renamed aside, dropped only after success)")
    r.add_argument("--table", "-t", action="append", default=[], metavar="T", help="restore only this table")
    r.add_argument("--schema", "-n", action="append", default=[], metavar="S", help="restore only this schema")
    r.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="parallel pg_restore jobs (spools the decrypted dump into a private directory)")
    r.add_argument("--with-globals", action="store_true", help="first replay roles and tablespaces")
    r.add_argument("--no-owner", action="store_true", help="skip ownership and privileges (pg_restore --no-owner --no-acl)")

    h = sub.add_parser("health", parents=[common], help="evaluate backup health (freshness, failures, size, storage)")
    h.add_argument("--format", choices=("text", "json", "nagios", "prometheus"), default=None,
                   help="output format (default text, or json with --json); nagios exits 0/1/2/3")
    h.add_argument("--max-age-hours", action="append", default=[], metavar="TIER=HOURS",
                   help="override a freshness threshold, e.g. daily=30 (repeatable)")

    pr = sub.add_parser("prune", parents=[common], help="apply retention and remove incomplete backups")
    pr.add_argument("--dry-run", action="store_true", help="only report what would be deleted")

    c = sub.add_parser("config", parents=[common], help="configuration tools")
    csub = c.add_subparsers(dest="config_command", metavar="ACTION", parser_class=_Parser)
    csub.add_parser("validate", parents=[common], help="check the configuration and list every problem")
    csub.add_parser("reference", parents=[common], help="print the configuration reference (Markdown)")

    e = sub.add_parser("erasure", parents=[common], help="the erasure register: erasures re-applied to every restore")
    esub = e.add_subparsers(dest="erasure_command", metavar="ACTION", parser_class=_Parser)
    ea = esub.add_parser("add", parents=[common], help="run DELETE/UPDATE statements in production (one transaction) "
                                                        "and record them once committed")
    ea.add_argument("--database", "-d", required=True, metavar="NAME", help="the database the statements run in")
    ea.add_argument("--sql", action="append", default=[], metavar="SQL",
                    help="DELETE or UPDATE statement(s) (repeatable); kept only in the encrypted record")
    ea.add_argument("--request-id", metavar="R", help="the erasure request's reference (ticket, case number)")
    ea.add_argument("--reason", metavar="TEXT", help="why (kept only in the encrypted record)")
    el = esub.add_parser("list", parents=[common], help="decrypt and show the recorded erasures, oldest first")
    el.add_argument("--database", "-d", metavar="NAME", help="only this database's records")
    for parser in (r, pt):
        parser.add_argument("--skip-erasure", action="append", default=[], metavar="ID",
                            help="hand the data over without re-applying this erasure record (repeatable; audited)")
        parser.add_argument("--skip-reason", metavar="TEXT", help="why the --skip-erasure records are skipped")

    add_keys_parser(sub, common, _Parser)
    sub.add_parser("exit-codes", parents=[common], help="print the exit codes and their meaning")
    return p


# -------------------------------------------------------------------------------------------------
# Arguments -> keyword arguments of the command functions (pg_backup.commands). Imported when run:
# a command loads only the services it uses.

def _clock() -> Callable[[], dt.datetime]:
    fixed = os.environ.get(TEST_CLOCK_ENV)
    if not fixed:
        return utcnow
    try:
        when = parse_iso(fixed) if "." in fixed else dt.datetime.strptime(fixed, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.timezone.utc)
    except ValueError:
        raise UsageError(f"{TEST_CLOCK_ENV}={fixed!r} is not an ISO time like 2030-01-01T00:00:00Z") from None
    offset = when - utcnow()
    return lambda: utcnow() + offset


def _backup(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.backup import backup

    return backup(ctx, tier=args.tier, physical=args.physical, databases=args.database,
                  skip_if_standby=args.skip_if_standby, incremental=args.incremental, full=args.full)


def _list(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.catalog import list_backups

    return list_backups(ctx, tier=args.tier)


def _show(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.catalog import show

    return show(ctx, backup_id=args.backup_id)


def _verify(ctx: Context, args: argparse.Namespace) -> CommandResult:
    if args.restore:
        from .commands.verify_restore import verify_restore

        if args.all or args.deep:
            raise UsageError("--restore verifies one backup (named, or chosen with --tier/--random/--kind); "
                             "it always reads everything, so --all and --deep do not apply")
        return verify_restore(ctx, backup_id=args.backup_id, tier=args.tier, random_pick=args.random, kind=args.kind)
    from .commands.verify import verify

    if args.tier or args.random or args.kind:
        raise UsageError("--tier, --random and --kind select a backup for --restore")
    return verify(ctx, backup_id=args.backup_id, all_backups=args.all, deep=args.deep)


def _restore(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.restore import restore

    return restore(ctx, backup_id=args.backup_id, database=args.database, target_database=args.target_database,
                   replace=args.replace, tables=args.table, schemas=args.schema, jobs=args.jobs,
                   with_globals=args.with_globals, no_owner=args.no_owner,
                   skip_erasures=_skips(args))


def _prune(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.prune import prune

    return prune(ctx, dry_run=args.dry_run)


def _health(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.health import health

    return health(ctx, output_format=args.format, max_age_hours=args.max_age_hours, as_json=args.json)


def _wal_push(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.wal import wal_push

    return wal_push(ctx, path=args.path, config_path=config_mod.config_path(args.config))


def _wal_fetch(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.wal import wal_fetch

    return wal_fetch(ctx, name=args.name, dest=args.dest, config_path=config_mod.config_path(args.config))


def _wal_check(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.wal import wal_check

    return wal_check(ctx, timeout=args.timeout)


def _pitr(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.pitr import pitr

    return pitr(ctx, data_dir=args.data_dir, latest=args.latest, target_time=args.target_time,
                target_lsn=args.target_lsn, target_xid=args.target_xid, target_name=args.target_name,
                exclusive=args.exclusive, backup_id=args.backup_id, port=args.port, no_start=args.no_start,
                keep_archiving=args.keep_archiving, tablespace_map=args.tablespace_map, skip_erasures=_skips(args))


def _skips(args: argparse.Namespace) -> Dict[str, str]:
    from .erasure.replay import parse_skips

    return parse_skips(args.skip_erasure, args.skip_reason)


def _erasure(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.erasure import erasure_add, erasure_list

    if args.erasure_command == "add":
        return erasure_add(ctx, database=args.database, sql=args.sql, request_id=args.request_id, reason=args.reason)
    if args.erasure_command == "list":
        return erasure_list(ctx, database=args.database)
    raise UsageError("erasure needs an action: add or list")


def _drill(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.drill import drill

    return drill(ctx, data_dir=args.data_dir, port=args.port, keep=args.keep)


def _drill_chart(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.drill import drill_chart

    return drill_chart(ctx, output=args.output)


COMMANDS: Dict[str, Callable[[Context, argparse.Namespace], CommandResult]] = {
    "backup": _backup, "list": _list, "show": _show, "verify": _verify, "restore": _restore, "prune": _prune,
    "health": _health, "wal-push": _wal_push, "wal-fetch": _wal_fetch, "wal-check": _wal_check, "pitr": _pitr,
    "drill": _drill, "drill-chart": _drill_chart, "erasure": _erasure,
}
LOCKED = {"backup", "prune"}
AUDITED = {"backup", "restore", "verify", "prune", "pitr", "drill", "erasure"}
#: Options whose values name data subjects: never in the (plaintext) audit trail.
SENSITIVE_OPTIONS = ("--sql", "--reason")


def _config_command(args: argparse.Namespace, path: str) -> CommandResult:
    from .commands.config import config_reference, config_validate

    if args.config_command == "reference":
        return config_reference()
    if args.config_command != "validate":
        raise UsageError("config needs an action: validate or reference")
    return config_validate(path=path, now=_clock()())


# -------------------------------------------------------------------------------------------------
# Rendering a result: text lines, the JSON document, or raw output (Nagios, Prometheus).

def _erasure_details(doc: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Which erasure records a restore re-applied and which it skipped (with the reasons), for the audit."""
    if not isinstance(doc, dict):
        return {}
    return {"erasures_applied": [a["erasure_id"] for a in doc.get("applied", [])],
            "erasures_skipped": doc.get("skipped") or None}


def _emit(args: argparse.Namespace, command: str, result: CommandResult, exit_code: int,
          error: Optional[PgBackupError] = None) -> None:
    as_json = getattr(args, "json", False)
    if result.raw is not None and error is None:
        sys.stdout.write(result.raw)
    elif as_json:
        doc: Dict[str, Any] = {"schema_version": JSON_SCHEMA_VERSION, "command": command, "ok": exit_code == 0,
                               "exit_code": exit_code}
        doc.update(result.fields)
        if error is not None or exit_code:
            doc["error"] = {"exit_code": exit_code, "type": type(error).__name__ if error else error_type_for(exit_code),
                            "message": str(error) if error else (result.error or ""),
                            "meaning": EXIT_CODES.get(exit_code, "")}
            if isinstance(error, ConfigError):
                doc["error"]["problems"] = error.problems
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    else:
        for line in result.text:
            sys.stdout.write(line + "\n")
    if error is not None:
        sys.stderr.write(f"pg-backup: error: {error}\n")
        if isinstance(error, ConfigError) and command.startswith("config") and not as_json:
            for problem in error.problems:
                sys.stderr.write(f"  - {problem}\n")
    elif exit_code and result.error and result.raw is None:
        sys.stderr.write(f"pg-backup: error: {result.error}\n")
    sys.stdout.flush()


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(f"stopped by signal {signal.Signals(signum).name}; nothing was committed")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    args = argparse.Namespace(json="--json" in argv)
    command = "pg-backup"
    ctx: Optional[Context] = None
    audit: Optional[AuditRecord] = None
    result = CommandResult()
    error: Optional[PgBackupError] = None
    exit_code = EXIT_OK
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        for flag in ("json", "quiet"):
            setattr(args, flag, getattr(args, flag, False))
        if not args.command:
            parser.print_help(sys.stderr)
            raise UsageError("no command given")
        command = args.command if args.command not in ("config", "erasure", "keys") else \
            f"{args.command} {getattr(args, args.command + '_command') or ''}".strip()
        if args.command == "exit-codes":
            from .commands.config import exit_codes

            result = exit_codes()
        elif args.command == "config":
            result = _config_command(args, config_mod.config_path(args.config))
        elif args.command == "keys":
            from .commands.keys import keys_command

            result = keys_command(args.keys_command, vars(args), now=_clock()(),
                                  load_settings=lambda: config_mod.load(args.config, check_files=False))
            exit_code = result.exit_code
        else:
            settings = config_mod.load(args.config)
            progress = Progress(quiet=args.quiet)
            ctx = Context(settings, progress, clock=_clock())
            if args.command in AUDITED:
                audit = AuditRecord(command.replace(" ", "-"), redact_arguments(argv, SENSITIVE_OPTIONS),
                                    settings.cluster, clock=ctx.clock)
            if args.command in LOCKED:
                with ClusterLock(settings.paths.state_dir, ctx.cluster, " ".join(["pg-backup", *argv])):
                    result = COMMANDS[args.command](ctx, args)
            else:
                result = COMMANDS[args.command](ctx, args)
            exit_code = result.exit_code
    except PgBackupError as exc:
        error, exit_code = exc, exc.exit_code
    except KeyboardInterrupt:
        error = Interrupted("interrupted; nothing was committed")
        exit_code = error.exit_code
    except BrokenPipeError:
        exit_code = EXIT_INTERNAL
    except Exception as exc:  # a bug: still one line unless --debug
        if getattr(args, "debug", False):
            traceback.print_exc()
        error = PgBackupError(f"internal error: {exc.__class__.__name__}: {exc} (run with --debug for a traceback)")
        exit_code = EXIT_INTERNAL
    finally:
        if ctx is not None:
            ctx.close()
    if audit is not None and ctx is not None:
        _write_audit(ctx, audit, result, exit_code, error)
    _emit(args, command, result, exit_code, error)
    return exit_code


def _write_audit(ctx: Context, audit: AuditRecord, result: CommandResult, exit_code: int,
                 error: Optional[PgBackupError]) -> None:
    message = str(error) if error else result.error
    outcome = result.audit_result or ("success" if exit_code == 0 else "failure")
    record = audit.finish(result=outcome, exit_code=exit_code, error=message,
                          backup_id=result.fields.get("backup_id"), bytes=result.fields.get("bytes"),
                          restored_into=result.fields.get("target_database"), erasure_id=result.fields.get("erasure_id"),
                          **_erasure_details(result.fields.get("erasures")))
    warnings = [write_local(ctx.settings.audit_log_path, record)]
    try:
        warnings.append(write_remote(ctx.repo, record, audit.started))
    except PgBackupError as exc:
        warnings.append(f"cannot copy audit record to the repository: {exc}")
    for w in warnings:
        if w:
            ctx.progress.warn(w)

