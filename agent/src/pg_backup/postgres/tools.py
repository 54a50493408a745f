"""PostgreSQL's programs: where the client tools and the server binaries of a major version are,
which version a program is, and :class:`ClientProcess`, a client tool on the data path.

Client tools (pg_dump, pg_restore, psql; postgres.bin_dir) must be at least as new as the server they
talk to. Server programs (postgres, pg_ctl) and the tools that read a data directory or its WAL
(pg_combinebackup, pg_verifybackup, pg_waldump) need exactly the data directory's major: a newer
major's refuses an older backup (its pg_control layout differs: "pg_control: CRC is incorrect").
They come from postgres.server_bin_dir when it is set.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from typing import TYPE_CHECKING, Dict, List, Optional

from ..errors import ConfigError, PostgresError
from ..process import ChildProcess

if TYPE_CHECKING:
    from ..config import PostgresSettings


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
    """Where the programs of exactly ``major`` may be, in order: ``configured``, Debian's, RHEL's."""
    return [configured or "", f"/usr/lib/postgresql/{major}/bin", f"/usr/pgsql-{major}/bin"]


def same_major_dir(candidates: List[str], major: int, program: str) -> Optional[str]:
    """The first of ``candidates`` whose ``program`` exists and is of exactly ``major``."""
    for d in candidates:
        path = os.path.join(d, program) if d else ""
        if path and os.path.exists(path) and tool_major(path) == major:
            return d
    return None


def _pg_config_bindir() -> Optional[str]:
    pg_config = shutil.which("pg_config")
    if not pg_config:
        return None
    try:
        return subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30,
                              check=False).stdout.strip() or None
    except OSError:
        return None


def _checked_server_dir(pg: Optional["PostgresSettings"], major: int, what: str) -> Optional[str]:
    """postgres.server_bin_dir when set, after checking that its ``postgres`` is exactly ``major``."""
    configured = getattr(pg, "server_bin_dir", None)
    if not configured:
        return None
    found = tool_major(os.path.join(configured, "postgres"))
    if found != major:
        holds = f"holds PostgreSQL {found}" if found is not None else "has no runnable postgres"
        raise ConfigError(f"postgres.server_bin_dir {configured} {holds}, but {what} needs PostgreSQL {major}",
                          hint=f"set postgres.server_bin_dir to the bin directory of PostgreSQL {major}")
    return configured


def _default_server_dirs(pg: Optional["PostgresSettings"], major: int) -> List[str]:
    client = getattr(pg, "bin_dir", None)
    dirs = major_bin_dirs(client, major)
    bindir = _pg_config_bindir()
    if bindir:
        dirs.append(bindir)
    return [d for d in dirs if d]


def server_bin_dir(pg: Optional["PostgresSettings"], major: int, *, what: str = "this data directory") -> str:
    """The directory with ``postgres`` and ``pg_ctl`` of exactly ``major``: postgres.server_bin_dir when
    set (checked, and the only place then), else postgres.bin_dir, Debian's, RHEL's, pg_config's."""
    configured = _checked_server_dir(pg, major, what)
    candidates = [configured] if configured else _default_server_dirs(pg, major)
    found = same_major_dir([d for d in candidates if os.path.exists(os.path.join(d, "pg_ctl"))], major, "postgres")
    if found:
        return found
    raise PostgresError(f"PostgreSQL {major} server binaries (postgres, pg_ctl) not found in "
                        f"{', '.join(candidates)}",
                        hint=f"install postgresql-{major} or set postgres.server_bin_dir to its bin directory")


def same_major_tool(pg: Optional["PostgresSettings"], major: int, program: str, *,
                    what: str = "this backup") -> Optional[str]:
    """The path of ``program`` of exactly ``major`` (pg_combinebackup, pg_verifybackup, pg_waldump:
    tools that read a data directory or WAL, which newer majors refuse), or None: looked for in
    postgres.server_bin_dir first (checked), then where :func:`server_bin_dir` looks."""
    configured = _checked_server_dir(pg, major, what)
    d = same_major_dir(([configured] if configured else []) + _default_server_dirs(pg, major), major, program)
    return os.path.join(d, program) if d else None


def require_same_major_tool(pg: Optional["PostgresSettings"], major: int, program: str, *,
                            what: str = "this backup") -> str:
    """:func:`same_major_tool`, raising PostgresError (exit 6) with the fix when there is none."""
    path = same_major_tool(pg, major, program, what=what)
    if path:
        return path
    raise PostgresError(f"no {program} of PostgreSQL {major} found for {what} (a newer major's refuses "
                        f"PostgreSQL {major} data)",
                        hint=f"install PostgreSQL {major}'s {program} and set postgres.server_bin_dir to its "
                             f"bin directory")


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
