#!/usr/bin/env python3
"""Logical backup benchmark: pg-backup against bare pg_dump, the seed script's pipeline and pg_restore.

    sudo python3 bench/bench_logical.py [--scale 50 | --quick] [--output FILE] [--keep]

Builds a throw-away PostgreSQL cluster (as the postgres user, 127.0.0.1, a free port), fills two
databases (pgbench scale N with random hex filler so a dump compresses ~2x, and plain pgbench scale N,
which compresses far more), starts moto_server as an S3 endpoint, and for each database measures:

  1. pg-backup backup to a local repository
  2. pg-backup backup to S3 (moto)
  3. pg_dump -Fc --no-sync -f /dev/null
  4. pg_dump -Fc -Z0 --no-sync -f /dev/null               (the read floor)
  5. pg_dump -Fc -f FILE; gzip FILE; sha256sum FILE.gz     (the seed pipeline, sequential)
  6. restore: pg-backup restore (from the local repository) vs createdb + pg_restore of a pg_dump -Fc file

and prints Markdown tables with the targets marked PASS/MISS. Everything it started is stopped and
its work directory removed at the end, also on failure or SIGTERM. Not part of ``make test``.
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
from typing import Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (REPO_ROOT, agent_setup, encryption_section, signing_section, tear_down, Measurement, MotoServer, TempCluster, check_ok, find_moto_server,  # noqa: E402
                    kb_to_mb, log, make_pg_dir, markdown_table, mb, measure, parse_json_stdout, pg_bin_dir,
                    pg_env, require_root, run_as_pg, signals_raise, write_pg_file)

TARGETS = {
    "floor": 1.5,      # pg-backup local wall <= 1.5 x pg_dump -Z0 to /dev/null
    "seed": 0.15,      # pg-backup local wall <= 0.15 x seed pipeline wall
    "size": 1.0,       # pg-backup stored size <= pg_dump -Fc size
    "rss_mb": 150.0,   # agent process peak RSS <= 150 MB
    "restore": 1.15,   # pg-backup restore wall <= 1.15 x pg_restore
}

CLUSTER_SETTINGS = {
    # fsync stays on (the default): dumps to a repository and restores pay for durability as in production.
    "wal_level": "minimal",          # lets the data generation skip WAL for freshly truncated tables
    "max_wal_senders": "0",
    "max_wal_size": "'8GB'",         # no checkpoint storms in the middle of a restore
    "autovacuum": "off",             # no background work bleeding into the next measurement
    "shared_buffers": "'256MB'",
}

ACCOUNTS_PER_SCALE = 100_000


@dataclass
class Step:
    key: str
    label: str
    m: Optional[Measurement] = None
    stored: Optional[int] = None
    raw: Optional[int] = None
    error: Optional[str] = None
    note: str = ""
    #: Wall times of every run when --repeat > 1 (the step itself is the median run).
    walls: List[float] = field(default_factory=list)


@dataclass
class DbResult:
    name: str
    title: str
    db_size: int = 0
    sample_zstd: Optional[float] = None
    sample_gzip: Optional[float] = None
    steps: Dict[str, Step] = field(default_factory=dict)


# -------------------------------------------------------------------------------------------------
# Data

def filler_sql(nbytes_hex: int, have_pgcrypto: bool) -> str:
    """Random lowercase hex of nbytes_hex characters: 4 bits of entropy per 8-bit char, i.e. ~2x."""
    if have_pgcrypto:
        return f"encode(gen_random_bytes({nbytes_hex // 2}), 'hex')"
    md5s = " || ".join(["md5(random()::text)"] * ((nbytes_hex + 31) // 32))
    return f"substr({md5s}, 1, {nbytes_hex})"


def make_databases(cluster: TempCluster, scale: int) -> None:
    pgbench = cluster.tool("pgbench")
    fast = {"PGOPTIONS": "-c synchronous_commit=off"}
    for db in ("bench_random", "bench_plain"):
        cluster.psql(f"CREATE DATABASE {db}")

    log(f"generating bench_plain: pgbench -i -s {scale}")
    run_as_pg([pgbench, "-i", "-q", "-s", str(scale), "bench_plain"], env=cluster.env(fast))

    log(f"generating bench_random: pgbench schema, scale {scale}, random hex filler")
    run_as_pg([pgbench, "-i", "-q", "-s", str(scale), "-I", "dt", "bench_random"], env=cluster.env(fast))
    try:
        cluster.psql("CREATE EXTENSION IF NOT EXISTS pgcrypto", "bench_random")
        have_pgcrypto = True
    except RuntimeError:
        have_pgcrypto = False
    # TRUNCATE in the same transaction as the INSERT: with wal_level=minimal the rows skip WAL.
    cluster.psql(f"""
        BEGIN;
        TRUNCATE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history;
        INSERT INTO pgbench_branches SELECT b, 0, {filler_sql(88, have_pgcrypto)}
          FROM generate_series(1, {scale}) b;
        INSERT INTO pgbench_tellers SELECT t, (t - 1) / 10 + 1, 0, {filler_sql(84, have_pgcrypto)}
          FROM generate_series(1, {10 * scale}) t;
        INSERT INTO pgbench_accounts SELECT a, (a - 1) / {ACCOUNTS_PER_SCALE} + 1, 0, {filler_sql(84, have_pgcrypto)}
          FROM generate_series(1, {ACCOUNTS_PER_SCALE * scale}) a;
        COMMIT;
    """, "bench_random", extra_env=fast)
    if have_pgcrypto:
        cluster.psql("DROP EXTENSION pgcrypto", "bench_random")  # same object set as bench_plain
    run_as_pg([pgbench, "-i", "-q", "-s", str(scale), "-I", "vp", "bench_random"], env=cluster.env(fast))
    cluster.psql("CHECKPOINT")


def sample_ratios(cluster: TempCluster, db: str) -> tuple:
    """zstd -3 and gzip -6 ratios of the first 200,000 accounts rows in COPY text form."""
    res = subprocess.run(["runuser", "-u", "postgres", "--", cluster.tool("psql"), "-X", "-h", "127.0.0.1",
                          "-p", str(cluster.port), "-d", db, "-c",
                          "COPY (SELECT * FROM pgbench_accounts ORDER BY aid LIMIT 200000) TO STDOUT"],
                         capture_output=True, check=True, cwd="/")
    data = res.stdout
    ratios = []
    for cmd in (["zstd", "-3", "-c", "-q"], ["gzip", "-6", "-c"]):
        if shutil.which(cmd[0]) is None:
            ratios.append(None)
            continue
        out = subprocess.run(cmd, input=data, capture_output=True, check=True).stdout
        ratios.append(len(data) / max(1, len(out)))
    return tuple(ratios)


# -------------------------------------------------------------------------------------------------
# The agent

def agent_command(explicit: Optional[str], home: str) -> tuple:
    """(argv prefix, extra env) to run pg-backup as postgres."""
    if explicit:
        return shlex.split(explicit), {}
    venv = os.path.join(REPO_ROOT, ".venv", "bin", "pg-backup")
    if os.path.exists(venv):
        return [venv], {}
    src = os.path.join(REPO_ROOT, "agent", "src")
    extra = {"PYTHONPATH": src}
    for python in (sys.executable, "/usr/bin/python3"):
        res = run_as_pg([python, "-c", "import pg_backup, zstandard, psycopg, yaml"], env=pg_env(home, extra),
                        check=False)
        if res.returncode == 0:
            return [python, "-m", "pg_backup"], extra
    sys.exit(f"no Python that the postgres user can run has the agent's dependencies: build {REPO_ROOT}/.venv "
             f"(from /usr/bin/python3) or pass --agent 'PYTHON -m pg_backup'")


# -------------------------------------------------------------------------------------------------
# Benchmark

class Bench:
    def __init__(self, args: argparse.Namespace, work: str, cluster: TempCluster, moto: Optional[MotoServer],
                 moto_error: Optional[str]):
        self.args = args
        self.work = work
        self.cluster = cluster
        self.moto = moto
        self.moto_error = moto_error
        setup = agent_setup(agent_command, args.agent, work, cluster.port)
        self.home, self.agent, self.env = setup.home, setup.agent, setup.env
        secrets, passphrase = setup.secrets, setup.passphrase
        self.files = make_pg_dir(os.path.join(work, "files"))
        base = {"cluster": "bench", "postgres": {"host": "127.0.0.1", "port": cluster.port, "user": "postgres"},
                **encryption_section(setup),
                **signing_section(setup, args.signing)}
        self.cfg_local = write_pg_file(os.path.join(secrets, "local.yml"), json.dumps({
            **base, "repository": {"type": "local", "path": make_pg_dir(os.path.join(work, "repo"))},
            "paths": {"state_dir": make_pg_dir(os.path.join(work, "state-local"))}}, indent=1))
        self.cfg_s3 = None
        if moto is not None:
            creds = write_pg_file(os.path.join(secrets, "aws"),
                                  "[default]\naws_access_key_id = bench\naws_secret_access_key = bench\n")
            self.cfg_s3 = write_pg_file(os.path.join(secrets, "s3.yml"), json.dumps({
                **base, "repository": {"type": "s3", "s3": {
                    "bucket": "bench", "endpoint_url": moto.url, "region": "us-east-1", "force_path_style": True,
                    "credentials_file": creds}},
                "paths": {"state_dir": make_pg_dir(os.path.join(work, "state-s3"))}}, indent=1))

    # -- helpers ----------------------------------------------------------------------------------
    def pg(self, name: str) -> str:
        return self.cluster.tool(name)

    def run(self, cmd: List[str], label: str) -> Measurement:
        self.cluster.psql("CHECKPOINT")  # no dirty buffers from the previous step written on our time
        return check_ok(measure(cmd, env=self.env, cwd=self.files, cluster=self.cluster, label=label), label)

    def repeated(self, fn: Callable[[], Step]) -> Step:
        """Run a step --repeat times and keep the run with the median wall time."""
        runs = []
        for i in range(self.args.repeat):
            runs.append(fn())
            if self.args.repeat > 1 and runs[-1].m:
                log(f"  run {i + 1}/{self.args.repeat}: {runs[-1].m.wall:.2f} s wall")
        runs.sort(key=lambda s: s.m.wall if s.m else 0)
        median = runs[len(runs) // 2]
        median.walls = [s.m.wall for s in runs if s.m]
        return median

    def guarded(self, res: DbResult, key: str, label: str, fn: Callable[[], Step]) -> None:
        log(f"{res.name}: {label}")
        try:
            step = self.repeated(fn)
        except Exception as exc:  # one failing method must not hide the others' results
            step = Step(key, label, error=str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc))
            log(f"{res.name}: {label} FAILED: {step.error}")
        step.label = label
        res.steps[key] = step
        if step.m:
            log(f"{res.name}: {label}: {step.m.wall:.1f} s wall, {step.m.cpu:.1f} s CPU")

    # -- methods ----------------------------------------------------------------------------------
    def pg_dump_null(self, db: str, key: str, z0: bool) -> Step:
        cmd = [self.pg("pg_dump"), "-Fc", "--no-sync", "-f", "/dev/null", db]
        if z0:
            cmd[2:2] = ["-Z0"]
        return Step(key, "", self.run(cmd, key))

    def seed(self, db: str) -> Step:
        path = os.path.join(self.files, f"{db}.dump")
        for p in (path, path + ".gz"):
            if os.path.exists(p):
                os.unlink(p)
        m = self.run([self.pg("pg_dump"), "-Fc", "-f", path, db], "pg_dump -Fc -f FILE")
        fc_size = os.path.getsize(path)
        m.add(check_ok(measure(["gzip", path], env=self.env, cwd=self.files, cluster=self.cluster), "gzip"))
        m.add(check_ok(measure(["sha256sum", path + ".gz"], env=self.env, cwd=self.files, cluster=self.cluster),
                       "sha256sum"))
        stored = os.path.getsize(path + ".gz")
        os.unlink(path + ".gz")
        return Step("seed", "", m, stored=stored, raw=fc_size)

    def agent_backup(self, db: str, key: str, cfg: Optional[str]) -> Step:
        if cfg is None:
            raise RuntimeError(f"no S3 endpoint: {self.moto_error}")
        m = self.run(self.agent + ["--config", cfg, "--json", "backup", "--tier", "daily", "--database", db],
                     f"pg-backup backup ({key})")
        doc = parse_json_stdout(m)
        backup = doc.get("backup", {})
        step = Step(key, "", m, stored=backup.get("stored_bytes"), raw=backup.get("raw_bytes"))
        step.note = doc.get("backup_id", "")
        return step

    def restore_pg_restore(self, db: str, dump: str) -> Step:
        target = f"{db}_pgr"
        self.cluster.psql(f"DROP DATABASE IF EXISTS {target}")
        m = self.run([self.pg("createdb"), "-T", "template0", target], "createdb")
        m.add(self.run([self.pg("pg_restore"), "-d", target, dump], "pg_restore"))
        self.cluster.psql(f"DROP DATABASE {target}")
        return Step("restore_pg", "", m)

    def restore_agent(self, db: str, backup_id: str) -> Step:
        target = f"{db}_pgb"
        self.cluster.psql(f"DROP DATABASE IF EXISTS {target}")
        m = self.run(self.agent + ["--config", self.cfg_local, "--json", "restore", backup_id, "--database", db,
                                   "--target-database", target, "--jobs", "1"], "pg-backup restore")
        self.cluster.psql(f"DROP DATABASE {target}")
        return Step("restore_agent", "", m)

    def bench_database(self, db: str, title: str) -> DbResult:
        res = DbResult(db, title)
        res.db_size = int(self.cluster.psql(f"SELECT pg_database_size('{db}')"))
        res.sample_zstd, res.sample_gzip = sample_ratios(self.cluster, db)
        log(f"{db}: {res.db_size / 1e6:.0f} MB on disk; accounts sample compresses {res.sample_zstd:.2f}x "
            f"(zstd -3), {res.sample_gzip:.2f}x (gzip -6)")
        log(f"{db}: warm-up read (not timed)")
        self.pg_dump_null(db, "warmup", z0=True)

        self.guarded(res, "floor", "pg_dump -Fc -Z0 --no-sync -f /dev/null (read floor)",
                     lambda: self.pg_dump_null(db, "floor", z0=True))
        self.guarded(res, "fc", "pg_dump -Fc --no-sync -f /dev/null", lambda: self.pg_dump_null(db, "fc", z0=False))
        self.guarded(res, "seed", "seed: pg_dump -Fc -f FILE; gzip FILE; sha256sum FILE.gz", lambda: self.seed(db))
        self.guarded(res, "local", "pg-backup backup → local repository",
                     lambda: self.agent_backup(db, "local", self.cfg_local))
        self.guarded(res, "s3", "pg-backup backup → S3 (moto)", lambda: self.agent_backup(db, "s3", self.cfg_s3))

        local = res.steps.get("local")
        if local and local.m and local.note:
            dump = os.path.join(self.files, f"{db}.ref.dump")
            log(f"{db}: reference dump for pg_restore (pg_dump -Fc, not timed)")
            check_ok(measure([self.pg("pg_dump"), "-Fc", "-f", dump, db], env=self.env, cwd=self.files),
                     "reference pg_dump")
            self.guarded(res, "restore_pg", "restore: createdb + pg_restore -d NEW FILE",
                         lambda: self.restore_pg_restore(db, dump))
            self.guarded(res, "restore_agent", "restore: pg-backup restore --target-database NEW",
                         lambda: self.restore_agent(db, local.note))
            os.unlink(dump)
        else:
            for key, label in (("restore_pg", "restore: createdb + pg_restore -d NEW FILE"),
                               ("restore_agent", "restore: pg-backup restore --target-database NEW")):
                res.steps[key] = Step(key, label, error="skipped: the local pg-backup backup failed")
        return res


# -------------------------------------------------------------------------------------------------
# Report

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def fmt(x: Optional[float], digits: int = 2, suffix: str = "") -> str:
    return "–" if x is None else f"{x:.{digits}f}{suffix}"


ROW_ORDER = ["local", "s3", "fc", "floor", "seed", "restore_pg", "restore_agent"]


def report(results: List[DbResult], args: argparse.Namespace, started: dt.datetime, elapsed: float,
           agent_cmd: List[str], server_version: str) -> str:
    out: List[str] = []
    out.append(f"pg-backup logical benchmark, {started:%Y-%m-%d %H:%M} UTC, pgbench scale {args.scale}, "
               f"{os.cpu_count()} cores ({cpu_model()}), {server_version}, repeat {args.repeat}")
    out.append("")
    header = ["database", "method", "wall s", "× read floor", "CPU s (tree)", "server CPU s",
              "largest process peak RSS MB", "agent peak RSS MB", "stored MB", "dump/stored"]
    rows = []
    for r in results:
        floor = r.steps.get("floor")
        floor_wall = floor.m.wall if floor and floor.m else None
        raw = next((s.raw for k, s in r.steps.items() if k in ("local", "s3") and s.raw), None)
        fc_size = r.steps["seed"].raw if r.steps.get("seed") and r.steps["seed"].raw else None
        for key in ROW_ORDER:
            s = r.steps.get(key)
            if s is None:
                continue
            if s.error:
                rows.append([r.title, s.label, f"FAILED: {s.error}"] + [""] * (len(header) - 3))
                continue
            m = s.m
            stored = s.stored
            note = ""
            if key == "fc":
                stored, note = fc_size, " ¹"
            is_agent = key in ("local", "s3", "restore_agent")
            dump_stored = ratio(raw, stored) if key in ("local", "s3", "fc", "seed") and stored else None
            wall_text = fmt(m.wall, 1)
            if len(s.walls) > 1:
                wall_text += f" ({min(s.walls):.1f}–{max(s.walls):.1f})"
            rows.append([r.title, s.label, wall_text,
                         fmt(ratio(m.wall, floor_wall)) if key not in ("restore_pg", "restore_agent") else "",
                         fmt(m.cpu, 1), fmt(m.server_cpu, 1), kb_to_mb(m.maxrss_kb),
                         kb_to_mb(m.root_hwm_kb) if is_agent else "", (mb(stored) + note) if stored else "",
                         fmt(dump_stored, 2, "×")])
    out.append(markdown_table(header, rows))
    out.append("")
    if args.repeat > 1:
        out.append(f"Each step ran {args.repeat} times; the run with the median wall time is shown, with the "
                   f"fastest and slowest wall times in parentheses.")
        out.append("")
    out.append("¹ pg_dump -Fc writes to /dev/null here; its size is that of the seed step's identical "
               "`pg_dump -Fc -f FILE`. \"dump/stored\" is the uncompressed custom-format dump size (the agent's "
               "`raw_bytes`) over the stored size. CPU s (tree) is user+sys of the command and every process it "
               "waited for (wait4); server CPU s is what the PostgreSQL server spent meanwhile (backends). "
               "\"largest process\" is ru_maxrss (the biggest single process: pg_dump, gpg, gzip or the agent); "
               "\"agent peak RSS\" is VmHWM of the pg-backup Python process alone.")
    out.append("")

    theader = ["target", "database", "measured", "limit", "result"]
    trows = []

    def add(name: str, db: str, value: Optional[float], limit: float, unit: str = "×", digits: int = 3,
            why: str = "") -> None:
        if value is None:
            trows.append([name, db, "n/a", f"≤ {limit:g}{unit}", "MISS (not measured)"])
            return
        verdict = "PASS" if value <= limit else "MISS"
        if verdict == "MISS" and why:
            verdict += f" ({why})"
        trows.append([name, db, f"{value:.{digits}f}{unit}", f"≤ {limit:g}{unit}", verdict])

    def wall(r: DbResult, key: str) -> Optional[float]:
        s = r.steps.get(key)
        return s.m.wall if s and s.m else None

    for r in results:
        local = r.steps.get("local")
        add("pg-backup local wall / read floor", r.title, ratio(wall(r, "local"), wall(r, "floor")), TARGETS["floor"])
        seed_wall, floor_wall = wall(r, "seed"), wall(r, "floor")
        unattainable = (seed_wall is not None and floor_wall is not None and TARGETS["seed"] * seed_wall < floor_wall)
        add("pg-backup local wall / seed pipeline wall", r.title, ratio(wall(r, "local"), seed_wall),
            TARGETS["seed"], why="unattainable here: the limit is below the read floor" if unattainable else "")
        seed = r.steps.get("seed")
        add("pg-backup stored size / pg_dump -Fc size", r.title,
            ratio(local.stored if local else None, seed.raw if seed else None), TARGETS["size"])
        hwm = [r.steps[k].m.root_hwm_kb for k in ("local", "s3", "restore_agent")
               if r.steps.get(k) and r.steps[k].m and r.steps[k].m.root_hwm_kb]
        add("agent peak RSS (backup local/S3, restore)", r.title, max(hwm) * 1024 / 1e6 if hwm else None,
            TARGETS["rss_mb"], " MB", 0)
        add("pg-backup restore wall / pg_restore wall", r.title,
            ratio(wall(r, "restore_agent"), wall(r, "restore_pg")), TARGETS["restore"])
    out.append(markdown_table(theader, trows))
    out.append("")
    for r in results:
        out.append(f"- {r.title}: {r.db_size / 1e6:,.0f} MB on disk; the first 200,000 pgbench_accounts rows "
                   f"compress {fmt(r.sample_zstd)}× with zstd -3 and {fmt(r.sample_gzip)}× with gzip -6.")
    out.append(f"- agent: `{' '.join(agent_cmd)}`; whole run {elapsed / 60:.1f} min.")
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=int, default=50, help="pgbench scale of both databases (default 50)")
    p.add_argument("--no-signing", dest="signing", action="store_false",
                   help="no signing key (default: sign with one made by 'keys create --purpose signing')")
    p.add_argument("--quick", action="store_true", help="smoke run: scale 5")
    p.add_argument("--repeat", type=int, default=1, help="runs per measured step; the median wall time is kept")
    p.add_argument("--output", help="also write the Markdown report to this file")
    p.add_argument("--keep", action="store_true", help="keep the work directory (the cluster is stopped anyway)")
    p.add_argument("--workdir-parent", default=None, help="where to create the work directory (default: $TMPDIR)")
    p.add_argument("--pg-bin", help="PostgreSQL server binaries (default: newest /usr/lib/postgresql/*/bin)")
    p.add_argument("--moto-server", help="moto_server executable (default: beside this Python, $MOTO_SERVER, PATH)")
    p.add_argument("--agent", help="command that runs the agent as postgres (default: .venv/bin/pg-backup, else "
                                   "PYTHON -m pg_backup with PYTHONPATH=agent/src)")
    p.add_argument("--databases", default="random,plain", help="which databases: random, plain or both")
    args = p.parse_args(argv)
    if args.quick:
        args.scale = 5
    require_root()
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    bin_dir = pg_bin_dir(args.pg_bin)
    work = tempfile.mkdtemp(prefix="pgb-bench-", dir=args.workdir_parent)
    make_pg_dir(work, 0o711)
    cluster: Optional[TempCluster] = None
    moto: Optional[MotoServer] = None
    failed = False
    try:
        with signals_raise():
            log(f"work directory {work}; PostgreSQL binaries {bin_dir}")
            cluster = TempCluster(work, bin_dir, CLUSTER_SETTINGS)
            cluster.start()
            log(f"cluster on 127.0.0.1:{cluster.port}")
            moto_error = None
            moto_bin = find_moto_server(args.moto_server, [os.path.join(REPO_ROOT, ".venv", "bin")])
            if moto_bin is None:
                moto_error = "moto_server not found (pip install 'moto[server]' or pass --moto-server)"
                log(moto_error)
            else:
                try:
                    moto = MotoServer(moto_bin, os.path.join(work, "moto.log")).start()
                    moto.create_bucket("bench")
                    log(f"moto_server {moto_bin} on {moto.url}")
                except Exception as exc:
                    moto_error = f"moto_server did not start: {exc}"
                    log(moto_error)
                    if moto:
                        moto.stop()
                    moto = None
            make_databases(cluster, args.scale)
            bench = Bench(args, work, cluster, moto, moto_error)
            titles = {"random": ("bench_random", f"pgbench s{args.scale}, random filler"),
                      "plain": ("bench_plain", f"pgbench s{args.scale}, plain")}
            results = []
            for which in [w.strip() for w in args.databases.split(",") if w.strip()]:
                db, title = titles[which]
                results.append(bench.bench_database(db, title))
            failed = any(s.error for r in results for s in r.steps.values())
            version = "PostgreSQL " + cluster.psql("SHOW server_version")
            text = report(results, args, started, time.monotonic() - t0, bench.agent, version)
            print(text)
            if args.output:
                with open(args.output, "w", encoding="utf-8") as fh:
                    fh.write(text)
    finally:
        tear_down(cluster, work, args.keep, moto)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
