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

from . import config as config_mod
from .audit import AuditRecord, redact_arguments, write_local, write_remote
from .commands import CommandResult
from .context import Context
from .errors import (EXIT_CODES, EXIT_INTERNAL, EXIT_OK, ConfigError, Interrupted, PgBackupError, UsageError,
                     error_type_for)
from .lock import ClusterLock
from .manifest import parse_iso, utcnow
from .parser import build_parser
from .progress import Progress

JSON_SCHEMA_VERSION = 1
TEST_CLOCK_ENV = "PG_BACKUP_TEST_NOW"


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

        if args.all or args.deep or args.retrieve:
            raise UsageError("--restore verifies one backup (named, or chosen with --tier/--random/--kind); "
                             "it always reads everything, so --all, --deep and --retrieve do not apply")
        return verify_restore(ctx, backup_id=args.backup_id, tier=args.tier, random_pick=args.random, kind=args.kind,
                              skip_erasures=_skips(args))
    from .commands.verify import verify

    if args.tier or args.random or args.kind:
        raise UsageError("--tier, --random and --kind select a backup for --restore")
    if args.skip_erasure or args.skip_reason:
        raise UsageError("--skip-erasure applies to verify --restore (a plain verify restores nothing)")
    return verify(ctx, backup_id=args.backup_id, all_backups=args.all, deep=args.deep, retrieve=args.retrieve)


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
                keep_archiving=args.keep_archiving, tablespace_map=args.tablespace_map, skip_erasures=_skips(args),
                defer_erasure=args.defer_erasure, config_arg=args.config)


def _skips(args: argparse.Namespace) -> Dict[str, str]:
    from .erasure.replay import parse_skips

    return parse_skips(args.skip_erasure, args.skip_reason)


def _erasure(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.erasure import erasure_add, erasure_list

    if args.erasure_command == "add":
        return erasure_add(ctx, database=args.database, sql=args.sql, request_id=args.request_id, reason=args.reason)
    if args.erasure_command == "list":
        return erasure_list(ctx, database=args.database)
    if args.erasure_command == "replay":
        from .commands.erasure_replay import erasure_replay

        return erasure_replay(ctx, data_dir=args.data_dir, skips=_skips(args), timeout=args.timeout)
    raise UsageError("erasure needs an action: add, list or replay")


def _drill(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.drill import drill

    return drill(ctx, data_dir=args.data_dir, port=args.port, keep=args.keep, skip_erasures=_skips(args))


def _compliance(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.compliance import compliance_report

    return compliance_report(ctx, action=args.compliance_command, output_format=args.report_format, output=args.output,
                             period=args.period, since=args.since, until=args.until, as_json=args.json)


def _audit(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.audit import audit_verify
    return audit_verify(ctx, action=args.audit_command, since=args.since)


def _drill_chart(ctx: Context, args: argparse.Namespace) -> CommandResult:
    from .commands.drill import drill_chart

    return drill_chart(ctx, output=args.output)


COMMANDS: Dict[str, Callable[[Context, argparse.Namespace], CommandResult]] = {
    "backup": _backup, "list": _list, "show": _show, "verify": _verify, "restore": _restore, "prune": _prune,
    "health": _health, "wal-push": _wal_push, "wal-fetch": _wal_fetch, "wal-check": _wal_check, "pitr": _pitr,
    "drill": _drill, "drill-chart": _drill_chart, "erasure": _erasure, "compliance": _compliance, "audit": _audit,
}
#: The S3 credentials duty of each command (repository.s3.credentials); the others read the catalog only.
DUTY = {"backup": "writer", "wal-push": "writer", "wal-check": "writer", "erasure": "writer", "prune": "pruner",
        "restore": "restorer", "pitr": "restorer", "wal-fetch": "restorer", "verify": "restorer", "drill": "restorer",
        "erasure replay": "restorer"}
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
        command = args.command if args.command not in ("config", "erasure", "keys", "compliance", "audit") else \
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
            settings.signing.require = settings.signing.require and not getattr(args, "allow_unsigned", False)
            if args.command in AUDITED:
                settings.signing.check_records_key()    # never an unsigned record in a signed chain (exit 8)
            progress = Progress(quiet=args.quiet)
            ctx = Context(settings, progress, clock=_clock(), duty=DUTY.get(command, DUTY.get(args.command)))
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
    except BaseException:
        if ctx is not None:
            ctx.close()         # SystemExit and the like: no audit record, as before
        raise
    if ctx is not None:
        try:
            if audit is not None:   # before close: the signing key is still in GnuPG's home (no second import)
                _write_audit(ctx, audit, result, exit_code, error)
        finally:
            ctx.close()
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
        warnings.append(write_remote(ctx.repo, record, audit.started, ctx.settings.paths.state_dir))
    except PgBackupError as exc:
        warnings.append(f"cannot copy audit record to the repository: {exc}")
    for w in warnings:
        if w:
            ctx.progress.warn(w)

