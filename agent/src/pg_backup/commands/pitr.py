"""``pitr``: point-in-time recovery of a base backup plus archived WAL into a data directory."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from ..context import Context
from ..erasure.pending import deferred_document, refuse_unstarted, replay_command, stamp, write_marker
from ..erasure.replay import check_skips, summary_line
from ..errors import UsageError
from ..progress import human_bytes
from ..recovery.datadir import parse_tablespace_map
from ..recovery.flow import RecoveryResult, recover
from ..recovery.targets import target_from_options
from ..recovery.window import OutsideWindow
from . import CommandResult


def pitr(ctx: Context, *, data_dir: str, latest: bool, target_time: Optional[str], target_lsn: Optional[str],
         target_xid: Optional[str], target_name: Optional[str], exclusive: bool, backup_id: Optional[str],
         port: Optional[int], no_start: bool, keep_archiving: bool, tablespace_map: Sequence[str],
         skip_erasures: Optional[Dict[str, str]] = None, defer_erasure: bool = False,
         config_arg: Optional[str] = None) -> CommandResult:
    target = target_from_options(latest=latest, target_time=target_time, target_lsn=target_lsn, target_xid=target_xid,
                                 target_name=target_name, exclusive=exclusive)
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port")
    mapping = parse_tablespace_map(tablespace_map or [])
    check_skips(ctx, skip_erasures or {})
    pending = refuse_unstarted(ctx, skip_erasures or {}, defer=defer_erasure, no_start=no_start)
    try:
        result = recover(ctx, target, data_dir, port=port, start=not no_start, archiving=keep_archiving,
                         backup_id=backup_id, tablespace_map=mapping, skip_erasures=skip_erasures)
    except OutsideWindow as exc:
        # The document still names the window, so a caller can offer a target inside it.
        return CommandResult({"window": exc.window.to_dict() if exc.window else None, "target": target.to_dict()},
                             exit_code=exc.exit_code, error=str(exc))
    if pending:
        command = replay_command(result.data_dir, config_arg)
        marker = write_marker(result.data_dir, backup_id=result.backup_id, target=target.describe(), pending=pending,
                              skips=skip_erasures or {}, created=stamp(ctx), command=command)
        result.erasures = deferred_document(marker, pending, command)
        result.notes = [n for n in result.notes if not n.startswith("the erasure register")]
    return CommandResult(result.to_dict(), _text(result))


def _text(result: RecoveryResult) -> List[str]:
    lines = [f"recovered base backup {result.backup_id} into {result.data_dir} "
             f"({human_bytes(result.restored_bytes)} restored) for {result.target.describe()}"]
    if result.reached:
        r = result.reached
        lines.append(f"  promoted: timeline {r['timeline']}, WAL {r['lsn']}, last commit {r['time'] or 'none replayed'}")
        where = f"port {result.port}" + (f", socket {result.socket_dir}" if result.socket_dir else "")
        lines.append(f"  running ({where}); stop it with pg_ctl -D {result.data_dir} stop")
    else:
        lines.append(f"  not started: pg_ctl -D {result.data_dir} -l {result.log_file} start")
    if result.erasures is not None:
        lines.append(f"  {summary_line(result.erasures)}")
    if result.stop_record:
        lines.append(f"  {result.stop_record}")
    lines.append("  phases: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in result.phases.items()))
    lines += [f"  note: {n}" for n in result.notes]
    return lines
