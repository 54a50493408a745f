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
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_logical import ACCOUNTS_PER_SCALE, agent_command, cpu_model, filler_sql  # noqa: E402
from common import (Measurement, agent_setup, tear_down, TempCluster, check_ok, kb_to_mb, log, make_pg_dir, markdown_table,  # noqa: E402
                    measure, parse_json_stdout, pg_bin_dir, require_root, run_as_pg, signals_raise,
                    write_pg_file)

TARGETS = {"speed": 1.0, "size": 1.05}
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
            "encryption": {"mode": "passphrase", "passphrase_file": passphrase},
            "repository": {"type": "local", "path": make_pg_dir(os.path.join(work, "repo"))},
            "paths": {"state_dir": make_pg_dir(os.path.join(work, "state"))},
            "physical": {"checkpoint": "fast"}}, indent=1))
        pgbr = make_pg_dir(os.path.join(work, "pgbr"))
        for sub in ("repo", "lock", "spool", "log"):
            make_pg_dir(os.path.join(pgbr, sub))
        self.pgbr_repo = os.path.join(pgbr, "repo")
        self.pgbr_cfg = write_pg_file(os.path.join(pgbr, "pgbackrest.conf"), "\n".join([
            "[global]", f"repo1-path={self.pgbr_repo}", "compress-type=zst", "process-max=2", "start-fast=y",
            "log-level-console=warn", "log-level-stderr=warn", "log-level-file=off", f"lock-path={pgbr}/lock",
            f"spool-path={pgbr}/spool", f"log-path={pgbr}/log", "repo1-retention-full=9999",
            "[bench]", f"pg1-path={cluster.data}", f"pg1-port={cluster.port}", f"pg1-socket-path={cluster.sock}",
        ]) + "\n")
        self.pgbr = ["pgbackrest", f"--config={self.pgbr_cfg}", "--stanza=bench"]

    # -- setup --------------------------------------------------------------------------------------
    def make_database(self, scale: int) -> None:
        pgbench, fast = self.cluster.tool("pgbench"), {"PGOPTIONS": "-c synchronous_commit=off"}
        self.cluster.psql(f"CREATE DATABASE {DB}")
        log(f"generating {DB}: pgbench schema, scale {scale}, random hex filler")
        run_as_pg([pgbench, "-i", "-q", "-s", str(scale), "-I", "dt", DB], env=self.cluster.env(fast))
        try:
            self.cluster.psql("CREATE EXTENSION IF NOT EXISTS pgcrypto", DB)
            have = True
        except RuntimeError:
            have = False
        self.cluster.psql(f"""
            BEGIN;
            TRUNCATE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history;
            INSERT INTO pgbench_branches SELECT b, 0, {filler_sql(88, have)} FROM generate_series(1, {scale}) b;
            INSERT INTO pgbench_tellers SELECT t, (t - 1) / 10 + 1, 0, {filler_sql(84, have)}
              FROM generate_series(1, {10 * scale}) t;
            INSERT INTO pgbench_accounts SELECT a, (a - 1) / {ACCOUNTS_PER_SCALE} + 1, 0, {filler_sql(84, have)}
              FROM generate_series(1, {ACCOUNTS_PER_SCALE * scale}) a;
            COMMIT;""", DB, extra_env=fast)
        run_as_pg([pgbench, "-i", "-q", "-s", str(scale), "-I", "vp", DB], env=self.cluster.env(fast))

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
                                     "reached": doc.get("reached")})
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
                                     "replay": done - restored})
        finally:
            self._stop(data)


def free_port() -> int:
    from common import free_port as fp
    return fp()


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def fmt(x: Optional[float], digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def report(rows: Dict[str, Row], restores: Dict[str, Row], wal_bytes: Optional[int], args: argparse.Namespace,
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
        rbase = restores.get("pgbackrest")
        mbw = (wal_bytes or 0) / 1e6
        out += ["", f"Recovery of everything archived after pgbench ({mbw:,.0f} MB of WAL after the backups):", "",
                markdown_table(["method", "wall s", "× pgBackRest", "phases s", "WAL replay MB/s"], [
                    [r.label, f"ERROR: {r.error}", "", "", ""] if r.error else
                    [r.label, f"{r.m.wall:.1f}", fmt(ratio(r.m.wall, rbase.m.wall if rbase and rbase.m else None)),
                     ", ".join(f"{k} {v:.1f}" for k, v in r.extra.get("phases", {}).items()),
                     fmt(mbw / r.extra["replay"] if r.extra.get("replay") else None, 0)] for r in restores.values()])]
    return "\n".join(out) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=50)
    p.add_argument("--quick", action="store_true", help="scale 5, pgbench 5 s, one run each (a smoke run)")
    p.add_argument("--repeat", type=int, default=1, help="runs per backup method (the median is reported)")
    p.add_argument("--pgbench-seconds", type=int, default=30)
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
    restores: Dict[str, Row] = {}
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
            restores["ours"] = bench.repeated("pg-backup pitr --latest (scratch port)", bench.pitr_ours)
            restores["pgbackrest"] = bench.repeated("pgBackRest restore --type=default + start until promoted",
                                                    bench.restore_pgbackrest)
            failed = any(r.error for r in list(rows.values()) + list(restores.values())
                         if r is not rows.get("basebackup"))
            text = report(rows, restores, wal_bytes, args, started, db_size, version, zstd_note)
        except BaseException:
            failed = True
            raise
        finally:
            tear_down(cluster, work, args.keep)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
