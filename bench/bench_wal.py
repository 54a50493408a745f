#!/usr/bin/env python3
"""WAL archiving benchmark: pg-backup wal-push against cp and pgBackRest archive-push, same run, same host.

Measured, each against baselines of the same run (ratios, not absolute seconds):

1. Per-segment latency of real 16 MiB segments (a backlog of .ready files made by PostgreSQL):
   - *single call*: each file pushed by a separate call of the archiver, one after the other (median);
     for pg-backup with ``push_parallel: 1`` and no resident uploader (every call does all the work);
   - *as PostgreSQL drives it*: the backlog is handed to PostgreSQL's own archiver (archive_command
     switched from a failing one to the archiver, reload) and the time until the last .ready file is
     gone is divided by the number of files (pg-backup with its defaults: batches of ``push_parallel``
     and the resident uploader; pgBackRest async with ``process-max=2``).
2. pgbench TPS (``-c 4``, ``-T`` seconds) with each archiver as archive_command, small ``max_wal_size``
   and ``archive_timeout``, relative to the ``cp`` run; the largest number of .ready files sampled during
   the run (backlog) and how long the backlog took to drain after it.
3. Peak RSS per archive_command call (GNU time, when /usr/bin/time exists) and of pg-backup's resident
   uploader (VmHWM sampled from /proc).

Targets (reported PASS/FAIL, they do not change the exit code): amortized per-segment time of
pg-backup <= pgBackRest sync (zst); TPS >= 0.95 x cp; backlog bounded (never more than
2 x push_parallel .ready files, drained within 30 s after pgbench); peak RSS per call <= 100 MB.

Run as root (the cluster and the archivers run as postgres). Standard library only.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (REPO_ROOT, TempCluster, chown_pg, log, make_pg_dir, markdown_table, measure, pg_bin_dir,  # noqa: E402
                    require_root, run_as_pg, signals_raise, write_pg_file)

SEGMENT = 16 << 20
TIME_BIN = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


# -------------------------------------------------------------------------------------------------
# Setup helpers

def make_public_key(work: str) -> str:
    """An ed25519/cv25519 key pair; returns the public key file (owned by postgres). The secret key
    is thrown away: database hosts never hold it (public-key mode, the default for fleets)."""
    home = tempfile.mkdtemp(prefix="pgb-bench-gpg-")
    try:
        base = ["gpg", "--homedir", home, "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
        subprocess.run(base + ["--quick-gen-key", "bench <bench@example.invalid>", "future-default", "default",
                               "never"], check=True, capture_output=True)
        pub = subprocess.run(["gpg", "--homedir", home, "--batch", "--armor", "--export"], check=True,
                             capture_output=True).stdout
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    path = os.path.join(work, "bench.pub.asc")
    with open(path, "wb") as fh:
        fh.write(pub)
    chown_pg(path, 0o644)
    return path


#: ``--sign``: the cluster signing key (secret, 0600, owned by postgres) every object is signed with.
SIGNING_KEY: Optional[str] = None


def make_signing_key(work: str, agent: List[str]) -> str:
    """A cluster signing key made by 'pg-backup keys create --purpose signing', owned by postgres."""
    sec = os.path.join(work, "bench.sign.sec")
    subprocess.run([*agent, "keys", "create", "--purpose", "signing", "--name", "bench signing", "--secret-out", sec,
                    "--public-out", os.path.join(work, "bench.sign.pub")], check=True, capture_output=True)
    chown_pg(sec, 0o600)
    return sec


def agent_config(work: str, name: str, cluster: TempCluster, public_key: str, **wal: object) -> str:
    """A pg-backup configuration (JSON is YAML) with its own local repository and state directory."""
    repo = make_pg_dir(os.path.join(work, f"repo-{name}"))
    state = make_pg_dir(os.path.join(work, f"state-{name}"))
    cfg = {"cluster": "bench", "postgres": {"host": "127.0.0.1", "port": cluster.port, "user": "postgres"},
           "repository": {"type": "local", "path": repo},
           "encryption": {"mode": "public-key", "public_key_file": public_key},
           "paths": {"state_dir": state}, "wal": dict(wal)}
    if SIGNING_KEY:
        cfg["signing"] = {"secret_key_file": SIGNING_KEY}
    return write_pg_file(os.path.join(work, f"agent-{name}.yml"), json.dumps(cfg, indent=1))


def pgbackrest_config(work: str, name: str, cluster: TempCluster, asynchronous: bool) -> str:
    d = make_pg_dir(os.path.join(work, f"pgbr-{name}"))
    for sub in ("repo", "lock", "spool", "log"):
        make_pg_dir(os.path.join(d, sub))
    lines = ["[global]", f"repo1-path={d}/repo", "compress-type=zst", "log-level-console=warn", "log-level-file=off",
             "log-level-stderr=warn", f"lock-path={d}/lock", f"spool-path={d}/spool", f"log-path={d}/log"]
    if asynchronous:
        lines += ["archive-async=y", "process-max=2"]
    lines += ["[bench]", f"pg1-path={cluster.data}", f"pg1-port={cluster.port}", f"pg1-socket-path={cluster.sock}"]
    path = write_pg_file(os.path.join(d, "pgbackrest.conf"), "\n".join(lines) + "\n")
    run_as_pg(["pgbackrest", f"--config={path}", "--stanza=bench", "stanza-create"], env=cluster.env())
    return path


def cp_command(work: str) -> str:
    dest = make_pg_dir(os.path.join(work, "repo-cp"))
    return (f"test ! -f {dest}/%f && cp %p {dest}/%f.tmp && sync {dest}/%f.tmp && mv {dest}/%f.tmp {dest}/%f "
            f"&& sync {dest}")


class Archivers:
    """archive_command strings of every method, and what single-call runs need."""

    def __init__(self, work: str, cluster: TempCluster, agent: List[str], public_key: str):
        self.agent = agent
        q = " ".join(shlex.quote(a) for a in agent)
        self.cfg_default = agent_config(work, "default", cluster, public_key)
        self.cfg_single = agent_config(work, "single", cluster, public_key, push_parallel=1, uploader_idle_seconds=0)
        self.cfg_tps = agent_config(work, "tps", cluster, public_key)
        self.pgbr_sync = pgbackrest_config(work, "sync", cluster, False)
        self.pgbr_async = pgbackrest_config(work, "async", cluster, True)
        self.pgbr_tps = pgbackrest_config(work, "tps-sync", cluster, False)
        self.pgbr_tps_async = pgbackrest_config(work, "tps-async", cluster, True)
        self.commands = {
            "cp": cp_command(work),
            "pg-backup": f"{q} --config {self.cfg_default} --quiet wal-push %p",
            "pg-backup-single": f"{q} --config {self.cfg_single} --quiet wal-push %p",
            "pg-backup-tps": f"{q} --config {self.cfg_tps} --quiet wal-push %p",
            "pgbackrest-sync": f"pgbackrest --config={self.pgbr_sync} --stanza=bench archive-push %p",
            "pgbackrest-async": f"pgbackrest --config={self.pgbr_async} --stanza=bench archive-push %p",
            "pgbackrest-tps-sync": f"pgbackrest --config={self.pgbr_tps} --stanza=bench archive-push %p",
            "pgbackrest-tps-async": f"pgbackrest --config={self.pgbr_tps_async} --stanza=bench archive-push %p",
        }


# -------------------------------------------------------------------------------------------------
# PostgreSQL helpers

def set_archive_command(cluster: TempCluster, command: str, rss_log: Optional[str] = None) -> None:
    if rss_log and TIME_BIN:
        command = f"{TIME_BIN} -a -o {rss_log} -f '%M %e %x' {command}"
    cluster.psql(f"ALTER SYSTEM SET archive_command = '{command.replace(chr(39), chr(39) * 2)}'; "
                 "SELECT pg_reload_conf()")


def ready_files(cluster: TempCluster) -> List[str]:
    status = os.path.join(cluster.data, "pg_wal", "archive_status")
    return sorted(n[:-6] for n in os.listdir(status) if n.endswith(".ready"))


def mark_done(cluster: TempCluster, names: List[str]) -> None:
    status = os.path.join(cluster.data, "pg_wal", "archive_status")
    for n in names:
        try:
            os.rename(os.path.join(status, n + ".ready"), os.path.join(status, n + ".done"))
        except FileNotFoundError:
            pass


def make_backlog(cluster: TempCluster, count: int) -> List[str]:
    """``count`` new complete 16 MiB segments waiting as .ready (archive_command must be failing)."""
    cluster.psql("CREATE TABLE IF NOT EXISTS filler (id bigint, t text); TRUNCATE filler")
    before = set(ready_files(cluster))
    start = cluster.psql("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
    target = int(float(start)) + count * SEGMENT
    while int(float(cluster.psql("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"))) < target:
        # md5 text: WAL that compresses about 2x, like real row data (pgbench's own compresses far more)
        cluster.psql("INSERT INTO filler SELECT g, md5(random()::text) || md5(g::text) "
                     "FROM generate_series(1, 100000) g")
    cluster.psql("SELECT pg_switch_wal()")
    time.sleep(0.5)
    names = [n for n in ready_files(cluster) if n not in before and re.match(r"^[0-9A-F]{24}$", n)]
    return names[:count] if len(names) >= count else names


def parse_rss_log(path: str) -> Tuple[int, int, int]:
    """(calls, peak RSS KiB, failed calls) from GNU time's appended '%M %e %x' lines."""
    calls = peak = failed = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 3 and parts[0].isdigit():
                    calls += 1
                    peak = max(peak, int(parts[0]))
                    failed += parts[2] != "0"
    except OSError:
        pass
    return calls, peak, failed


def uploader_pids(work: str) -> List[int]:
    """pids of pg-backup's resident uploaders of this run: each writes its pid into the lock it holds
    (<state>/wal-spool/<cluster>-<hash>/uploader-<crc>.lock); forked from a wal-push, its command line
    is that call's, naming a configuration file of this run."""
    import glob

    pids = []
    for lock in glob.glob(os.path.join(work, "state-*", "wal-spool", "*", "uploader-*.lock")):
        try:
            with open(lock, encoding="ascii") as fh:
                pid = int(fh.read().strip() or 0)
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if work.encode() in fh.read():
                    pids.append(pid)
        except (OSError, ValueError):
            continue
    return pids


class UploaderWatch(threading.Thread):
    """Peak VmHWM of pg-backup's resident uploader processes, sampled every 0.1 s."""

    def __init__(self, work: str) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.peak_kb = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for pid in uploader_pids(self.work):
                try:
                    with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
                        for line in fh:
                            if line.startswith("VmHWM:"):
                                self.peak_kb = max(self.peak_kb, int(line.split()[1]))
                except OSError:
                    continue
            self._halt.wait(0.1)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def stop_uploaders(work: str) -> int:
    """End pg-backup's resident uploaders of this run (so they do not steal CPU from the next archiver)."""
    import signal

    pids = uploader_pids(work)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    time.sleep(0.3)
    return len(pids)


# -------------------------------------------------------------------------------------------------
# Measurements

class Results:
    def __init__(self) -> None:
        self.single: Dict[str, Tuple[float, float, int]] = {}    # method -> (median s, cpu s median, peak rss kb)
        self.driven: Dict[str, Tuple[float, int, int, int]] = {}  # method -> (s per file, files, rss kb, failed)
        self.tps: Dict[str, Dict[str, float]] = {}
        self.uploader_rss_kb = 0
        self.errors: List[str] = []


def single_calls(cluster: TempCluster, label: str, argv_for: "callable", names: List[str],  # type: ignore[valid-type]
                 env: Dict[str, str]) -> Tuple[float, float, int]:
    walls, cpus, rss = [], [], 0
    for n in names:
        m = measure(argv_for(n), env=env, cwd=cluster.data, label=label)
        if m.returncode != 0:
            raise RuntimeError(f"{label} of {n} failed ({m.returncode}): {m.stderr.strip()[-300:]}")
        walls.append(m.wall)
        cpus.append(m.cpu)
        rss = max(rss, m.maxrss_kb, m.root_hwm_kb)
    mark_done(cluster, names)
    return statistics.median(walls), statistics.median(cpus), rss


def driven(cluster: TempCluster, command: str, names: List[str], work: str, label: str,
           timeout: float = 600) -> Tuple[float, int, int, int]:
    """Hand the backlog to PostgreSQL's archiver; seconds per file until every .ready file is gone."""
    rss_log = os.path.join(work, f"rss-{label}.log")
    t0 = time.monotonic()
    set_archive_command(cluster, command, rss_log)
    pending = set(names)
    deadline = t0 + timeout
    while pending & set(ready_files(cluster)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: {len(pending & set(ready_files(cluster)))} file(s) still not archived "
                               f"after {timeout:.0f} s")
        time.sleep(0.01)
    elapsed = time.monotonic() - t0
    set_archive_command(cluster, "/bin/false")
    stop_uploaders(work)
    calls, peak, failed = parse_rss_log(rss_log)
    return elapsed / len(names), calls, peak, failed


def run_pgbench(cluster: TempCluster, command: str, seconds: int, label: str, work: str,
                clients: int = 4) -> Dict[str, float]:
    rss_log = os.path.join(work, f"rss-tps-{label}.log")
    set_archive_command(cluster, command, rss_log)
    cluster.psql("CHECKPOINT")
    wait_drained(cluster, 120)
    samples: List[int] = []
    halt = threading.Event()

    def sample() -> None:
        while not halt.is_set():
            try:
                samples.append(len(ready_files(cluster)))
            except OSError:
                pass
            halt.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    env = cluster.env()
    res = run_as_pg([cluster.tool("pgbench"), "-n", "-c", str(clients), "-j", "2", "-T", str(seconds), "bench"],
                    env=env, check=False)
    t_end = time.monotonic()
    drained = wait_drained(cluster, 300)
    halt.set()
    sampler.join()
    set_archive_command(cluster, "/bin/false")
    stop_uploaders(work)
    m = re.search(r"tps = ([0-9.]+)", res.stdout)
    if res.returncode != 0 or not m:
        raise RuntimeError(f"pgbench with {label} failed: {res.stderr.strip()[-300:]}")
    calls, peak, failed = parse_rss_log(rss_log)
    archived = cluster.psql("SELECT archived_count FROM pg_stat_archiver")
    return {"tps": float(m.group(1)), "backlog_max": max(samples or [0]), "drain_s": drained - t_end,
            "calls": calls, "rss_kb": peak, "failed": failed, "archived_total": float(archived)}


def wait_drained(cluster: TempCluster, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while ready_files(cluster):
        if time.monotonic() > deadline:
            raise RuntimeError(f"archiving did not catch up within {timeout:.0f} s "
                               f"({len(ready_files(cluster))} .ready files)")
        time.sleep(0.05)
    return time.monotonic()


# -------------------------------------------------------------------------------------------------
# Report

def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(r: Results, args: argparse.Namespace, started: dt.datetime, elapsed: float, version: str,
           agent: List[str]) -> str:
    out = [f"## WAL archiving: pg-backup wal-push vs cp and pgBackRest ({started:%Y-%m-%d %H:%M} UTC)", "",
           f"{version}; pgBackRest {subprocess.run(['pgbackrest', 'version'], capture_output=True, text=True).stdout.split()[-1]}; "
           f"{os.cpu_count()} CPU(s); agent `{' '.join(agent)}` in public-key mode (a database host holds only the "
           f"public key{', every WAL file signed with the cluster signing key' if SIGNING_KEY else ''}), zstd level 1; pgBackRest `compress-type=zst` (level 3); everything on one local "
           f"filesystem. {args.segments} segments of 16 MiB per latency row; pgbench `-c 4 -T {args.seconds}`. "
           f"Total run {elapsed / 60:.1f} min; load average at the end {os.getloadavg()[0]:.1f} (other work on "
           f"the host shows up as noise in every row alike).", ""]
    base = r.single.get("cp", (0, 0, 0))[0]
    rows = []
    for method, label in (("cp", "cp + fsync"), ("pg-backup-single", "pg-backup wal-push, single call (push_parallel 1, no uploader)"),
                          ("pgbackrest-sync", "pgBackRest archive-push sync (zst)")):
        if method in r.single:
            wall, cpu, rss = r.single[method]
            rows.append([label, "one call per file", f"{wall * 1000:.0f}", f"{wall / base:.1f}x" if base else "–",
                         f"{cpu * 1000:.0f}", f"{rss / 1024:.0f}"])
    for method, label in (("cp", "cp + fsync"), ("pg-backup", "pg-backup wal-push (defaults: batches + resident uploader)"),
                          ("pgbackrest-sync", "pgBackRest archive-push sync (zst)"),
                          ("pgbackrest-async", "pgBackRest archive-push async (zst, process-max 2)")):
        if method in r.driven:
            per, calls, rss, failed = r.driven[method]
            rows.append([label, f"PostgreSQL's archiver ({calls} calls{', ' + str(failed) + ' failed' if failed else ''})",
                         f"{per * 1000:.0f}", f"{per / base:.1f}x" if base else "–", "–",
                         f"{rss / 1024:.0f}" if rss else "–"])
    out += ["### Per-segment latency", "",
            markdown_table(["archiver", "driven by", "ms per segment (median / amortized)", "vs cp single call",
                            "CPU ms per call (median)", "peak RSS MB per call"], rows), ""]
    if r.uploader_rss_kb:
        out += [f"pg-backup's resident uploader (one process for the whole backlog): peak RSS "
                f"{r.uploader_rss_kb / 1024:.0f} MB.", ""]
    if r.tps:
        rows = []
        for key, label in (("cp", "cp + fsync"), ("pg-backup", "pg-backup wal-push"),
                           ("pgbackrest-sync", "pgBackRest sync"), ("pgbackrest-async", "pgBackRest async")):
            if key in r.tps:
                t = r.tps[key]
                per_round = ", ".join(f"{x:.2f}" for x in t.get("ratios", []))
                rows.append([label, f"{t['tps']:.0f}", f"{t['tps_min']:.0f}–{t['tps_max']:.0f} ({t['runs']:.0f})",
                             f"{t['ratio']:.3f}" + (f" ({per_round})" if per_round else ""), f"{t['backlog_max']:.0f}", f"{t['drain_s']:.1f}",
                             f"{t['calls']:.0f}", f"{t['rss_kb'] / 1024:.0f}" if t["rss_kb"] else "–"])
        out += ["### pgbench with each archiver", "",
                f"`max_wal_size={args.max_wal_size}`, `checkpoint_timeout=30s`, `archive_timeout=10s`, fsync and "
                f"synchronous_commit on; a {args.warmup} s warm-up run with cp (not counted), then {args.rounds} round(s): "
                f"cp, then the others in an order rotating per round, cp once more at the end. \"vs cp\" is the "
                f"median over rounds of the archiver's TPS over the mean of the cp runs before and after its round "
                f"(each round's ratio in parentheses); TPS columns are medians and ranges over the runs.", "",
                markdown_table(["archive_command", "TPS (median)", "TPS range (runs)", "vs cp", "max .ready (backlog)",
                                "drain after run s (max)", "archive_command calls", "peak RSS MB per call"], rows), ""]
    # Targets
    targets = []
    if "pg-backup" in r.driven and "pgbackrest-sync" in r.driven:
        ours, theirs = r.driven["pg-backup"][0], r.driven["pgbackrest-sync"][0]
        targets.append(["amortized per-segment time <= pgBackRest sync (zst)",
                        f"{ours * 1000:.0f} ms vs {theirs * 1000:.0f} ms", verdict(ours <= theirs)])
    if r.tps and "pg-backup" in r.tps and "cp" in r.tps:
        ratio = r.tps["pg-backup"]["ratio"]
        targets.append(["TPS >= 0.95 x cp", f"{ratio:.3f}", verdict(ratio >= 0.95)])
        t = r.tps["pg-backup"]
        bounded = t["backlog_max"] <= 8 and t["drain_s"] <= 30
        targets.append(["backlog bounded (<= 2 x push_parallel = 8 .ready files, drained <= 30 s)",
                        f"max {t['backlog_max']:.0f}, drained in {t['drain_s']:.1f} s", verdict(bounded)])
    rss = [r.single.get("pg-backup-single", (0, 0, 0))[2], r.driven.get("pg-backup", (0, 0, 0, 0))[2],
           r.tps.get("pg-backup", {}).get("rss_kb", 0), r.uploader_rss_kb]
    if any(rss):
        peak = max(rss)
        targets.append(["peak RSS per call <= 100 MB (calls and the resident uploader)", f"{peak / 1024:.0f} MB",
                        verdict(peak <= 100 * 1024)])
    if targets:
        out += ["### Targets", "", markdown_table(["target", "measured", "result"], targets), ""]
    if r.errors:
        out += ["### Errors", ""] + [f"- {e}" for e in r.errors] + [""]
    return "\n".join(out)


# -------------------------------------------------------------------------------------------------

def agent_argv(explicit: Optional[str]) -> List[str]:
    if explicit:
        return shlex.split(explicit)
    venv = os.path.join(REPO_ROOT, ".venv", "bin", "pg-backup")
    if os.path.exists(venv):
        return [venv]
    sys.exit("no agent: build the venv (make venv) or pass --agent PATH")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sign", action="store_true", help="sign every WAL file with a cluster signing key "
                   "(signing.secret_key_file), as a database host does once signing is configured")
    p.add_argument("--quick", action="store_true", help="smoke run: 6 segments per row, pgbench -T 10")
    p.add_argument("--segments", type=int, default=20, help="segments per latency row (default 20)")
    p.add_argument("--seconds", type=int, default=60, help="pgbench -T per archiver and round (default 60)")
    p.add_argument("--rounds", type=int, default=3,
                   help="pgbench rounds over all archivers (default 3: each archiver once in each slot)")
    p.add_argument("--warmup", type=int, default=None,
                   help="seconds of a discarded pgbench run with cp before the rounds (default: --seconds)")
    p.add_argument("--scale", type=int, default=10, help="pgbench scale (default 10)")
    p.add_argument("--max-wal-size", default="64MB", help="max_wal_size during pgbench (default 64MB)")
    p.add_argument("--skip-tps", action="store_true", help="only the latency rows")
    p.add_argument("--output", help="also write the Markdown report to this file")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--workdir-parent", default=None)
    p.add_argument("--pg-bin", help="PostgreSQL server binaries (default: newest /usr/lib/postgresql/*/bin)")
    p.add_argument("--agent", help="pg-backup executable (default .venv/bin/pg-backup)")
    args = p.parse_args(argv)
    if args.quick:
        args.segments, args.seconds, args.scale, args.rounds = 6, 10, 5, 1
    if args.warmup is None:
        args.warmup = args.seconds
    require_root()
    if not shutil.which("pgbackrest"):
        sys.exit("pgbackrest is not installed: scripts/install-deps.sh pgbackrest")
    agent = agent_argv(args.agent)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.monotonic()
    work = tempfile.mkdtemp(prefix="pgb-bench-wal-", dir=args.workdir_parent)
    make_pg_dir(work, 0o711)
    cluster: Optional[TempCluster] = None
    r = Results()
    try:
        with signals_raise():
            cluster = TempCluster(work, pg_bin_dir(args.pg_bin), {
                "wal_level": "replica", "archive_mode": "on", "archive_command": "'/bin/false'",
                "max_wal_size": f"'{args.max_wal_size}'", "min_wal_size": "'32MB'", "checkpoint_timeout": "'30s'",
                "archive_timeout": "'10s'", "shared_buffers": "'128MB'", "log_min_messages": "'fatal'"})
            cluster.start()
            log(f"cluster on 127.0.0.1:{cluster.port}, work directory {work}")
            public_key = make_public_key(work)
            if args.sign:
                global SIGNING_KEY
                SIGNING_KEY = make_signing_key(work, agent)
            arch = Archivers(work, cluster, agent, public_key)
            env = cluster.env()
            n = args.segments

            def step(label: str, fn: "callable") -> None:  # type: ignore[valid-type]
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - the row says why, the others still run
                    r.errors.append(f"{label}: {exc}")
                    log(f"{label} failed: {exc}")
                    mark_done(cluster, ready_files(cluster))

            # 1a. one call per file
            def cp_single() -> None:
                names = make_backlog(cluster, n)
                r.single["cp"] = single_calls(cluster, "cp", lambda f: ["/bin/sh", "-c", arch.commands["cp"].replace(
                    "%p", f"pg_wal/{f}").replace("%f", f)], names, env)
            step("cp single", cp_single)
            log(f"cp: {r.single.get('cp')}")

            def ours_single() -> None:
                names = make_backlog(cluster, n)
                r.single["pg-backup-single"] = single_calls(
                    cluster, "pg-backup", lambda f: [*agent, "--config", arch.cfg_single, "--quiet", "wal-push",
                                                     f"pg_wal/{f}"], names, env)
            step("pg-backup single", ours_single)
            log(f"pg-backup single: {r.single.get('pg-backup-single')}")

            def pgbr_single() -> None:
                names = make_backlog(cluster, n)
                r.single["pgbackrest-sync"] = single_calls(
                    cluster, "pgbackrest", lambda f: ["pgbackrest", f"--config={arch.pgbr_sync}", "--stanza=bench",
                                                      "archive-push", f"pg_wal/{f}"], names, env)
            step("pgbackrest single", pgbr_single)
            log(f"pgbackrest sync single: {r.single.get('pgbackrest-sync')}")

            # 1b. as PostgreSQL drives it
            watch = UploaderWatch(work)
            watch.start()
            for method in ("cp", "pg-backup", "pgbackrest-sync", "pgbackrest-async"):
                def drive(method: str = method) -> None:
                    names = make_backlog(cluster, n)
                    r.driven[method] = driven(cluster, arch.commands[method], names, work, method)
                step(f"{method} driven", drive)
                log(f"{method} driven by PostgreSQL: {r.driven.get(method)}")
            watch.stop()
            r.uploader_rss_kb = watch.peak_kb

            # 2. pgbench
            if not args.skip_tps:
                log(f"pgbench -i -s {args.scale}")
                run_as_pg([cluster.tool("createdb"), "bench"], env=env)
                run_as_pg([cluster.tool("pgbench"), "-i", "-q", "-s", str(args.scale), "bench"], env=env)
                watch = UploaderWatch(work)
                watch.start()
                # The first minute after pgbench -i is slower for every archiver (the initial load's
                # checkpoint, autovacuum, caches): one warm-up run with cp is discarded. Then rounds of
                # every archiver, cp first in each round and once more at the end, the others in an
                # order that rotates per round, so none always runs in the same slot. Each archiver's run
                # is compared with the mean of the cp runs just before and just after its round (drift in
                # a shared host's disk latency hits both alike); "vs cp" is the median of those ratios.
                log(f"pgbench warm-up run with cp ({args.warmup} s, not counted)")
                if args.warmup > 0:
                    step("pgbench warm-up", lambda: run_pgbench(cluster, arch.commands["cp"], args.warmup, "warmup", work))
                    set_archive_command(cluster, "/bin/false")
                others = [("pg-backup", "pg-backup-tps"), ("pgbackrest-sync", "pgbackrest-tps-sync"),
                          ("pgbackrest-async", "pgbackrest-tps-async")]
                runs: Dict[str, List[Dict[str, float]]] = {}
                for rnd in range(args.rounds):
                    rotated = others[rnd % len(others):] + others[:rnd % len(others)]
                    for key, command in [("cp", "cp")] + rotated + ([("cp", "cp")] if rnd == args.rounds - 1 else []):
                        def tps(key: str = key, command: str = command, rnd: int = rnd) -> None:
                            res = run_pgbench(cluster, arch.commands[command], args.seconds, f"{key}-{rnd}", work)
                            res["round"] = rnd
                            runs.setdefault(key, []).append(res)
                        step(f"pgbench {key}", tps)
                        log(f"pgbench round {rnd + 1} with {key}: {(runs.get(key) or [None])[-1]}")
                        set_archive_command(cluster, "/bin/false")
                cp_runs = [t["tps"] for t in runs.get("cp", [])]
                for key, results in runs.items():
                    ratios = []
                    if key != "cp":
                        for t in results:
                            rnd = int(t["round"])
                            if rnd + 1 < len(cp_runs):
                                ratios.append(t["tps"] / ((cp_runs[rnd] + cp_runs[rnd + 1]) / 2))
                    results = sorted(results, key=lambda t: t["tps"])
                    median = dict(results[(len(results) - 1) // 2])
                    median["tps"] = statistics.median(t["tps"] for t in results)
                    median["tps_min"], median["tps_max"] = results[0]["tps"], results[-1]["tps"]
                    median["runs"] = len(results)
                    median["backlog_max"] = max(t["backlog_max"] for t in results)
                    median["drain_s"] = max(t["drain_s"] for t in results)
                    median["rss_kb"] = max(t["rss_kb"] for t in results)
                    median["calls"] = sum(t["calls"] for t in results)
                    median["ratio"] = statistics.median(ratios) if ratios else (1.0 if key == "cp" else 0.0)
                    median["ratios"] = ratios
                    r.tps[key] = median
                watch.stop()
                r.uploader_rss_kb = max(r.uploader_rss_kb, watch.peak_kb)
            version = "PostgreSQL " + cluster.psql("SHOW server_version")
            text = report(r, args, started, time.monotonic() - t0, version, agent)
            print(text)
            if args.output:
                with open(args.output, "w", encoding="utf-8") as fh:
                    fh.write(text + "\n")
    finally:
        if cluster is not None:
            cluster.stop()
            log("cluster stopped")
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if r.errors else 0


if __name__ == "__main__":
    sys.exit(main())
