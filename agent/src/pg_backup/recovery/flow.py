"""One recovery, start to end: :func:`recover` and its :class:`RecoveryResult`.

Choose the newest base backup that ended before the target, check its objects' SHA-256 (downloading
them from S3 into a private directory first, so nothing is decrypted from an unchecked object), move
an existing data directory aside (never delete), decrypt and extract the base and tablespace
archives (an incremental backup: every member of its chain checked, extracted and combined with
pg_combinebackup beside the data directory, then renamed into place), write ``recovery.signal`` and
the recovery settings into ``postgresql.auto.conf``, start the server, wait for the promotion and
report the point reached. After the promotion the recovery-only settings are taken out of
``postgresql.auto.conf`` again.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..context import Context
from ..erasure.replay import not_started_note, reapply_after_recovery
from ..errors import IntegrityError, PgBackupError, PostgresError, RefusedError
from ..manifest import Manifest
from ..postgres.server import socket_dir_for, start_server, stop_server
from ..postgres.tools import server_bin_dir
from ..progress import PhaseTimer, Progress
from ..wal.fetch import prefetch_for_recovery, refused_wal
from .datadir import check_data_dir, plan_tablespaces, remove_stale_server_files, rewrite_tablespace_map
from .durable import make_durable
from .restore_files import restore_backup_files
from .server import log_path, log_stop_record, scratch_postgres, wait_for_promotion
from .settings import finish_config, recovery_settings, server_overrides, write_auto_conf, write_recovery_config
from .targets import RecoveryTarget
from .window import Catalog, OutsideWindow, choose_backup


@dataclass
class RecoveryResult:
    data_dir: str
    port: Optional[int]
    backup_id: str
    target: RecoveryTarget
    reached: Optional[Dict[str, Any]]          # {"time", "lsn", "timeline"} once promoted
    phases: Dict[str, float]
    started: bool = False
    socket_dir: Optional[str] = None
    host: Optional[str] = None
    archiving: bool = False
    moved_aside: Optional[str] = None
    tablespaces: List[Dict[str, Any]] = field(default_factory=list)
    stop_record: Optional[str] = None
    log_file: Optional[str] = None
    restored_bytes: int = 0
    notes: List[str] = field(default_factory=list)
    erasures: Optional[Dict[str, Any]] = None  # the erasure register as re-applied before hand-over

    def to_dict(self) -> Dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["target"] = self.target.to_dict()
        return doc


def socket_host(result: RecoveryResult) -> str:
    """Host for a client of the recovered server: its Unix socket directory, else loopback."""
    return result.socket_dir or result.host or "127.0.0.1"


def recover(ctx: Context, target: RecoveryTarget, data_dir: str, *, port: Optional[int] = None, start: bool = True,
            archiving: bool = False, backup_id: Optional[str] = None, progress: Optional[Progress] = None,
            tablespace_map: Optional[Dict[str, str]] = None, timeout: Optional[float] = None,
            skip_erasures: Optional[Dict[str, str]] = None) -> RecoveryResult:
    """Restore a base backup into ``data_dir`` and recover to ``target`` (see the module docstring).

    ``port``: the recovered server listens there on 127.0.0.1 and a Unix socket in the data
    directory (a scratch server); None keeps the backup's own settings. ``archiving``: keep the
    backup's archive settings (only for a server that replaces production); otherwise archive_mode is
    off. ``start=False`` stops after writing the files. Raises OutsideWindow (exit 7) for a target
    outside the recoverable window, RefusedError (exit 9) when a server runs in ``data_dir``."""
    progress = progress or ctx.progress
    data_dir = os.path.abspath(data_dir)
    timer = PhaseTimer()
    catalog = Catalog(ctx)
    manifest, notes = choose_backup(catalog, target, backup_id)
    major = manifest.server_version_num // 10000
    ctx.gpg.require_key(manifest.encryption.fingerprint, f"backup {manifest.backup_id}")
    bin_dir = server_bin_dir(ctx.settings.postgres, major, what=f"backup {manifest.backup_id}")
    if os.geteuid() == 0:
        raise RefusedError("PostgreSQL refuses to run as root", hint="run pg-backup pitr as the postgres OS user")
    stamp = ctx.clock().strftime("%Y%m%dT%H%M%SZ")
    progress.stage(f"pitr: {target.describe()} from base backup {manifest.backup_id} into {data_dir}")
    check_data_dir(data_dir)
    planned = plan_tablespaces(manifest, data_dir, tablespace_map, notes)
    if start:
        prefetch_for_recovery(ctx, manifest.start_wal)     # its first WAL decrypts while the files are restored
    restored, moved = restore_backup_files(ctx, manifest, data_dir, planned, stamp, notes, timer, progress)
    os.chmod(data_dir, 0o700)
    rewrite_tablespace_map(data_dir, planned)
    remove_stale_server_files(data_dir)
    socket_dir = socket_dir_for(data_dir) if port is not None else None
    config_path = write_recovery_config(ctx, data_dir)
    settings = recovery_settings(target, config_path, port=port, socket_dir=socket_dir, archiving=archiving)
    write_auto_conf(data_dir, settings, f"recovery of {manifest.backup_id} to {target.describe()}")
    with open(os.path.join(data_dir, "recovery.signal"), "w", encoding="utf-8"):
        pass
    if not archiving:
        notes.append("archiving is off in the recovered server (archive_mode = off): it never archives into the "
                     "production prefix")
    result = RecoveryResult(data_dir=data_dir, port=port, backup_id=manifest.backup_id, target=target, reached=None,
                            phases=timer.phases, socket_dir=socket_dir, host="127.0.0.1" if port is not None else None,
                            archiving=archiving, moved_aside=moved, tablespaces=planned,
                            log_file=log_path(data_dir), restored_bytes=restored, notes=notes)
    if not start:
        notes.extend(filter(None, [not_started_note(ctx)]))
        progress.stage(f"pitr: {data_dir} is ready for recovery (not started: start it with pg_ctl -D {data_dir} start)")
        return result
    # the restored files are written back now, not by the server's SyncDataDirectory before its first WAL
    make_durable([data_dir] + [t["restored_to"] for t in planned], timer)
    prefetch_for_recovery(ctx, manifest.start_wal, config_path)   # again, if it went idle meanwhile
    progress.stage(f"pitr: starting the server to replay WAL up to {target.describe()}")
    start_server(bin_dir, data_dir, log_path(data_dir), what="the recovered server")
    try:
        reached, conn_info = wait_for_promotion(ctx, data_dir, timer, progress, timeout)
    except BaseException as exc:
        try:
            stop_server(data_dir, mode="immediate")
        except PgBackupError:
            pass
        refused = refused_wal(data_dir)
        if refused:
            raise IntegrityError(f"recovery stopped before a WAL file it refused: {refused}") from None
        if isinstance(exc, PostgresError):
            raise explain_failure(exc, target, manifest, catalog) from None
        raise
    refused = refused_wal(data_dir)
    if refused:   # --latest: PostgreSQL took the refused file for the end of the archive and promoted
        stop_server(data_dir, mode="immediate")
        raise IntegrityError(f"recovery stopped before a WAL file it refused (the server was stopped; do not use "
                             f"{data_dir}): {refused}")
    result.started = True
    result.reached = reached
    result.port = conn_info[0]
    result.socket_dir = conn_info[1] or socket_dir
    result.host = conn_info[2] or result.host
    result.stop_record = log_stop_record(data_dir)
    finish_config(data_dir, server_overrides(port=port, socket_dir=socket_dir, archiving=archiving), config_path,
                  notes)
    result.erasures = reapply_after_recovery(ctx, scratch_postgres(ctx, socket_host(result), result.port), data_dir,
                                             skips=skip_erasures)
    result.phases = timer.phases
    progress.stage(f"pitr: promoted on timeline {reached['timeline']} at {reached['lsn']}"
                   f"{', last commit ' + reached['time'] if reached.get('time') else ''}")
    return result


def explain_failure(exc: PostgresError, target: RecoveryTarget, manifest: Manifest, catalog: Catalog) -> PgBackupError:
    """A recovery that stopped short of its target, said in terms of the recoverable window
    (OutsideWindow, exit 7); any other failure unchanged."""
    text = exc.message
    window = None
    try:
        window = catalog.window()
    except PgBackupError:
        pass
    where = f"; recoverable window: {window.describe()}" if window else ""
    if "before configured recovery target was reached" in text:
        return OutsideWindow(f"recovery from {manifest.backup_id} replayed all archived WAL without reaching "
                             f"{target.describe()}{where}", window,
                             hint="a restore point or transaction from before the backup needs an older --backup-id; "
                                  "a later one is not archived yet (or never existed)")
    if "before consistent recovery point" in text:
        return OutsideWindow(f"{target.describe()} lies before the end of base backup {manifest.backup_id}{where}",
                             window, hint="pass an older --backup-id")
    return exc
