"""The data directory a recovery writes and where its tablespaces go.

An existing data directory is moved aside, never deleted; one a running server uses is refused before
anything changes. A tablespace goes where ``--tablespace-map`` says, else to its original location
when that holds no tablespace of this major version yet, else inside the data directory (never into
someone's live tablespace); ``tablespace_map`` is rewritten to match.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

from ..errors import IntegrityError, RefusedError, UsageError
from ..files import atomic_write
from ..manifest import Manifest
from ..postgres.server import postmaster_pid

RESTORED_TABLESPACES = "pg_tblspc_restored"
#: Files of the server the backup was taken from that must not survive into the recovered one.
STALE_SERVER_FILES = ("postmaster.pid", "postmaster.opts", "standby.signal")


def read_text(path: str) -> str:
    """A text file of the data directory (configuration, tablespace_map, the log), "" if absent."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def check_data_dir(data_dir: str) -> None:
    """Refuse a data directory that is a file or that a running server uses (nothing is changed)."""
    if os.path.lexists(data_dir) and not os.path.isdir(data_dir):
        raise RefusedError(f"{data_dir} exists and is not a directory; nothing was changed",
                           hint="choose another --data-dir")
    pid = postmaster_pid(data_dir) if os.path.isdir(data_dir) else None
    if pid is not None:
        raise RefusedError(f"a PostgreSQL server (pid {pid}) is running in {data_dir}; nothing was changed",
                           hint="stop it first (pg_ctl stop), or recover into another --data-dir")
    parent = os.path.dirname(data_dir)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {parent} for the data directory: {exc.strerror}",
                         hint="choose a --data-dir this user may create") from None


def prepare_data_dir(data_dir: str, stamp: str) -> Optional[str]:
    """Make ``data_dir`` an empty 0700 directory; move a non-empty one aside (never delete).
    Returns where the old one went, or None."""
    moved = None
    check_data_dir(data_dir)
    if os.path.isdir(data_dir) and os.listdir(data_dir):
        moved = f"{data_dir}.pitr-{stamp}"
        n = 0
        while os.path.lexists(moved):
            n += 1
            moved = f"{data_dir}.pitr-{stamp}-{n}"
        try:
            os.rename(data_dir, moved)
        except OSError as exc:
            raise RefusedError(f"cannot move the existing {data_dir} aside to {moved}: {exc.strerror}; nothing was "
                               f"changed", hint="move or empty it yourself (is it a mount point?), or choose "
                                                "another --data-dir") from None
    try:
        if not os.path.isdir(data_dir):
            os.mkdir(data_dir, 0o700)
        os.chmod(data_dir, 0o700)
    except OSError as exc:
        raise UsageError(f"cannot create data directory {data_dir}: {exc.strerror}",
                         hint="choose a --data-dir this user may create") from None
    return moved


def remove_stale_server_files(data_dir: str) -> None:
    for stale in STALE_SERVER_FILES:
        try:
            os.unlink(os.path.join(data_dir, stale))
        except FileNotFoundError:
            pass


# -- tablespaces ---------------------------------------------------------------------------------

def parse_tablespace_map(items: Sequence[str]) -> Dict[str, str]:
    """``--tablespace-map OLD=NEW`` options as {OLD: NEW}."""
    out: Dict[str, str] = {}
    for item in items or ():
        old, sep, new = item.partition("=")
        if not sep or not old or not new or not os.path.isabs(new):
            raise UsageError(f"--tablespace-map {item!r}: expected OLD=NEW with NEW an absolute path (OLD: the "
                             f"tablespace's original location, name or oid)")
        out[old] = new
    return out


def _occupied(location: str, major: int) -> bool:
    """True when ``location`` already holds a tablespace of this major version (PG_<major>_...)."""
    try:
        return any(name.startswith(f"PG_{major}_") for name in os.listdir(location))
    except FileNotFoundError:
        return False
    except OSError:
        return True


def plan_tablespaces(manifest: Manifest, data_dir: str, mapping: Optional[Dict[str, str]],
                     notes: List[str]) -> List[Dict[str, Any]]:
    """Where each tablespace of the backup is restored: a mapping entry (by old location, name or
    oid), else its original location when that holds no tablespace of this version yet, else
    ``<data_dir>/pg_tblspc_restored/<oid>`` (never into someone's live tablespace)."""
    major = manifest.server_version_num // 10000
    mapping = dict(mapping or {})
    planned = []
    for ts in manifest.tablespaces:
        oid, old, name = int(ts["oid"]), str(ts.get("location") or ""), ts.get("name")
        new = None
        for key in (old, str(name or ""), str(oid)):
            if key and key in mapping:
                new = os.path.abspath(mapping.pop(key))
                break
        if new is not None:
            if os.path.isdir(new) and os.listdir(new):
                raise RefusedError(f"tablespace {name or oid}: {new} is not empty; nothing was changed",
                                   hint="map it to an empty or new directory")
        elif old and not _occupied(old, major):
            new = old
        else:
            new = os.path.join(data_dir, RESTORED_TABLESPACES, str(oid))
            notes.append(f"tablespace {name or oid}: {old} is in use (holds a PostgreSQL {major} tablespace), so it "
                         f"was restored into {new}; map it elsewhere with --tablespace-map {old}=NEW")
        if "\n" in new or "\r" in new:
            raise UsageError(f"tablespace path {new!r} contains a line break")
        planned.append({"oid": oid, "name": name, "location": old, "restored_to": new, "object": ts["object"]})
    if mapping:
        raise UsageError(f"--tablespace-map names {', '.join(sorted(mapping))}, which backup {manifest.backup_id} "
                         f"has no tablespace for", hint="tablespaces in it: " + (", ".join(
                             f"{t.get('name')} ({t.get('location')})" for t in manifest.tablespaces) or "none"))
    return planned


def make_tablespace_dirs(planned: List[Dict[str, Any]]) -> None:
    for t in planned:
        try:
            os.makedirs(t["restored_to"], mode=0o700, exist_ok=True)
            os.chmod(t["restored_to"], 0o700)
        except OSError as exc:
            raise UsageError(f"cannot create tablespace directory {t['restored_to']}: {exc.strerror}",
                             hint=f"map it elsewhere with --tablespace-map {t['location']}=NEW") from None


def rewrite_tablespace_map(data_dir: str, planned: List[Dict[str, Any]]) -> None:
    if not planned:
        return
    path = os.path.join(data_dir, "tablespace_map")
    present = read_text(path)
    oids = {str(t["oid"]) for t in planned}
    listed = {line.split(" ", 1)[0] for line in present.splitlines() if line.strip()}
    if listed != oids:
        raise IntegrityError(f"tablespace_map in the base backup lists {sorted(listed)}, the manifest {sorted(oids)}")
    atomic_write(path, "".join(f"{t['oid']} {t['restored_to']}\n" for t in planned).encode("utf-8"), durable=True)
