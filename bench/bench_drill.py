#!/usr/bin/env python3
"""Drill benchmark: the RTO of ``pg-backup drill`` with its breakdown, against pgBackRest ``restore``.

    sudo python3 bench/bench_drill.py [--scale 50 | --quick] [--output FILE] [--keep]

Builds a throw-away PostgreSQL cluster with bench_logical.py's random-filler pgbench database (scale N,
compresses ~2x), switches it to WAL archiving into BOTH tools' local repositories (one archive_command:
``pg-backup wal-push %p && pgbackrest archive-push %p``), takes a physical base backup with each tool
(pg-backup: zstd + OpenPGP AES-256; pgBackRest: zstd + aes-256-cbc), runs a pgbench workload so that
WAL must be replayed, then:

  1. ``pg-backup drill`` (marker, WAL switch, recovery of the newest base backup + WAL on a scratch port,
     checks) and reads its RTO, phases and RPO from the JSON report;
  2. pgBackRest on the same WAL: ``pgbackrest restore`` into an empty directory, start the server on a
     scratch port with archiving off, wait for the end of recovery (promotion), run the same checks.

Prints Markdown tables (ratios of the same run; absolute seconds depend on the machine). Everything it
started is stopped and its work directory removed at the end, also on failure or SIGTERM. Not a test.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_logical import ACCOUNTS_PER_SCALE, agent_command, cpu_model, make_databases  # noqa: E402
from common import (Measurement, agent_setup, encryption_section, tear_down, TempCluster, check_ok, free_port, log, make_pg_dir, markdown_table,  # noqa: E402
                    measure, parse_json_stdout, pg_bin_dir, pg_env, require_root, run_as_pg, signals_raise,
                    write_pg_file)

GENERATE_SETTINGS = {
    "wal_level": "minimal", "max_wal_senders": "0", "archive_mode": "off", "max_wal_size": "'8GB'",
    "autovacuum": "off", "shared_buffers": "'256MB'",
}
ARCHIVE_SETTINGS = {"wal_level": "replica", "max_wal_senders": "4", "archive_mode": "on"}
#: The drill report's RTO phases; ``combine`` (pg_combinebackup) is 0 unless the newest backup is an
#: incremental chain.
PHASES = ("download", "decrypt_decompress", "extract", "combine", "wal_replay", "startup", "checks")


def restart(cluster: TempCluster) -> None:
    run_as_pg([cluster.tool("pg_ctl"), "-D", cluster.data, "-l", cluster.logfile, "-m", "fast", "-w", "-t", "300",
               "restart"], env=cluster.env())


class DrillBench:
    def __init__(self, args: argparse.Namespace, work: str, cluster: TempCluster):
        self.args = args
        self.work = work
        self.cluster = cluster
        setup = agent_setup(agent_command, args.agent, work, cluster.port)
        self.home, self.agent, self.env = setup.home, setup.agent, setup.env
        secrets, passphrase = setup.secrets, setup.passphrase
        self.expected_accounts = ACCOUNTS_PER_SCALE * args.scale
        self.checks = [
            {"name": "accounts", "database": "bench_random", "sql": "SELECT count(*) FROM pgbench_accounts",
             "expect": f"= {self.expected_accounts}"},
            {"name": "workload replayed", "database": "bench_random", "sql": "SELECT count(*) FROM pgbench_history",
             "expect": f"= {args.transactions}"},
        ]
        self.scratch = make_pg_dir(os.path.join(work, "s"))  # short: the scratch server's socket lives here
        self.cfg = write_pg_file(os.path.join(secrets, "agent.yml"), json.dumps({
            "cluster": "bench", "postgres": {"host": "127.0.0.1", "port": cluster.port, "user": "postgres"},
            **encryption_section(setup),
            "repository": {"type": "local", "path": make_pg_dir(os.path.join(work, "repo"))},
            "physical": {"checkpoint": "fast"}, "wal": {"archive_timeout_seconds": 60},
            "verify": {"checks": self.checks, "scratch_dir": self.scratch},
            "drill": {"port": free_port(), "rto_target_minutes": 240, "rpo_target_minutes": 60},
            "paths": {"state_dir": make_pg_dir(os.path.join(work, "state"))}}, indent=1))
        self.pgbr_conf = write_pg_file(os.path.join(secrets, "pgbackrest.conf"), "\n".join([
            "[global]",
            f"repo1-path={make_pg_dir(os.path.join(work, 'pgbr-repo'))}",
            "repo1-retention-full=2",
            "repo1-cipher-type=aes-256-cbc",
            "repo1-cipher-pass=benchmark-passphrase-not-a-secret",
            "compress-type=zst", "compress-level=1", f"process-max={os.cpu_count() or 2}",
            f"log-path={make_pg_dir(os.path.join(work, 'pgbr-log'))}",
            f"lock-path={make_pg_dir(os.path.join(work, 'pgbr-lock'))}",
            f"spool-path={make_pg_dir(os.path.join(work, 'pgbr-spool'))}",
            "log-level-console=warn", "log-level-file=info", "start-fast=y", "archive-timeout=300",
            "", "[bench]", f"pg1-path={cluster.data}", f"pg1-port={cluster.port}", f"pg1-socket-path={cluster.sock}",
            "pg1-user=postgres", ""]))
        self.results: Dict[str, Measurement] = {}
        self.drill: Dict = {}
        self.sizes: Dict[str, int] = {}

    def pgbr(self, *args: str) -> List[str]:
        return ["pgbackrest", f"--config={self.pgbr_conf}", "--stanza=bench", *args]

    def timed(self, key: str, cmd: List[str], label: str) -> Measurement:
        log(label)
        m = check_ok(measure(cmd, env=self.env, cwd=self.home, cluster=self.cluster, label=label), label)
        self.results[key] = m
        log(f"{label}: {m.wall:.1f} s")
        return m

    # -- setup ------------------------------------------------------------------------------------
    def enable_archiving(self) -> None:
        archive = (f"{' '.join(self.agent)} --config {self.cfg} --quiet wal-push %p && "
                   f"pgbackrest --config={self.pgbr_conf} --stanza=bench archive-push %p")
        settings = dict(ARCHIVE_SETTINGS, archive_command="'" + archive.replace("'", "''") + "'")
        self.cluster.psql("".join(f"ALTER SYSTEM SET {k} = {v};\n" for k, v in settings.items()))
        restart(self.cluster)
        run_as_pg(self.pgbr("stanza-create"), env=self.env)
        run_as_pg(self.pgbr("check"), env=self.env)

    def backups(self) -> None:
        self.cluster.psql("CHECKPOINT")
        m = self.timed("backup_pgb", self.agent + ["--config", self.cfg, "--json", "backup", "--physical"],
                       "pg-backup backup --physical")
        self.sizes["pgb"] = parse_json_stdout(m)["backup"]["stored_bytes"]
        self.cluster.psql("CHECKPOINT")
        self.timed("backup_pgbr", self.pgbr("backup", "--type=full"), "pgbackrest backup --type=full")
        info = json.loads(run_as_pg(self.pgbr("info", "--output=json"), env=self.env).stdout)
        self.sizes["pgbr"] = info[0]["backup"][-1]["info"]["repository"]["delta"]

    def workload(self) -> None:
        log(f"pgbench workload: {self.args.transactions} transactions (WAL to replay)")
        before = self.cluster.psql("SELECT pg_current_wal_lsn()")
        run_as_pg([self.cluster.tool("pgbench"), "-n", "-c", "2", "-t", str(self.args.transactions // 2),
                   "bench_random"], env=self.env)
        self.wal_bytes = int(self.cluster.psql(f"SELECT pg_current_wal_lsn() - '{before}'::pg_lsn"))

    # -- the two recoveries -------------------------------------------------------------------------
    def pg_backup_drill(self) -> None:
        m = self.timed("drill", self.agent + ["--config", self.cfg, "--json", "drill"], "pg-backup drill")
        self.drill = parse_json_stdout(m)
        if not self.drill.get("passed"):
            raise RuntimeError(f"the drill failed: {self.drill.get('failures')} {self.drill.get('error')}")

    def pgbackrest_restore(self) -> None:
        data = os.path.join(self.scratch, "pgbr")
        port = free_port()
        self.timed("pgbr_restore", self.pgbr("restore", f"--pg1-path={data}", "--archive-mode=off",
                                             "--type=default"), "pgbackrest restore (files)")
        opts = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.scratch} -c archive_mode=off"
        t0 = time.monotonic()
        run_as_pg([self.cluster.tool("pg_ctl"), "-D", data, "-l", os.path.join(self.work, "pgbr-restored.log"),
                   "-o", opts, "-w", "-t", "3600", "start"], env=self.env)
        env = pg_env(self.home, {"PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "postgres"})
        try:
            while run_as_pg([self.cluster.tool("psql"), "-X", "-A", "-t", "-c", "SELECT pg_is_in_recovery()"],
                            env=env).stdout.strip() != "f":
                time.sleep(0.05)
            self.pgbr_replay_startup = time.monotonic() - t0
            t1 = time.monotonic()
            for c in self.checks:
                got = run_as_pg([self.cluster.tool("psql"), "-X", "-A", "-t", "-d", c["database"], "-c", c["sql"]],
                                env=env).stdout.strip()
                if f"= {got}" != c["expect"]:
                    raise RuntimeError(f"pgBackRest restore: check {c['name']} got {got}, expected {c['expect']}")
            self.pgbr_checks = time.monotonic() - t1
        finally:
            run_as_pg([self.cluster.tool("pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"], env=env,
                      check=False)
            shutil.rmtree(data, ignore_errors=True)

    # -- report -------------------------------------------------------------------------------------
    def report(self, started: dt.datetime, elapsed: float, version: str) -> str:
        d = self.drill
        phases = d["rto"]["phases"]
        files_pgb = sum(phases.get(k, 0.0) for k in ("download", "decrypt_decompress", "extract", "combine"))
        replay_pgb = phases.get("wal_replay", 0.0) + phases.get("startup", 0.0)
        files_pgbr = self.results["pgbr_restore"].wall
        total_pgbr = files_pgbr + self.pgbr_replay_startup + self.pgbr_checks
        rto = d["rto"]["seconds"]

        def ratio(a: float, b: float) -> str:
            return f"{a / b:.2f}×" if b else "–"

        out = [f"pg-backup drill benchmark, {started:%Y-%m-%d %H:%M} UTC, pgbench scale {self.args.scale} with random "
               f"filler (bench_logical.py's generator), {self.args.transactions} pgbench transactions after the base "
               f"backups ({self.wal_bytes / 1e6:,.0f} MB of WAL to replay), {os.cpu_count()} cores "
               f"({cpu_model()}), {version}, local repositories on the same disk", ""]
        out.append("Drill RTO breakdown (`pg-backup drill`, from its JSON report):")
        out.append("")
        rows = [[k.replace("_", " ").replace("decrypt decompress", "decrypt + decompress"), f"{phases.get(k, 0.0):.1f}"]
                for k in PHASES]
        rows.append(["**RTO** (loss → accepting connections, checks passed)", f"**{rto:.1f}**"])
        rows.append(["preparing the primary (marker, WAL switch, archive wait; not in the RTO)",
                     f"{d.get('prepare_seconds', 0.0):.1f}"])
        rows.append(["RPO", f"{d['rpo']['seconds']:.1f} ({d['rpo']['method'].split(':')[0]})"])
        out.append(markdown_table(["phase", "seconds"], rows))
        out.append("")
        out.append("Against pgBackRest 2.45 on the same base backup moment and the same WAL:")
        out.append("")
        b_pgb, b_pgbr = self.results["backup_pgb"].wall, self.results["backup_pgbr"].wall
        rows = [
            ["base backup (wall s)", f"{b_pgb:.1f}", f"{b_pgbr:.1f}", ratio(b_pgb, b_pgbr)],
            ["stored size of the base backup (MB)", f"{self.sizes['pgb'] / 1e6:,.1f}",
             f"{self.sizes['pgbr'] / 1e6:,.1f}", ratio(self.sizes["pgb"], self.sizes["pgbr"])],
            ["restore phase: files in place (download + decrypt + decompress + extract [+ combine] / "
             "`pgbackrest restore`)",
             f"{files_pgb:.1f}", f"{files_pgbr:.1f}", ratio(files_pgb, files_pgbr)],
            ["WAL replay + startup until promoted", f"{replay_pgb:.1f}", f"{self.pgbr_replay_startup:.1f}",
             ratio(replay_pgb, self.pgbr_replay_startup)],
            ["checks", f"{phases.get('checks', 0.0):.1f}", f"{self.pgbr_checks:.1f}", ""],
            ["**total: loss → checked server**", f"**{rto:.1f}**", f"**{total_pgbr:.1f}**",
             f"**{ratio(rto, total_pgbr)}**"],
        ]
        out.append(markdown_table(["step", "pg-backup", "pgBackRest", "pg-backup / pgBackRest"], rows))
        out.append("")
        out.append("Both tools restore from a local repository with zstd level 1 and encryption (pg-backup: OpenPGP "
                   "AES-256 through gpg; pgBackRest: aes-256-cbc), and fetch WAL with their own restore_command "
                   f"(pg-backup wal-fetch; pgbackrest archive-get). pgBackRest runs with process-max="
                   f"{os.cpu_count() or 2}. pg-backup's phases come from `recovery.flow.recover`; pgBackRest's restore is the "
                   "wall time of `pgbackrest restore`, its replay the time from `pg_ctl start` to promotion.")
        out.append(f"Whole run {elapsed / 60:.1f} min; agent `{' '.join(self.agent)}`.")
        return "\n".join(out) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=int, default=50, help="pgbench scale (default 50)")
    p.add_argument("--transactions", type=int, default=20000, help="pgbench transactions after the base backups")
    p.add_argument("--quick", action="store_true", help="smoke run: scale 2, 2,000 transactions")
    p.add_argument("--output", help="also write the Markdown report to this file")
    p.add_argument("--keep", action="store_true", help="keep the work directory (the cluster is stopped anyway)")
    p.add_argument("--pg-bin", help="PostgreSQL server binaries (default: newest /usr/lib/postgresql/*/bin)")
    p.add_argument("--agent", help="command that runs the agent as postgres (default: .venv/bin/pg-backup)")
    args = p.parse_args(argv)
    if args.quick:
        args.scale, args.transactions = 2, 2000
    require_root()
    if shutil.which("pgbackrest") is None:
        sys.exit("pgbackrest is not installed (apt-get install pgbackrest, or scripts/install-deps.sh pgbackrest)")
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    bin_dir = pg_bin_dir(args.pg_bin)
    work = tempfile.mkdtemp(prefix="pgbd-", dir="/tmp")  # short: Unix socket paths stay < 108 bytes
    make_pg_dir(work, 0o711)
    cluster: Optional[TempCluster] = None
    failed = False
    try:
        with signals_raise():
            cluster = TempCluster(work, bin_dir, GENERATE_SETTINGS)
            cluster.start()
            log(f"cluster on 127.0.0.1:{cluster.port} ({work})")
            make_databases(cluster, args.scale)
            cluster.psql("DROP DATABASE bench_plain")  # only the random-filler database is restored
            bench = DrillBench(args, work, cluster)
            bench.enable_archiving()
            bench.backups()
            bench.workload()
            bench.pg_backup_drill()
            bench.pgbackrest_restore()
            version = "PostgreSQL " + cluster.psql("SHOW server_version")
            text = bench.report(started, time.monotonic() - t0, version)
            print(text)
            if args.output:
                with open(args.output, "w", encoding="utf-8") as fh:
                    fh.write(text)
    except (RuntimeError, KeyError) as exc:
        log(f"FAILED: {exc}")
        failed = True
    finally:
        tear_down(cluster, work, args.keep)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
