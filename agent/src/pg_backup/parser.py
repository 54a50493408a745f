"""The ``pg-backup`` argument parser: every command, its options and their help (:mod:`pg_backup.cli` runs
them). Errors in the arguments are :class:`~pg_backup.errors.UsageError`: one line, exit 2."""
from __future__ import annotations

import argparse

from . import __version__
from . import config as config_mod
from .audit.arguments import add_audit_parser
from .compliance.arguments import add_compliance_parser
from .errors import UsageError
from .keys.arguments import add_keys_parser


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and the usage exit code, like every other error
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document on stdout (with schema_version)")
    common.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                        help="no progress lines on stderr")
    p = Parser(prog="pg-backup", parents=[common],
                description="Encrypted, checksummed PostgreSQL backups to S3-compatible or local storage.")
    p.add_argument("--config", "-c", help=f"configuration file (default ${config_mod.ENV_CONFIG} or "
                                          f"{config_mod.DEFAULT_CONFIG_PATH})")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    p.add_argument("--version", action="version", version=f"pg-backup {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

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
    v.add_argument("--retrieve", action="store_true",
                   help="request the retrieval of objects in archived storage classes (GLACIER, DEEP_ARCHIVE) "
                        "for all backups in one pass and return at once; a later verify checks their content")

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
    pt.add_argument("--defer-erasure", action="store_true",
                    help="with --no-start and a non-empty erasure register: leave a pending-erasure marker in the "
                         "data directory; 'pg-backup erasure replay --data-dir DIR' applies the register once started")
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
    for reader in (v, wf, pt, dr, r, ls, pr):
        reader.add_argument("--allow-unsigned", action="store_true", help="admit objects without a signature "
                            "(only backups written before signing was enabled; audited; never foreign-signed ones)")

    c = sub.add_parser("config", parents=[common], help="configuration tools")
    csub = c.add_subparsers(dest="config_command", metavar="ACTION", parser_class=Parser)
    csub.add_parser("validate", parents=[common], help="check the configuration and list every problem")
    csub.add_parser("reference", parents=[common], help="print the configuration reference (Markdown)")

    e = sub.add_parser("erasure", parents=[common], help="the erasure register: erasures re-applied to every restore")
    esub = e.add_subparsers(dest="erasure_command", metavar="ACTION", parser_class=Parser)
    ea = esub.add_parser("add", parents=[common], help="run DELETE/UPDATE statements in production (one transaction) "
                                                        "and record them once committed")
    ea.add_argument("--database", "-d", required=True, metavar="NAME", help="the database the statements run in")
    ea.add_argument("--sql", action="append", default=[], metavar="SQL",
                    help="DELETE or UPDATE statement(s) (repeatable); kept only in the encrypted record")
    ea.add_argument("--request-id", metavar="R", help="the erasure request's reference (ticket, case number)")
    ea.add_argument("--reason", metavar="TEXT", help="why (kept only in the encrypted record)")
    el = esub.add_parser("list", parents=[common], help="decrypt and show the recorded erasures, oldest first")
    el.add_argument("--database", "-d", metavar="NAME", help="only this database's records")
    er = esub.add_parser("replay", parents=[common], help="apply the register to a server recovered with "
                                                         "'pitr --no-start --defer-erasure', once it runs")
    er.add_argument("--data-dir", required=True, metavar="DIR", help="the recovered (and started) data directory")
    er.add_argument("--timeout", type=float, metavar="SECONDS", help="give up waiting for the end of its recovery")
    for parser in (r, pt, v, dr, er):
        parser.add_argument("--skip-erasure", action="append", default=[], metavar="ID",
                            help="hand the data over without re-applying this erasure record (repeatable; audited)")
        parser.add_argument("--skip-reason", metavar="TEXT", help="why the --skip-erasure records are skipped")

    for add_parser in (add_keys_parser, add_compliance_parser, add_audit_parser):
        add_parser(sub, common, Parser)
    sub.add_parser("exit-codes", parents=[common], help="print the exit codes and their meaning")
    return p
