"""The recovery's settings in the data directory: one marked block in ``postgresql.auto.conf``
(restore_command = ``pg-backup wal-fetch``, one recovery_target_*, timeline latest, action promote,
archiving off unless asked), the agent configuration restore_command reads, and a configuration the
backup kept from outside the data directory made to work inside it. After the promotion only the
lasting overrides stay.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from typing import Dict, List, Optional

import yaml

from ..config import to_dict
from ..context import Context
from ..errors import UsageError
from ..files import atomic_write, unlink_quietly
from ..manifest import Manifest
from .datadir import read_text
from .targets import RecoveryTarget

RECOVERY_CONFIG_NAME = "pg-backup.recovery.yml"   # the agent configuration restore_command uses
AUTO_CONF = "postgresql.auto.conf"
BLOCK_BEGIN = "# BEGIN pg-backup pitr"
BLOCK_END = "# END pg-backup pitr"


def conf_quote(value: str) -> str:
    """A value quoted for postgresql.conf."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def agent_executable() -> str:
    """The pg-backup console script restore_command runs (the one running now)."""
    here = os.path.join(os.path.dirname(sys.executable), "pg-backup")
    if os.access(here, os.X_OK):
        return here
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0).startswith("pg-backup") and os.access(argv0, os.X_OK):
        return argv0
    found = shutil.which("pg-backup")
    if found:
        return os.path.abspath(found)
    raise UsageError("cannot find the pg-backup executable for restore_command",
                     hint="run pg-backup from its virtualenv's bin directory or put it on PATH")


def write_recovery_config(ctx: Context, data_dir: str) -> str:
    """The agent configuration restore_command uses, as a private copy inside the data directory:
    it holds no secrets (only paths to them) and cannot change under a running recovery."""
    path = os.path.join(data_dir, RECOVERY_CONFIG_NAME)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# Written by pg-backup pitr for restore_command; removed after the promotion.\n")
        yaml.safe_dump(to_dict(ctx.settings), fh, sort_keys=False, allow_unicode=True)
    return path


def _strip_block(text: str) -> str:
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith(BLOCK_BEGIN):
            inside = True
            continue
        if line.startswith(BLOCK_END):
            inside = False
            continue
        if not inside:
            out.append(line)
    return "".join(out)


def write_auto_conf(data_dir: str, settings: Dict[str, str], comment: str) -> None:
    """Append one marked block of settings to postgresql.auto.conf (replacing an earlier block)."""
    path = os.path.join(data_dir, AUTO_CONF)
    base = _strip_block(read_text(path))
    if base and not base.endswith("\n"):
        base += "\n"
    lines = [f"{BLOCK_BEGIN}: {comment}"] + [f"{k} = {conf_quote(v)}" for k, v in settings.items()] + [BLOCK_END]
    atomic_write(path, (base + "\n".join(lines) + "\n").encode("utf-8"), durable=True)


def recovery_settings(target: RecoveryTarget, config_path: str, *, port: Optional[int], socket_dir: Optional[str],
                      archiving: bool) -> Dict[str, str]:
    cmd = (f"{shlex.quote(agent_executable())} --config {shlex.quote(config_path)} --quiet wal-fetch %f %p")
    out: Dict[str, str] = {"restore_command": cmd}
    out.update(target.settings())
    out.update({"recovery_target_timeline": "latest", "recovery_target_action": "promote", "lc_messages": "C"})
    out.update(server_overrides(port=port, socket_dir=socket_dir, archiving=archiving))
    return out


def server_overrides(*, port: Optional[int], socket_dir: Optional[str], archiving: bool) -> Dict[str, str]:
    """What stays after the promotion: the scratch port, loopback and socket, and archiving off."""
    out: Dict[str, str] = {}
    if port is not None:
        out.update({"port": str(port), "listen_addresses": "127.0.0.1", "unix_socket_directories": socket_dir or ""})
    if not archiving:
        # DESIGN §5.7: a recovered copy never archives into the production prefix; a promoted copy
        # must not wait for synchronous standbys it does not have either.
        out.update({"archive_mode": "off", "archive_command": "", "synchronous_standby_names": ""})
    return out


def finish_config(data_dir: str, overrides: Dict[str, str], config_path: str, notes: List[str]) -> None:
    """After the promotion: keep only the lasting overrides in postgresql.auto.conf (the recovery
    settings are read only during recovery; no reload needed) and remove the configuration copy
    restore_command used."""
    try:
        write_auto_conf(data_dir, overrides, "recovered by pg-backup pitr (recovery settings removed after promotion)")
    except OSError as exc:
        notes.append(f"could not remove the recovery settings from {AUTO_CONF}: {exc}")
    unlink_quietly(config_path)


_PATH_SETTINGS = re.compile(r"^\s*(data_directory|hba_file|ident_file|external_pid_file)\s*=?", re.I)
_ABS_INCLUDE = re.compile(r"^\s*(include_dir|include_if_exists|include)\s*=?\s*'(/[^']*|[^']*\.\.[^']*)'", re.I)


def adopt_config(data_dir: str, manifest: Manifest, notes: List[str]) -> None:
    """Make the configuration files the backup kept from outside the data directory (Debian's
    /etc/postgresql/...) work inside it: settings that point at the original cluster's paths
    (data_directory, hba_file, ident_file, external_pid_file) and includes by absolute path are
    commented out, so the recovered server can never open the original data directory."""
    path = os.path.join(data_dir, "postgresql.conf")
    dropped, out = [], []
    for line in read_text(path).splitlines():
        if _PATH_SETTINGS.match(line) or _ABS_INCLUDE.match(line):
            dropped.append(line.strip())
            line = f"#pg-backup pitr: {line}"
        out.append(line)
    atomic_write(path, ("\n".join(out) + "\n").encode("utf-8"), durable=True)
    where = ", ".join(sorted((manifest.extra or {}).get("config_files", {}).values())) or "outside the data directory"
    notes.append(f"postgresql.conf, pg_hba.conf and pg_ident.conf came from {where} (kept with the backup) and now "
                 f"live in the data directory" + (f"; commented out: {'; '.join(dropped)}" if dropped else ""))
