"""PostgreSQL's programs: where the client tools and the server binaries of a major version are,
which version a program is, and :class:`ClientProcess`, a client tool on the data path.

Client tools (pg_dump, pg_restore, psql) must be at least as new as the server they talk to; server
programs (postgres, pg_ctl) and pg_verifybackup's WAL parsing need exactly the data directory's major.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from typing import Dict, List, Optional

from ..errors import PostgresError
from ..process import ChildProcess


def tool_major(path: str) -> Optional[int]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False, timeout=30).stdout
    except OSError:
        return None
    m = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(m.group(1)) if m else None


def tool_version(path: str) -> str:
    try:
        return subprocess.run([path, "--version"], capture_output=True, text=True, check=False,
                              timeout=30).stdout.strip()
    except OSError:
        return "unknown"


def client_bin_dir(configured: Optional[str], server_major: int) -> str:
    """The directory of client tools at least as new as the server: ``configured`` (postgres.bin_dir)
    when set, else the oldest installed major that is new enough, else pg_dump on PATH."""
    candidates: List[str] = []
    if configured:
        candidates = [configured]
    else:
        found = []
        for d in glob.glob("/usr/lib/postgresql/*/bin") + glob.glob("/usr/pgsql-*/bin"):
            m = re.search(r"(\d+)", os.path.basename(os.path.dirname(d)))
            if m and int(m.group(1)) >= server_major and os.path.exists(os.path.join(d, "pg_dump")):
                found.append((int(m.group(1)), d))
        candidates = [d for _, d in sorted(found)]
        on_path = shutil.which("pg_dump")
        if on_path:
            candidates.append(os.path.dirname(os.path.realpath(on_path)))
    for d in candidates:
        major = tool_major(os.path.join(d, "pg_dump"))
        if major is not None and major >= server_major:
            return d
    where = configured or "/usr/lib/postgresql/*/bin or PATH"
    raise PostgresError(f"no pg_dump of major version >= {server_major} found in {where}",
                        hint=f"install postgresql-client-{server_major} or set postgres.bin_dir")


def major_bin_dirs(configured: Optional[str], major: int) -> List[str]:
    """Where the programs of exactly ``major`` may be, in order: postgres.bin_dir, Debian's, RHEL's."""
    return [configured or "", f"/usr/lib/postgresql/{major}/bin", f"/usr/pgsql-{major}/bin"]


def same_major_dir(candidates: List[str], major: int, program: str) -> Optional[str]:
    """The first of ``candidates`` whose ``program`` exists and is of exactly ``major``."""
    for d in candidates:
        path = os.path.join(d, program) if d else ""
        if path and os.path.exists(path) and tool_major(path) == major:
            return d
    return None


def server_bin_dir(configured: Optional[str], major: int) -> str:
    """The directory with ``postgres`` and ``pg_ctl`` of exactly this major version."""
    candidates = major_bin_dirs(configured, major)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                             timeout=30, check=False).stdout.strip())
        except OSError:
            pass
    found = same_major_dir([d for d in candidates if d and os.path.exists(os.path.join(d, "pg_ctl"))], major,
                           "postgres")
    if found:
        return found
    raise PostgresError(f"PostgreSQL {major} server binaries (postgres, pg_ctl) not found in "
                        f"{', '.join(c for c in candidates if c)}",
                        hint=f"install postgresql-{major} or set postgres.bin_dir to its bin directory")


class ClientProcess(ChildProcess):
    """A PostgreSQL client tool with its stderr collected (not shown) for the error message."""

    def __init__(self, cmd: List[str], env: Dict[str, str], *, stdin=None, stdout=None):  # type: ignore[no-untyped-def]
        try:
            super().__init__(cmd, env=env, stdin=stdin, stdout=stdout)
        except OSError as exc:
            raise PostgresError(f"cannot run {cmd[0]}: {exc.strerror}") from None

    def check(self, what: str) -> None:
        """Raise PostgresError with the tool's own last error line if it failed."""
        rc = self.wait()
        if rc != 0:
            errors = [ln for ln in self.stderr_lines if "error" in ln.lower()] or self.stderr_lines
            detail = errors[-1] if errors else f"exit code {rc}"
            hint = None
            if "role" in detail and "does not exist" in detail:
                hint = "restore the roles first with --with-globals, or skip ownership with --no-owner"
            raise PostgresError(f"{self.name} failed for {what}: {detail}", hint=hint)
