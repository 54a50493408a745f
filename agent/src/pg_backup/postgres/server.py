"""Controlling a PostgreSQL server on this host by its data directory: is a postmaster running there
(``postmaster.pid``), where does it listen, and starting or stopping it with ``pg_ctl``.

Used for the servers the agent starts itself (recovery targets, scratch servers of verifications and
drills) and by the WAL workers, which stop when the postmaster that started them is gone.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Dict, List, Optional, Tuple

from ..errors import PostgresError
from .tools import server_bin_dir

MAX_SOCKET_PATH = 100       # sun_path is 108 bytes; "/.s.PGSQL.65535" takes 15 of them
PRIVATE_SOCKET_PREFIX = "pgb-sock-"


def postmaster_pid(data_dir: str) -> Optional[int]:
    """The postmaster pid if postmaster.pid names a live process, else None."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8", errors="replace") as fh:
            first = fh.readline().strip()
    except OSError:
        return None
    if not first.lstrip("-").isdigit():
        return None
    pid = abs(int(first))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                return None  # exited, not yet reaped
    except (OSError, IndexError):
        pass
    return pid


def pid_file_lines(data_dir: str) -> List[str]:
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8", errors="replace") as fh:
            return fh.read().splitlines()
    except OSError:
        return []


def connect_info(data_dir: str) -> Tuple[Optional[int], Optional[str], Optional[str]]:
    """(port, socket dir, listen address) from postmaster.pid."""
    lines = pid_file_lines(data_dir)
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    sock = lines[4].strip() if len(lines) > 4 and lines[4].strip() else None
    addr = lines[5].strip() if len(lines) > 5 and lines[5].strip() else None
    if addr in ("*", "0.0.0.0", "::"):
        addr = "127.0.0.1"
    return port, sock, addr


def postmaster_status(data_dir: str) -> str:
    """The postmaster's status word in postmaster.pid: starting, standby (consistent but refusing
    connections: hot_standby off), ready (accepting connections, read-only while in recovery) or
    stopping; "" before it is written."""
    lines = pid_file_lines(data_dir)
    return lines[7].strip() if len(lines) > 7 else ""


def socket_dir_for(data_dir: str) -> str:
    """The data directory itself when a socket path in it fits in sun_path, else a private (0700)
    temporary directory, removed by :func:`stop_server`."""
    if len(os.path.join(data_dir, ".s.PGSQL.65535")) <= MAX_SOCKET_PATH:
        return data_dir
    path = tempfile.mkdtemp(prefix=PRIVATE_SOCKET_PREFIX)
    os.chmod(path, 0o700)
    return path


def pg_ctl_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_MESSAGES"] = "C"
    return env


def start_server(bin_dir: str, data_dir: str, log_file: str, *, what: str = "the server") -> None:
    """``pg_ctl start`` and wait until the server accepts connections or stops; ``what`` names it in
    the error."""
    os.makedirs(os.path.dirname(log_file), mode=0o700, exist_ok=True)
    proc = subprocess.run([os.path.join(bin_dir, "pg_ctl"), "-D", data_dir, "-l", log_file, "-W",
                           "start"], capture_output=True, text=True, env=pg_ctl_env(), timeout=120, check=False)
    if proc.returncode != 0:
        raise PostgresError(f"pg_ctl could not start {what} in {data_dir}: "
                            f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no detail']}")


def stop_server(data_dir: str, mode: str = "fast", timeout: int = 120) -> None:
    """Stop the server running in ``data_dir`` with its own pg_ctl (no-op if it is not running)."""
    pid = postmaster_pid(data_dir)
    if pid is None:
        return
    _, sock, _ = connect_info(data_dir)
    bin_dir = None
    try:
        bin_dir = os.path.dirname(os.path.realpath(f"/proc/{pid}/exe"))
    except OSError:
        pass
    if not bin_dir or not os.path.exists(os.path.join(bin_dir, "pg_ctl")):
        bin_dir = server_bin_dir(None, data_dir_major(data_dir))
    proc = subprocess.run([os.path.join(bin_dir, "pg_ctl"), "-D", data_dir, "-m", mode, "-w", "-t", str(timeout),
                           "stop"], capture_output=True, text=True, env=pg_ctl_env(), timeout=timeout + 30,
                          check=False)
    if proc.returncode != 0 and postmaster_pid(data_dir) is not None:
        raise PostgresError(f"could not stop the server in {data_dir}: {(proc.stderr or proc.stdout).strip()}")
    if sock and os.path.basename(sock).startswith(PRIVATE_SOCKET_PREFIX):
        shutil.rmtree(sock, ignore_errors=True)


def data_dir_major(data_dir: str) -> int:
    """The major version named in the data directory's PG_VERSION; 0 without one."""
    path = os.path.join(data_dir, "PG_VERSION")
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as fh:
        return int(fh.read().strip() or 0)
