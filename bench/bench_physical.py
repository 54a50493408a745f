#!/usr/bin/env python3
"""Physical backup and PITR benchmark: pg-backup against pgBackRest and pg_basebackup, same run, same host.

    sudo python3 bench/bench_physical.py [--scale 50 | --quick] [--repeat N] [--output FILE] [--keep]

Builds a throw-away PostgreSQL cluster (as postgres, 127.0.0.1, a free port) holding one pgbench
database at scale N whose filler columns are random hex (a dump compresses ~2x; the same data as
bench_logical.py's "random filler" database), with WAL archiving into both pg-backup's and
pgBackRest's repositories (archive_command runs both), and measures:

  1. pg-backup backup --physical                    (local repository, fast checkpoint)
  2. pgBackRest backup --type=full                  (compress-type=zst, process-max=2, local repo, start-fast)
  3. pg_basebackup -Ft -X none --compress=server-zstd   (if the server's build has zstd; the row says if not)
  4. pgbench for --pgbench-seconds, then recovery of everything archived into a fresh data directory:
     pg-backup pitr --latest (with its phases) against pgBackRest restore + start until promoted, and
     the WAL replay rate (MB of WAL written by pgbench / seconds from server start to promotion).

Reported as ratios to pgBackRest (wall time, stored size). Targets: backup faster than pgBackRest,
stored size within 5 % of pgBackRest's. Standard library only; not part of ``make test``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_logical import ACCOUNTS_PER_SCALE, agent_command, cpu_model, filler_sql  # noqa: E402
from common import (emit, Measurement, agent_setup, encryption_section, signing_section, tear_down, TempCluster, check_ok, kb_to_mb, log, make_pg_dir, markdown_table,  # noqa: E402
                    measure, parse_json_stdout, pg_bin_dir, require_root, run_as_pg, signals_raise,
                    write_pg_file)

TARGETS = {"speed": 1.0, "size": 1.05, "recovery": 1.0}
DB = "bench_random"
CLUSTER_SETTINGS = {
    "wal_level": "minimal",        # for the data generation only (TRUNCATE + INSERT skip WAL); replica after
    "max_wal_senders": "0",
    "max_wal_size": "'4GB'",
    "autovacuum": "off",
    "shared_buffers": "'256MB'",
}


@dataclass
class Row:
    label: str
    m: Optional[Measurement] = None
    stored: Optional[int] = None
    error: Optional[str] = None
    note: str = ""
    walls: List[float] = field(default_factory=list)
    extra: Dict[str, object] = field(default_factory=dict)


def make_random_database(cluster: TempCluster, scale: int, db: str = DB) -> None:
    """pgbench schema at ``scale`` whose filler columns are random hex (bench_logical.py's random filler)."""
    pgbench, fast = cluster.tool("pgbench"), {"PGOPTIONS": "-c synchronous_commit=off"}
    cluster.psql(f"CREATE DATABASE {db}")
    log(f"generating {db}: pgbench schema, scale {scale}, random hex filler")
    run_as_pg([pgbench, "-i", "-q", "-s", str(scale), "-I", "dt", db], env=cluster.env(fast))
    try:
        cluster.psql("CREATE EXTENSION IF NOT EXISTS pgcrypto", db)
        have = True
    except RuntimeError:
        have = False
    cluster.psql(f"""
        BEGIN;
        TRUNCATE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history;
        INSERT INTO pgbench_branches SELECT b, 0, {filler_sql(88, have)} FROM generate_series(1, {scale}) b;
        INSERT INTO pgbench_tellers SELECT t, (t - 1) / 10 + 1, 0, {filler_sql(84, have)}
          FROM generate_series(1, {10 * scale}) t;
        INSERT INTO pgbench_accounts SELECT a, (a - 1) / {ACCOUNTS_PER_SCALE} + 1, 0, {filler_sql(84, have)}
          FROM generate_series(1, {ACCOUNTS_PER_SCALE * scale}) a;
        COMMIT;""", db, extra_env=fast)
    run_as_pg([pgbench, "-i", "-q", "-s", str(scale), "-I", "vp", db], env=cluster.env(fast))


def pgbackrest_setup(work: str, cluster: TempCluster) -> Tuple[List[str], str]:
    """A pgBackRest configuration for ``cluster`` (stanza ``bench``: zst, process-max 2, local repository,
    no cipher): (command prefix, repository path)."""
    pgbr = make_pg_dir(os.path.join(work, "pgbr"))
    for sub in ("repo", "lock", "spool", "log"):
        make_pg_dir(os.path.join(pgbr, sub))
    repo = os.path.join(pgbr, "repo")
    cfg = write_pg_file(os.path.join(pgbr, "pgbackrest.conf"), "\n".join([
        "[global]", f"repo1-path={repo}", "compress-type=zst", "process-max=2", "start-fast=y",
        "log-level-console=warn", "log-level-stderr=warn", "log-level-file=off", f"lock-path={pgbr}/lock",
        f"spool-path={pgbr}/spool", f"log-path={pgbr}/log", "repo1-retention-full=9999",
        "[bench]", f"pg1-path={cluster.data}", f"pg1-port={cluster.port}", f"pg1-socket-path={cluster.sock}",
    ]) + "\n")
    return ["pgbackrest", f"--config={cfg}", "--stanza=bench"], repo


def pgbackrest_version() -> str:
    out = subprocess.run(["pgbackrest", "version"], capture_output=True, text=True).stdout.split()
    return out[-1] if out else "?"


class Bench:
    def __init__(self, args: argparse.Namespace, work: str, cluster: TempCluster):
        self.args, self.work, self.cluster = args, work, cluster
        setup = agent_setup(agent_command, args.agent, work, cluster.port)
        self.home, self.agent, self.env = setup.home, setup.agent, setup.env
        secrets, passphrase = setup.secrets, setup.passphrase
        self.files = make_pg_dir(os.path.join(work, "files"))
        self.cfg = write_pg_file(os.path.join(secrets, "agent.yml"), json.dumps({
            "cluster": "bench", "postgres": {"host": "127.0.0.1", "port": cluster.port, "user": "postgres",
                                             "bin_dir": cluster.bin_dir},
            **encryption_section(setup),
            "repository": {"type": "local", "path": make_pg_dir(os.path.join(work, "repo"))},
            "paths": {"state_dir": make_pg_dir(os.path.join(work, "state"))},
            "physical": {"checkpoint": "fast"}, **signing_section(setup, args.signing)}, indent=1))
        self.pgbr, self.pgbr_repo = pgbackrest_setup(work, cluster)

    # -- setup --------------------------------------------------------------------------------------
    def make_database(self, scale: int) -> None:
        make_random_database(self.cluster, scale)

    def enable_archiving(self) -> None:
        """wal_level replica, archive_mode on, archive_command pushing into both repositories."""
        run_as_pg(self.pgbr + ["stanza-create"], env=self.cluster.env(), check=False)  # needs the server up
        ours = " ".join(shlex.quote(a) for a in self.agent) + f" --config {self.cfg} --quiet wal-push %p"
        theirs = " ".join(self.pgbr) + " archive-push %p"
        command = f"{ours} && {theirs}".replace("'", "''")
        self.cluster.psql(f"ALTER SYSTEM SET wal_level = 'replica'; ALTER SYSTEM SET max_wal_senders = 4;"
                          f"ALTER SYSTEM SET archive_mode = 'on'; ALTER SYSTEM SET archive_command = '{command}'")
        run_as_pg([self.cluster.tool("pg_ctl"), "-D", self.cluster.data, "-l", self.cluster.logfile, "-w", "-t", "120",
                   "restart"], env=self.cluster.env())
        check_ok(measure(self.pgbr + ["stanza-create"], env=self.cluster.env(), cwd=self.files), "stanza-create")
        check_ok(measure(self.pgbr + ["check"], env=self.cluster.env(), cwd=self.files), "pgbackrest check")

    # -- measured steps -----------------------------------------------------------------------------
    def run(self, cmd: List[str], label: str) -> Measurement:
        self.cluster.psql("CHECKPOINT")
        return check_ok(measure(cmd, env=self.env, cwd=self.files, cluster=self.cluster, label=label), label)

    def repeated(self, label: str, fn) -> Row:  # type: ignore[no-untyped-def]
        log(label)
        try:
            runs = [fn() for _ in range(self.args.repeat)]
        except Exception as exc:  # one failing method must not hide the others' results
            log(f"{label} FAILED: {exc}")
            return Row(label, error=str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc))
        runs.sort(key=lambda r: r.m.wall)
        row = runs[len(runs) // 2]
        row.label, row.walls = label, [r.m.wall for r in runs]
        log(f"{label}: {row.m.wall:.1f} s wall, {row.m.cpu:.1f} s CPU, stored {row.stored or 0:,} bytes")
        return row

    def ours(self) -> Row:
        m = self.run(self.agent + ["--config", self.cfg, "--json", "backup", "--physical"], "pg-backup backup --physical")
        doc = parse_json_stdout(m)
        return Row("", m, stored=doc["backup"]["stored_bytes"], note=doc["backup_id"],
                   extra={"raw": doc["backup"]["raw_bytes"], "stop_lsn": doc["backup"]["stop_lsn"]})

    def pgbackrest(self) -> Row:
        m = self.run(self.pgbr + ["--type=full", "backup"], "pgbackrest backup")
        info = json.loads(check_ok(measure(self.pgbr + ["--output=json", "info"], env=self.env, cwd=self.files),
                                   "pgbackrest info").stdout)
        last = info[0]["backup"][-1]
        return Row("", m, stored=last["info"]["repository"]["delta"], note=last["label"],
                   extra={"raw": last["info"]["size"], "stop_lsn": last.get("lsn", {}).get("stop")})

    def basebackup(self) -> Row:
        out = os.path.join(self.files, "basebackup")
        shutil.rmtree(out, ignore_errors=True)
        make_pg_dir(out)
        m = self.run([self.cluster.tool("pg_basebackup"), "-D", out, "-Ft", "-X", "none", "--checkpoint=fast",
                      "--compress=server-zstd", "--no-sync"], "pg_basebackup server-zstd")
        stored = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        shutil.rmtree(out, ignore_errors=True)
        return Row("", m, stored=stored)

    # -- recovery ------------------------------------------------------------------------------------
    def pgbench(self, seconds: int) -> int:
        """Write WAL with pgbench; return the WAL bytes written (then switched and archived)."""
        start = self.cluster.psql("SELECT pg_current_wal_lsn()")
        log(f"pgbench -c 4 -T {seconds} on {DB}")
        run_as_pg([self.cluster.tool("pgbench"), "-n", "-c", "4", "-j", "2", "-T", str(seconds), DB],
                  env=self.cluster.env())
        end = self.cluster.psql("SELECT pg_current_wal_lsn()")
        segment = self.cluster.psql("SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.monotonic() + 600
        while self.cluster.psql("SELECT coalesce(last_archived_wal, '') >= '%s' FROM pg_stat_archiver" % segment) != "t":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{segment} was not archived within 10 minutes")
            time.sleep(0.5)
        return int(self.cluster.psql(f"SELECT pg_wal_lsn_diff('{end}', '{start}')::bigint"))

    def _stop(self, data: str) -> None:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            run_as_pg([self.cluster.tool("pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(data, ignore_errors=True)

    def pitr_ours(self) -> Row:
        data = os.path.join(make_pg_dir(os.path.join(self.work, "r1")), "data")
        port = free_port()
        try:
            m = check_ok(measure(self.agent + ["--config", self.cfg, "--json", "pitr", "--latest", "--data-dir", data,
                                               "--port", str(port)], env=self.env, cwd=self.files,
                                 label="pg-backup pitr"), "pg-backup pitr --latest")
            doc = parse_json_stdout(m)
            phases = doc.get("phases", {})
            return Row("", m, extra={"phases": phases, "replay": phases.get("startup", 0) + phases.get("wal_replay", 0),
                                     "reached": doc.get("reached"),
                                     "restored": restore_gaps(os.path.join(data, "log", "pg-backup-recovery.log"))})
        finally:
            self._stop(data)

    def restore_pgbackrest(self) -> Row:
        data = os.path.join(make_pg_dir(os.path.join(self.work, "r2")), "data")
        port = free_port()
        make_pg_dir(data)
        try:
            t0 = time.monotonic()
            m = check_ok(measure(self.pgbr + [f"--pg1-path={data}", "--archive-mode=off", "--type=default",
                                              f"--recovery-option=port={port}", "restore"],
                                 env=self.env, cwd=self.files, label="pgbackrest restore"), "pgbackrest restore")
            restored = time.monotonic()
            with contextlib.suppress(FileNotFoundError):   # one server log per round (it is profiled)
                os.unlink(os.path.join(data, "..", "log"))
            start = measure([self.cluster.tool("pg_ctl"), "-D", data, "-l", os.path.join(data, "..", "log"), "-w",
                             "-t", "3600", "start"], env=self.env, cwd=self.files)
            check_ok(start, "pg_ctl start (pgBackRest restore)")
            while True:
                res = run_as_pg([self.cluster.tool("psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port), "-c",
                                 "SELECT pg_is_in_recovery()"], env=self.env, check=False)
                if res.stdout.strip() == "f":
                    break
                time.sleep(0.1)
            done = time.monotonic()
            m.wall = done - t0  # restore + start + replay until promoted, like pitr
            return Row("", m, extra={"phases": {"restore": round(restored - t0, 1),
                                                "startup_and_replay": round(done - restored, 1)},
                                     "replay": done - restored,
                                     "restored": restore_gaps(os.path.join(data, "..", "log"))})
        finally:
            self._stop(data)


def free_port() -> int:
    from common import free_port as fp
    return fp()


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def fmt(x: Optional[float], digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def report(rows: Dict[str, Row], restores: Dict[str, List[Row]], wal_bytes: Optional[int], args: argparse.Namespace,
           started: dt.datetime, db_size: int, version: str, zstd_note: str) -> str:
    base = rows.get("pgbackrest")
    head = (f"pg-backup physical benchmark, {started:%Y-%m-%d %H:%M} UTC, pgbench scale {args.scale} with random "
            f"filler ({db_size / 1e6:,.0f} MB database), {os.cpu_count()} cores ({cpu_model()}), {version}, "
            f"pgBackRest {pgbackrest_version()}, repeat {args.repeat}")
    out = [head, "", markdown_table(
        ["method", "wall s", "× pgBackRest", "CPU s (tree)", "server CPU s", "stored MB", "stored × pgBackRest",
         "largest process peak RSS MB"],
        [[r.label, f"ERROR: {r.error}", "", "", "", "", "", ""] if r.error else
         [r.label, f"{r.m.wall:.1f}" + (f" ({min(r.walls):.1f}–{max(r.walls):.1f})" if len(r.walls) > 1 else ""),
          fmt(ratio(r.m.wall, base.m.wall if base and base.m else None)), f"{r.m.cpu:.1f}", f"{r.m.server_cpu:.1f}",
          f"{(r.stored or 0) / 1e6:,.1f}", fmt(ratio(r.stored, base.stored if base else None), 3),
          kb_to_mb(r.m.maxrss_kb)] for r in rows.values()])]
    if zstd_note:
        out += ["", zstd_note]
    ours = rows.get("ours")
    if ours and ours.m and base and base.m:
        speed, size = ratio(ours.m.wall, base.m.wall), ratio(ours.stored, base.stored)
        out += ["", f"- backup wall time / pgBackRest: {fmt(speed)} (target < {TARGETS['speed']:.2f}): "
                    f"{'PASS' if speed is not None and speed < TARGETS['speed'] else 'MISS'}",
                f"- stored size / pgBackRest: {fmt(size, 3)} (target <= {TARGETS['size']:.2f}): "
                f"{'PASS' if size is not None and size <= TARGETS['size'] else 'MISS'}"]
    if restores:
        out += ["", recovery_report(restores, wal_bytes)]
    return "\n".join(out) + "\n"


def restore_gaps(server_log: str) -> Optional[List[float]]:
    """The profile of WAL replay from the recovered server's log (default log_line_prefix '%m [%p] '):
    seconds from the server's start to the first 'restored log file', then between consecutive ones --
    how long PostgreSQL waited for restore_command plus its own replay of each segment."""
    import re

    stamps: List[float] = []
    pattern = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)")
    try:
        with open(server_log, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                m = pattern.match(line)
                if m and ("starting PostgreSQL" in line or "restored log file" in line):
                    stamps.append(dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp())
    except OSError:
        return None
    return [b - a for a, b in zip(stamps, stamps[1:])] or None


RESTORE_LABELS = {"ours": "pg-backup pitr --latest (scratch port)",
                  "pgbackrest": "pgBackRest restore --type=default + start until promoted"}


def alternating_restores(bench: "Bench", rounds: int) -> Dict[str, List[Row]]:
    """``rounds`` rounds of both recoveries, alternating which goes first (a drift of the host's speed
    then hits both alike); a failed run is kept as a row with its error."""
    runs: Dict[str, List[Row]] = {"ours": [], "pgbackrest": []}
    fns = {"ours": bench.pitr_ours, "pgbackrest": bench.restore_pgbackrest}
    for r in range(rounds):
        for key in (("ours", "pgbackrest") if r % 2 == 0 else ("pgbackrest", "ours")):
            log(f"recovery round {r + 1}/{rounds}: {RESTORE_LABELS[key]}")
            try:
                row = fns[key]()
            except Exception as exc:  # one failing method must not hide the other's results
                text = str(exc).strip()
                row = Row(RESTORE_LABELS[key], error=text.splitlines()[-1] if text else repr(exc))
            row.label = RESTORE_LABELS[key]
            runs[key].append(row)
    return runs


def gaps_text(runs: List[Optional[List[float]]]) -> str:
    """Median over runs of the first gap, and the median (max) of the per-segment gaps of all runs."""
    import statistics

    runs = [g for g in runs if g]
    if not runs:
        return "–"
    rest = [x for g in runs for x in g[1:]]
    text = f"{statistics.median([g[0] for g in runs]):.2f}"
    if rest:
        text += f"; {statistics.median(rest):.2f} ({max(rest):.2f}) over {len(rest)} segments"
    return text


def recovery_report(runs: Dict[str, List[Row]], wal_bytes: Optional[int]) -> str:
    """One row per tool (median wall with its range, median phases, replay MB/s), then the targets as
    the median over rounds of the per-round ratio pg-backup / pgBackRest."""
    import statistics

    mbw = (wal_bytes or 0) / 1e6
    rows = []
    for key, label in RESTORE_LABELS.items():
        good = [r for r in runs.get(key, []) if not r.error]
        errors = sorted({r.error for r in runs.get(key, []) if r.error})
        if not good:
            rows.append([label, f"ERROR: {'; '.join(errors) or 'not run'}", "", "", ""])
            continue
        walls = [r.m.wall for r in good]
        phases = sorted({k for r in good for k in r.extra.get("phases", {})})
        rates = [mbw / r.extra["replay"] for r in good if r.extra.get("replay")]
        rows.append([label, f"{statistics.median(walls):.1f}" + (f" ({min(walls):.1f}–{max(walls):.1f})"
                                                                    if len(walls) > 1 else ""),
                     ", ".join(f"{k} {statistics.median([r.extra['phases'].get(k, 0.0) for r in good]):.1f}"
                               for k in phases),
                     fmt(statistics.median(rates) if rates else None, 0)
                     + (f" ({min(rates):.0f}–{max(rates):.0f})" if len(rates) > 1 else ""),
                     gaps_text([r.extra.get("restored") for r in good])])
    out = [f"Recovery of everything archived after pgbench ({mbw:,.0f} MB of WAL after the backups), "
           f"{len(runs.get('ours', []))} alternating round(s):", "",
           markdown_table(["method", "wall s, median (range)", "phases s (median)", "WAL replay MB/s, median (range)",
                           "server start → 1st restored segment; then s per segment, median (max)"], rows)]
    pairs = [(a, b) for a, b in zip(runs.get("ours", []), runs.get("pgbackrest", [])) if not a.error and not b.error]
    if pairs:
        walls = [a.m.wall / b.m.wall for a, b in pairs]
        rates = [b.extra["replay"] / a.extra["replay"] for a, b in pairs
                 if a.extra.get("replay") and b.extra.get("replay")]

        def verdict(vals: List[float], ok) -> str:  # type: ignore[no-untyped-def]
            if not vals:
                return "–"
            m = statistics.median(vals)
            rng = f" (rounds: {', '.join(f'{v:.2f}' for v in vals)})" if len(vals) > 1 else ""
            return f"{m:.2f}{rng}: {'PASS' if ok(m) else 'MISS'}"
        out += ["", f"- pitr --latest wall / pgBackRest restore + promotion: "
                    f"{verdict(walls, lambda m: m <= TARGETS['recovery'])} (target <= {TARGETS['recovery']:.1f})",
                f"- WAL replay rate / pgBackRest's: {verdict(rates, lambda m: m >= 1.0)} (target >= 1.0)"]
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=50)
    p.add_argument("--no-signing", dest="signing", action="store_false",
                   help="no signing key (default: sign with one made by 'keys create --purpose signing')")
    p.add_argument("--quick", action="store_true", help="scale 5, pgbench 5 s, one run each (a smoke run)")
    p.add_argument("--repeat", type=int, default=1, help="runs per backup method (the median is reported)")
    p.add_argument("--pgbench-seconds", type=int, default=30)
    p.add_argument("--recovery-rounds", type=int, default=3,
                   help="alternating rounds of both recoveries (at least --repeat); medians and ranges reported")
    p.add_argument("--output", help="also write the report here")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--pg-bin", help="PostgreSQL bin directory (default: newest /usr/lib/postgresql/*/bin)")
    p.add_argument("--agent", help="command that runs pg-backup (default .venv/bin/pg-backup)")
    args = p.parse_args(argv)
    if args.quick:
        args.scale, args.pgbench_seconds, args.repeat = 5, 5, 1
    require_root()
    if not shutil.which("pgbackrest"):
        sys.exit("pgbackrest is not installed: scripts/install-deps.sh pgbackrest")
    started = dt.datetime.now(dt.timezone.utc)
    work = make_pg_dir(tempfile.mkdtemp(prefix="pgb-bench-phys-", dir="/tmp"))
    bin_dir = pg_bin_dir(args.pg_bin)
    cluster = TempCluster(work, bin_dir, CLUSTER_SETTINGS)
    rows: Dict[str, Row] = {}
    restores: Dict[str, List[Row]] = {}
    wal_bytes = None
    failed = False
    with signals_raise():
        try:
            cluster.start()
            bench = Bench(args, work, cluster)
            bench.make_database(args.scale)
            bench.enable_archiving()
            db_size = int(cluster.psql(f"SELECT pg_database_size('{DB}')"))
            version = cluster.psql("SELECT 'PostgreSQL ' || current_setting('server_version')")
            log(f"{DB}: {db_size / 1e6:,.0f} MB; warm-up read of the data directory (not timed)")
            subprocess.run(["tar", "-cf", "/dev/null", "-C", cluster.data, "."], check=False)
            rows["ours"] = bench.repeated("pg-backup backup --physical (local repository)", bench.ours)
            rows["pgbackrest"] = bench.repeated("pgBackRest backup --type=full (zst, process-max=2, local repo)",
                                                bench.pgbackrest)
            rows["basebackup"] = bench.repeated("pg_basebackup -Ft -X none --compress=server-zstd", bench.basebackup)
            zstd_note = ""
            if rows["basebackup"].error and "zstd" in rows["basebackup"].error:
                zstd_note = f"pg_basebackup --compress=server-zstd is not available here: {rows['basebackup'].error}"
            wal_bytes = bench.pgbench(args.pgbench_seconds)
            restores = alternating_restores(bench, max(args.repeat, args.recovery_rounds))
            failed = any(r.error for r in list(rows.values()) + [x for v in restores.values() for x in v]
                         if r is not rows.get("basebackup"))
            text = report(rows, restores, wal_bytes, args, started, db_size, version, zstd_note)
        except BaseException:
            failed = True
            raise
        finally:
            tear_down(cluster, work, args.keep)
    emit(text, args.output)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
