"""Gathering what :func:`~.checks.evaluate` needs from the outside world: storage, the WAL archive,
PostgreSQL's archiver (with the state file that remembers its failure count between runs), the
recorded restore verifications, local disk and the audit log."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from ..errors import PgBackupError
from ..files import atomic_write
from ..manifest import Manifest
from ..postgres.archiver import archiver_state
from ..verification.records import newest_drill, verification_history
from ..wal.names import parse_lsn
from .checks import ArchiverProbe, Probes, WalProbe, utc_text
from .keys import probe_keys
from .summarizer import probe_summarizer

STATE_FILE = "health-state.json"


def gather(ctx: Any) -> Tuple[List[Manifest], Probes]:
    """Everything :func:`~.checks.evaluate` needs, from storage, PostgreSQL and local files. Never
    raises for an unreachable part: what cannot be probed becomes an error the evaluation reports."""
    settings = ctx.settings
    probes = Probes(last_runs=last_runs_from_audit(settings.audit_log_path), keys=probe_keys(settings))
    manifests: List[Manifest] = []
    try:
        probes.storage = ctx.storage.check(wait=False)
        manifests = ctx.repo.manifests()
    except PgBackupError as exc:
        probes.storage_error = exc.message
    probes.configured_region = settings.repository.required_region()
    try:
        st = os.statvfs(settings.paths.state_dir)
        probes.disk_free_fraction = st.f_bavail / st.f_blocks if st.f_blocks else None
    except OSError:
        pass
    if probes.storage_error is None:
        probes.wal = probe_wal_archive(ctx, manifests)
        try:
            probes.verifications = verification_history(ctx.repo, probes.untrusted.append, newest=True)
        except PgBackupError as exc:
            probes.verifications_error = exc.message
        probes.last_drill = newest_drill(ctx.repo, probes.untrusted.append)
        probes.untrusted += ctx.wal_archive.untrusted_conflicts
    try:
        probes.archiver = probe_archiver(ctx)
    except PgBackupError as exc:
        probes.archiver_error = exc.message
    probes.summarizer = probe_summarizer(ctx)
    return manifests, probes


def probe_archiver(ctx: Any) -> ArchiverProbe:
    """pg_stat_archiver and the WAL position; remembers failed_count for the next run's comparison."""
    with ctx.pg.connect() as conn:
        s = archiver_state(conn)
        in_recovery, lsn, segment_size = conn.execute(
            "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,"
            " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')").fetchone()
    arch = ArchiverProbe(in_recovery=in_recovery, archive_mode=s["archive_mode"],
                         archive_command=s["archive_command"] or "", archive_library=s["archive_library"] or "",
                         archived_count=int(s["archived_count"]),
                         failed_count=int(s["failed_count"]), last_archived_wal=s["last_archived_wal"],
                         last_archived_time=s["last_archived_time"], last_failed_wal=s["last_failed_wal"],
                         last_failed_time=s["last_failed_time"], stats_reset=s["stats_reset"],
                         current_lsn=parse_lsn(lsn) if lsn else None, wal_segment_size=int(segment_size))
    state = _read_state(ctx.settings.paths.state_dir)
    arch.previous_failed_count = state.get("archiver_failed_count")
    arch.previous_stats_reset = state.get("archiver_stats_reset")
    _write_state(ctx.settings.paths.state_dir, {"archiver_failed_count": arch.failed_count,
                                                "archiver_stats_reset": utc_text(arch.stats_reset) if arch.stats_reset
                                                else None})
    return arch


def _read_state(state_dir: str) -> Dict[str, Any]:
    try:
        with open(os.path.join(state_dir, STATE_FILE), encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_state(state_dir: str, data: Dict[str, Any]) -> None:
    """Best effort (0600, atomic rename): health must work on a read-only state directory too."""
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        atomic_write(os.path.join(state_dir, STATE_FILE), json.dumps(data).encode())
    except OSError:
        pass


def probe_wal_archive(ctx: Any, manifests: List[Manifest]) -> Optional[WalProbe]:
    """The WAL archive's newest segment, gaps since the oldest base backup and conflicting pushes;
    None when the repository has no WAL at all and no physical backup."""
    probe = WalProbe()
    try:
        archive = ctx.wal_archive
        entries = [e for e in archive.entries() if getattr(e, "kind", "segment") == "segment"]
        probe.segments = len(entries)
        if not entries and not any(m.kind == "physical" for m in manifests):
            return None
        newest = archive.newest_segment()
        if newest is not None:
            probe.newest_segment, probe.newest_modified = newest.name, newest.modified
        probe.gaps, probe.missing_segments = _describe_gaps(archive, manifests)
        probe.conflicts = _conflicts(archive)
    except PgBackupError as exc:
        probe.error = exc.message
    return probe


def _describe_gaps(archive: Any, manifests: List[Manifest]) -> Tuple[List[str], int]:
    physical = [m for m in manifests if m.kind == "physical" and m.start_wal]
    since = min((m.start_wal for m in physical), default=None)  # type: ignore[type-var]
    gaps = archive.gaps(since) if since else archive.gaps()
    described, missing = [], 0
    for gap in gaps:
        first, last = (gap if isinstance(gap, tuple) else (gap, gap))
        described.append(f"{first}..{last}" if first != last else str(first))
        missing += 1
    return described, missing


def _conflicts(archive: Any) -> List[str]:
    finder = getattr(archive, "conflicts", None)
    if finder is None:
        return []
    return [str(c) for c in finder()]


# -- the audit log ---------------------------------------------------------------------------------

def last_runs_from_audit(path: str, limit_bytes: int = 4 << 20) -> Dict[str, Dict[str, Any]]:
    """The newest audit record per operation (and per tier for backups), from the local log's tail."""
    runs: Dict[str, Dict[str, Any]] = {}
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit_bytes))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return runs
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        op = record.get("operation")
        if op not in ("backup", "prune", "verify"):
            continue
        key = op
        if op == "backup":
            args = record.get("arguments", [])
            tier = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--tier"), None)
            if "--physical" in args:
                key = f"backup:physical_{tier or 'daily'}"
            else:
                key = f"backup:{tier}" if tier else op
        if record.get("result") == "skipped":
            continue
        runs[key] = record
    return runs
