"""The files of a recovery: a full base backup extracted into the data directory, or an incremental
chain combined and then moved into place.

A full backup: its objects are checked (all of them, in parallel), the existing data directory is
moved aside, then the base and tablespace archives are extracted in parallel. An incremental backup:
every object of every member of its chain is checked, the members are extracted into a private
directory beside the data directory and combined by ``pg_combinebackup`` into a sibling directory on
the same filesystem (tablespaces into a private directory inside their destination); only when the
combine succeeded is an existing data directory moved aside and the result renamed into place. A
failure at any step before that (a tampered member, a full disk, pg_combinebackup failing half-way)
leaves the data directory and the tablespace locations exactly as they were.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from ..context import Context
from ..errors import PgBackupError, PostgresError, RefusedError, UsageError
from ..manifest import Manifest
from ..physical.layout import BASE_OBJECT
from ..progress import PhaseTimer, Progress
from ..storage.local import fsync_dir
from .archives import Extraction, archive_extractions, archive_objects, checked_objects, extract_all
from .chain import load_chain
from .combine import check_space, combine_chain
from .datadir import make_tablespace_dirs, prepare_data_dir
from .settings import adopt_config


def restore_backup_files(ctx: Context, manifest: Manifest, data_dir: str, planned: List[Dict[str, Any]], stamp: str,
                         notes: List[str], timer: PhaseTimer, progress: Progress) -> Tuple[int, Optional[str]]:
    """Put the files of ``manifest`` (and of its chain) into ``data_dir`` and the ``planned``
    tablespace locations. Returns (bytes restored, where an existing data directory was moved)."""
    if manifest.is_incremental:
        return _restore_chain(ctx, manifest, data_dir, planned, stamp, notes, timer, progress)
    return _restore_full(ctx, manifest, data_dir, planned, stamp, notes, timer, progress)


def _moved_note(moved: Optional[str], data_dir: str, notes: List[str], progress: Progress) -> None:
    if moved:
        notes.append(f"the existing {data_dir} was moved aside to {moved} (nothing was deleted)")
        progress.note(notes[-1])


def _restore_full(ctx: Context, manifest: Manifest, data_dir: str, planned: List[Dict[str, Any]], stamp: str,
                  notes: List[str], timer: PhaseTimer, progress: Progress) -> Tuple[int, Optional[str]]:
    config_obj = next((o.name for o in manifest.objects if o.role == "config"), None)
    names = [n for first in [BASE_OBJECT] + [t["object"] for t in planned] for n in archive_objects(manifest, first)]
    names += [config_obj] if config_obj else []
    restored = 0
    moved = None
    try:
        # Checksums first: nothing is moved or written before every object matches its manifest.
        with checked_objects(ctx, [(manifest, n) for n in names], os.path.dirname(data_dir),
                             f".{os.path.basename(data_dir)}.pgb-download-", timer, progress) as checked:
            moved = prepare_data_dir(data_dir, stamp)
            _moved_note(moved, data_dir, notes, progress)
            make_tablespace_dirs(planned)
            jobs = archive_extractions(manifest, BASE_OBJECT, data_dir) + \
                [j for t in planned for j in archive_extractions(manifest, t["object"], t["restored_to"])]
            restored = extract_all(ctx, checked, jobs, timer, progress)
            if not os.path.exists(os.path.join(data_dir, "postgresql.conf")):
                if config_obj is None:
                    raise PostgresError(f"backup {manifest.backup_id} has no postgresql.conf (it lived outside the "
                                        f"data directory and this backup did not keep it)",
                                        hint=f"copy a postgresql.conf, pg_hba.conf and pg_ident.conf into {data_dir} "
                                             f"and start it yourself (--no-start), or use a newer backup")
                extract_all(ctx, checked, [Extraction(manifest, config_obj, data_dir)], timer, progress)
                adopt_config(data_dir, manifest, notes)
    except PgBackupError as exc:
        if os.path.isdir(data_dir) and os.listdir(data_dir):
            left = f"the incomplete {data_dir} is left for inspection"
            exc.hint = "; ".join(filter(None, [exc.hint, left + (f"; the previous one is at {moved}" if moved else "")]))
        raise
    return restored, moved


def _move_entries(src: str, dest: str) -> None:
    """Rename every entry of ``src`` into ``dest`` (same filesystem)."""
    for name in os.listdir(src):
        os.rename(os.path.join(src, name), os.path.join(dest, name))


def _first_missing(path: str) -> Optional[str]:
    """The outermost directory of ``path`` that does not exist yet (what makedirs will create)."""
    missing = None
    while path and not os.path.exists(path):
        missing, path = path, os.path.dirname(path)
    return missing


class _Staging:
    """Where a chain is combined: a private directory beside the data directory (inside it when it is
    an empty mount point, which cannot be replaced by a rename), and one inside each tablespace's
    destination; everything of it is removed at the end, and destinations it created on a failure."""

    def __init__(self, data_dir: str, planned: List[Dict[str, Any]]):
        self.data_dir, self.planned = data_dir, planned
        self.mount = os.path.isdir(data_dir) and os.path.ismount(data_dir)
        if self.mount and os.listdir(data_dir):
            raise RefusedError(f"{data_dir} is a mount point that is not empty: it cannot be moved aside; nothing was "
                               f"changed", hint="empty it yourself, or choose another --data-dir")
        self.parent = data_dir if self.mount else os.path.dirname(data_dir)
        try:
            self.work = tempfile.mkdtemp(prefix=".pgb-combine-" if self.mount else
                                         f".{os.path.basename(data_dir)}.pgb-combine-", dir=self.parent)
        except OSError as exc:
            raise UsageError(f"cannot create the directory to combine the chain in {self.parent}: {exc.strerror}; "
                             f"nothing was changed", hint="choose a --data-dir whose parent this user may write "
                                                          "(the chain is combined beside the data directory)") from None
        self.out = os.path.join(self.work, "data")
        self.ts: Dict[int, str] = {}
        self.created: List[str] = []
        self.touched = False       # the data directory itself has been changed

    def tablespace_out(self) -> Dict[int, str]:
        for t in self.planned:
            missing = _first_missing(t["restored_to"])
            make_tablespace_dirs([t])
            if missing:
                self.created.append(missing)
            self.ts[int(t["oid"])] = tempfile.mkdtemp(prefix=".pgb-combine-", dir=t["restored_to"])
        return {oid: os.path.join(d, "ts") for oid, d in self.ts.items()}

    def install(self, stamp: str, notes: List[str], progress: Progress) -> Optional[str]:
        """Move the combined result into place (an existing data directory aside first)."""
        moved = None
        if self.mount:
            self.touched = True
            _move_entries(self.out, self.data_dir)
        else:
            self.touched = True
            moved = prepare_data_dir(self.data_dir, stamp)
            _moved_note(moved, self.data_dir, notes, progress)
            try:
                os.rename(self.out, self.data_dir)   # onto the empty directory prepare_data_dir left
            except OSError as exc:
                raise RefusedError(f"cannot rename the combined data directory {self.out} to {self.data_dir}: "
                                   f"{exc.strerror}",
                                   hint=f"the previous one is at {moved}" if moved else None) from None
            fsync_dir(self.parent)
        for t in self.planned:
            _move_entries(os.path.join(self.ts[int(t["oid"])], "ts"), t["restored_to"])
            link = os.path.join(self.data_dir, "pg_tblspc", str(t["oid"]))
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(t["restored_to"], link)
        return moved

    def cleanup(self, ok: bool) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        for d in self.ts.values():
            shutil.rmtree(d, ignore_errors=True)
        if not ok and not self.touched:   # once in place, a failed restore is left for inspection
            for d in reversed(self.created):
                shutil.rmtree(d, ignore_errors=True)


def _restore_chain(ctx: Context, manifest: Manifest, data_dir: str, planned: List[Dict[str, Any]], stamp: str,
                   notes: List[str], timer: PhaseTimer, progress: Progress) -> Tuple[int, Optional[str]]:
    chain = load_chain(ctx, manifest)
    staging = _Staging(data_dir, planned)
    ok = False
    try:
        check_space(ctx, chain, staging.parent)
        files = combine_chain(ctx, chain, staging.work, staging.out, timer=timer, progress=progress,
                              tablespace_out=staging.tablespace_out, config=True)
        moved = staging.install(stamp, notes, progress)
        if files.config_extracted:
            adopt_config(data_dir, manifest, notes)
        notes.append(f"combined the chain {' + '.join(m.backup_id for m in chain)} with {files.tool}"
                     f"{' (unchanged files hard-linked)' if files.linked else ''}")
        ok = True
    except PgBackupError as exc:
        if not staging.touched and "nothing was changed" not in exc.message:
            exc.message = f"{exc.message}; {data_dir} was left as it was"
        raise
    finally:
        staging.cleanup(ok)
    return files.restored_bytes, moved
