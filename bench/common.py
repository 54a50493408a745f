"""Shared helpers for the benchmarks: a throw-away PostgreSQL cluster, a moto S3 endpoint, and
measuring a command's wall time, CPU time and memory.

Benchmarks run as root; everything PostgreSQL (the server, pg_dump, pg_restore, psql, and the agent,
which is a PostgreSQL client that runs as ``postgres`` in production) runs as the ``postgres`` OS user.
Setup commands go through ``runuser -u postgres --``; *measured* commands are started directly with
``setgid``/``setuid`` to ``postgres`` (``subprocess.Popen(user=..., group=...)``, the same effect as
runuser) so that the measured PID is the tool itself and no runuser/PAM process sits in the tree.

Only the standard library is used, so any Python >= 3.9 can run the benchmarks.
"""
from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

PG_USER = "postgres"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------------------
# Users, paths, tools

def require_root() -> None:
    if os.geteuid() != 0:
        sys.exit("the benchmarks must run as root (they start a PostgreSQL cluster as the postgres user)")
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        sys.exit(f"no {PG_USER!r} OS user: install PostgreSQL (apt-get install postgresql)")


def pg_ids() -> Tuple[int, int]:
    pw = pwd.getpwnam(PG_USER)
    return pw.pw_uid, pw.pw_gid


def chown_pg(path: str, mode: Optional[int] = None) -> None:
    uid, gid = pg_ids()
    os.chown(path, uid, gid)
    if mode is not None:
        os.chmod(path, mode)


def make_pg_dir(path: str, mode: int = 0o700) -> str:
    os.makedirs(path, exist_ok=True)
    chown_pg(path, mode)
    return path


def write_pg_file(path: str, text: str, mode: int = 0o600) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    chown_pg(path, mode)
    return path


def pg_bin_dir(explicit: Optional[str] = None) -> str:
    """The newest Debian PostgreSQL server binaries (initdb, pg_ctl, pg_dump...)."""
    if explicit:
        return explicit
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        m = re.search(r"/(\d+)/bin$", d)
        if m and os.path.exists(os.path.join(d, "initdb")):
            found.append((int(m.group(1)), d))
    if not found:
        sys.exit("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: apt-get install postgresql")
    return sorted(found)[-1][1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0, proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with code {proc.returncode} before listening on port {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def pg_env(home: str, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """A clean environment for commands run as postgres (no root HOME, no pyenv shims first)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "USER": PG_USER, "LOGNAME": PG_USER,
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": home, "PYTHONDONTWRITEBYTECODE": "1"}
    env.update(extra or {})
    return env


def run_as_pg(cmd: Sequence[str], *, env: Optional[Dict[str, str]] = None, input: Optional[str] = None,
              check: bool = True, cwd: str = "/") -> subprocess.CompletedProcess:
    """A setup command as postgres through runuser; output captured; raises with stderr on failure."""
    full = ["runuser", "-u", PG_USER, "--"]
    if env is not None:
        full += ["env", "-i"] + [f"{k}={v}" for k, v in env.items()]
    full += list(cmd)
    res = subprocess.run(full, input=input, capture_output=True, text=True, cwd=cwd)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}... failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    return res


# -------------------------------------------------------------------------------------------------
# Cleanup even on failure or signals

@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks (cluster stop, moto stop) run."""
    def handler(signum, _frame):  # type: ignore[no-untyped-def]
        raise SystemExit(128 + signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# -------------------------------------------------------------------------------------------------
# A throw-away PostgreSQL cluster

class TempCluster:
    """initdb in a postgres-owned directory, listening on 127.0.0.1:<free port> only."""

    def __init__(self, base_dir: str, bin_dir: str, settings: Optional[Dict[str, str]] = None):
        self.bin_dir = bin_dir
        self.base = make_pg_dir(os.path.join(base_dir, "pg"))
        self.data = os.path.join(self.base, "data")
        self.sock = make_pg_dir(os.path.join(self.base, "sock"))
        self.home = make_pg_dir(os.path.join(self.base, "home"))
        self.logfile = os.path.join(self.base, "server.log")
        self.port = free_port()
        self.settings = settings or {}
        self.started = False

    def tool(self, name: str) -> str:
        return os.path.join(self.bin_dir, name)

    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        e = pg_env(self.home, {"PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": PG_USER})
        e.update(extra or {})
        return e

    def start(self) -> "TempCluster":
        run_as_pg([self.tool("initdb"), "-D", self.data, "-U", PG_USER, "--auth=trust", "-E", "UTF8",
                   "--locale=C.UTF-8"], env=self.env())
        conf = {"listen_addresses": "'127.0.0.1'", "port": str(self.port),
                "unix_socket_directories": f"'{self.sock}'", **self.settings}
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a", encoding="utf-8") as fh:
            for k, v in conf.items():
                fh.write(f"{k} = {v}\n")
        self.started = True  # from here on, stop() must run
        run_as_pg([self.tool("pg_ctl"), "-D", self.data, "-l", self.logfile, "-w", "-t", "120", "start"],
                  env=self.env())
        return self

    def stop(self) -> None:
        if not self.started:
            return
        res = run_as_pg([self.tool("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "-t", "120", "stop"],
                        env=self.env(), check=False)
        if res.returncode != 0:
            pid = self.postmaster_pid()
            if pid:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGQUIT)
        self.started = False

    def psql(self, sql: str, dbname: str = "postgres", extra_env: Optional[Dict[str, str]] = None) -> str:
        res = run_as_pg([self.tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dbname],
                        env=self.env(extra_env), input=sql)
        return res.stdout.strip()

    def postmaster_pid(self) -> Optional[int]:
        try:
            with open(os.path.join(self.data, "postmaster.pid"), encoding="utf-8") as fh:
                return int(fh.readline().strip())
        except (OSError, ValueError):
            return None

    def cpu_seconds(self) -> float:
        """CPU of the whole server so far: postmaster + its exited (reaped) children + live children.

        Deltas of this around a command give the server-side CPU the command caused (backends
        that ran its queries, plus a little background noise from checkpointer/walwriter)."""
        pm = self.postmaster_pid()
        if pm is None:
            return 0.0
        total = 0
        for pid, ppid, fields in _proc_stats():
            if pid == pm:
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
            elif ppid == pm:
                total += int(fields[11]) + int(fields[12])
        return total / CLK_TCK


def _proc_stats() -> Iterator[Tuple[int, int, List[str]]]:
    """(pid, ppid, stat fields after the command name) for every process."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as fh:
                raw = fh.read()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2:].split()
        # rest[0] is state, rest[1] ppid; utime is rest[11], stime rest[12], cutime 13, cstime 14
        yield int(name), int(rest[1]), rest


# -------------------------------------------------------------------------------------------------
# moto S3 endpoint

def find_moto_server(explicit: Optional[str], extra_dirs: Sequence[str] = ()) -> Optional[str]:
    candidates = [explicit, os.environ.get("MOTO_SERVER"),
                  os.path.join(os.path.dirname(sys.executable), "moto_server")]
    candidates += [os.path.join(d, "moto_server") for d in extra_dirs]
    candidates.append(shutil.which("moto_server"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


class MotoServer:
    """``moto_server`` as a separate process on 127.0.0.1 (objects live in its memory)."""

    def __init__(self, binary: str, log_path: str):
        self.binary = binary
        self.port = free_port()
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MotoServer":
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([self.binary, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_port(self.port, 60, self.proc)
        return self

    def create_bucket(self, name: str) -> None:
        # moto does not check signatures: a plain unsigned PUT creates the bucket.
        req = urllib.request.Request(f"{self.url}/{name}", method="PUT", data=b"")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            self._log.close()
        self.proc = None


# -------------------------------------------------------------------------------------------------
# Measuring commands

@dataclass
class Measurement:
    wall: float = 0.0
    user: float = 0.0
    sys: float = 0.0
    #: Largest single process of the tree (ru_maxrss of wait4: the command and every descendant it reaped).
    maxrss_kb: int = 0
    #: Peak RSS (VmHWM) of the measured root process alone, e.g. the agent's Python process.
    root_hwm_kb: int = 0
    #: Highest sampled sum of RSS over the whole process tree (sampled every 0.1 s).
    tree_rss_kb: int = 0
    server_cpu: float = 0.0
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    steps: List[str] = field(default_factory=list)

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    def add(self, other: "Measurement") -> None:
        """Sequential composition (a pipeline of steps run one after the other)."""
        self.wall += other.wall
        self.user += other.user
        self.sys += other.sys
        self.server_cpu += other.server_cpu
        self.maxrss_kb = max(self.maxrss_kb, other.maxrss_kb)
        self.root_hwm_kb = max(self.root_hwm_kb, other.root_hwm_kb)
        self.tree_rss_kb = max(self.tree_rss_kb, other.tree_rss_kb)
        self.returncode = self.returncode or other.returncode
        self.stdout += other.stdout
        self.stderr += other.stderr
        self.steps += other.steps


class _TreeSampler(threading.Thread):
    """Samples the root's VmHWM and the RSS sum of its descendants until stopped."""

    def __init__(self, root: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root = root
        self.interval = interval
        self.hwm_kb = 0
        self.tree_kb = 0
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def _sample(self) -> None:
        try:
            with open(f"/proc/{self.root}/status", encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        self.hwm_kb = max(self.hwm_kb, int(line.split()[1]))
                        break
        except OSError:
            return
        children: Dict[int, List[int]] = {}
        rss: Dict[int, int] = {}
        for pid, ppid, fields in _proc_stats():
            children.setdefault(ppid, []).append(pid)
            rss[pid] = int(fields[21]) * PAGE // 1024  # field 24 of stat: rss in pages
        total, todo = 0, [self.root]
        while todo:
            pid = todo.pop()
            total += rss.get(pid, 0)
            todo.extend(children.get(pid, []))
        self.tree_kb = max(self.tree_kb, total)

    def run(self) -> None:
        while not self._halt.is_set():
            self._sample()
            self._halt.wait(self.interval)


def measure(cmd: Sequence[str], *, env: Dict[str, str], cwd: str, cluster: Optional[TempCluster] = None,
            as_pg: bool = True, label: str = "") -> Measurement:
    """Run one command (as postgres), wait for it with wait4, return its resource use.

    CPU time and ru_maxrss come from wait4 and therefore cover the command and every descendant it
    waited for (pg-backup: itself, pg_dump, pg_dumpall, gpg). Wall time is from fork to reap.
    """
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    kwargs = {}
    if as_pg:
        uid, gid = pg_ids()
        kwargs = {"user": uid, "group": gid, "extra_groups": []}
    server_before = cluster.cpu_seconds() if cluster else 0.0
    t0 = time.monotonic()
    proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                            **kwargs)
    sampler = _TreeSampler(proc.pid)
    sampler.start()
    try:
        _, status, ru = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        sampler.stop()
        raise
    wall = time.monotonic() - t0
    sampler.stop()
    proc.returncode = os.waitstatus_to_exitcode(status)
    server_cpu = 0.0
    if cluster:
        time.sleep(0.3)  # let the postmaster reap the backend that served the command
        server_cpu = cluster.cpu_seconds() - server_before
    out.seek(0)
    err.seek(0)
    m = Measurement(wall=wall, user=ru.ru_utime, sys=ru.ru_stime, maxrss_kb=ru.ru_maxrss,
                    root_hwm_kb=sampler.hwm_kb, tree_rss_kb=sampler.tree_kb, server_cpu=server_cpu,
                    returncode=proc.returncode, stdout=out.read().decode(errors="replace"),
                    stderr=err.read().decode(errors="replace"), steps=[label or os.path.basename(cmd[0])])
    out.close()
    err.close()
    return m


def check_ok(m: Measurement, what: str) -> Measurement:
    if m.returncode != 0:
        tail = (m.stderr.strip().splitlines() or [f"exit code {m.returncode}"])[-1]
        raise RuntimeError(f"{what} failed (exit {m.returncode}): {tail}")
    return m


def parse_json_stdout(m: Measurement) -> dict:
    text = m.stdout.strip()
    start = text.find("{")
    return json.loads(text[start:]) if start >= 0 else {}


# -------------------------------------------------------------------------------------------------
# Formatting

def mb(n_bytes: Optional[float]) -> str:
    if n_bytes is None:
        return "–"
    return f"{n_bytes / 1e6:,.3f}" if n_bytes < 1e6 else f"{n_bytes / 1e6:,.1f}"


def kb_to_mb(kb: Optional[int]) -> str:
    return "–" if not kb else f"{kb * 1024 / 1e6:,.0f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------
# What every benchmark does first and last

@dataclass
class AgentSetup:
    """The agent's home, command line, environment and a benchmark passphrase file, all owned by postgres."""

    home: str
    agent: List[str]
    env: Dict[str, str]
    secrets: str
    passphrase: str


def agent_setup(agent_command_fn, explicit_agent: Optional[str], work: str, port: int) -> AgentSetup:
    home = make_pg_dir(os.path.join(work, "home"))
    agent, agent_env = agent_command_fn(explicit_agent, home)
    env = pg_env(home, {**agent_env, "PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "postgres"})
    secrets = make_pg_dir(os.path.join(work, "secrets"))
    # A random repository secret, as pgBackRest recommends for its cipher pass (and as production should use).
    passphrase = write_pg_file(os.path.join(secrets, "passphrase"), base64.b64encode(os.urandom(32)).decode() + "\n")
    return AgentSetup(home, agent, env, secrets, passphrase)


#: Key stretching for the random secret above: gpg's default maximum (65011712) buys nothing for 256 random
#: bits and costs ~0.2 s of CPU per object each way (each WAL segment); pgBackRest's cipher pass does not
#: stretch either. What the README tells operators with a random secret to set (``encryption.s2k_count``).
BENCH_S2K_COUNT = 65536


def encryption_section(setup: AgentSetup) -> Dict[str, Dict[str, object]]:
    """Passphrase mode with the random secret of ``agent_setup`` and the stretching it needs."""
    return {"encryption": {"mode": "passphrase", "passphrase_file": setup.passphrase, "s2k_count": BENCH_S2K_COUNT}}


def signing_section(setup: AgentSetup, enabled: bool) -> Dict[str, Dict[str, str]]:
    """The production default: a cluster signing key made by 'pg-backup keys create --purpose signing'
    (secret 0600, owned by postgres) every object and manifest is signed with and checked against; ``{}``
    (no ``signing`` section) when ``enabled`` is false (``--no-signing``)."""
    if not enabled:
        return {}
    sec = os.path.join(setup.secrets, "bench.sign.sec")
    run_as_pg([*setup.agent, "keys", "create", "--purpose", "signing", "--name", "bench signing",
               "--secret-out", sec, "--public-out", os.path.join(setup.secrets, "bench.sign.pub")], env=setup.env)
    os.chmod(sec, 0o600)
    return {"signing": {"secret_key_file": sec, "require": True}}


def tear_down(cluster: Optional["TempCluster"], work: str, keep: bool, moto: Optional["MotoServer"] = None) -> None:
    """Stop what a benchmark started and remove its work directory (unless kept)."""
    if moto is not None:
        moto.stop()
    if cluster is not None:
        cluster.stop()
        log("cluster stopped")
    if keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def emit(text: str, output: Optional[str]) -> None:
    """Print the report, and write it to ``output`` too when given."""
    print(text)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
