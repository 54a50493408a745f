"""A drill from start to finish: mark the primary, recover the latest state on a scratch port, check
it, measure RTO and RPO against the targets, write the reports and record the verification."""
from __future__ import annotations

import dataclasses
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from .. import __version__
from ..context import Context
from ..erasure.replay import check_skips
from ..errors import PgBackupError
from ..manifest import iso
from ..recovery.datadir import check_data_dir
from ..recovery.flow import recover, socket_host
from ..recovery.server import scratch_postgres
from ..recovery.targets import latest_target
from ..verification.checks import run_checks
from ..verification.outcome import Outcome, jsonable
from ..verification.records import record_verification
from ..verification.scratch import database_names, remove_scratch_server
from .primary import mark_primary
from .report import REPORT_SCHEMA_VERSION, write_report
from .rpo import measure_rpo, restored_position


@dataclass
class DrillRun:
    """One drill: what it found and its report (as stored in ``report.json``, with the keys of the
    reports under ``reports`` when they could be stored)."""

    outcome: Outcome
    report: Dict[str, Any]


def _new_drill_id(ctx: Context, started: Any) -> str:
    base = started.strftime("%Y%m%dT%H%M%SZ")
    drill_id, n = base, 0
    while any(True for _ in ctx.storage.list(ctx.repo.drill_prefix(drill_id))):
        n += 1
        drill_id = f"{base}-{n}"
    return drill_id


def run_drill(ctx: Context, *, data_dir: Optional[str], port: Optional[int], keep: bool,
              skip_erasures: Optional[Dict[str, str]] = None) -> DrillRun:
    """A drill into ``data_dir`` (default: a new directory under verify.scratch_dir) on ``port``
    (default drill.port); ``keep`` leaves the recovered server running. Failures are in the outcome."""
    settings = ctx.settings
    started = ctx.clock()
    t_start = time.monotonic()
    drill_id = _new_drill_id(ctx, started)
    port = port or settings.drill.port
    data_dir = os.path.abspath(data_dir) if data_dir else os.path.join(ctx.scratch_root(), f"drill-{drill_id}")
    # Before the primary is marked: a data directory this user cannot create (or one a server runs in)
    # is a usage error with one clear line, not a traceback after the drill has begun.
    check_data_dir(data_dir)
    check_skips(ctx, skip_erasures or {})
    wait = min(300.0, max(10.0, 2.0 * settings.wal.archive_timeout_seconds))
    ctx.progress.stage(f"drill {drill_id}: marking the primary, then recovering the latest state into {data_dir} "
                       f"(port {port}, archiving off)")
    primary = mark_primary(ctx, drill_id, wait)
    loss_time = iso(ctx.clock())
    t_loss = time.monotonic()
    outcome = Outcome(backup_id="", kind="drill", tier="", started_at=iso(started))
    if primary.get("error"):
        outcome.notes.append(f"primary: {primary['error']}")
    if primary.get("archive_wait"):
        outcome.notes.append(f"archive: {primary['archive_wait']}")
    phases: Dict[str, float] = {}
    restored: Dict[str, Any] = {}
    result = None
    t_ready = t_checked = None
    try:
        result = recover(ctx, latest_target(), data_dir, port=port, start=True, archiving=False,
                         skip_erasures=skip_erasures)
        t_ready = time.monotonic()
        outcome.backup_id = result.backup_id
        phases.update({k: round(float(v), 3) for k, v in (result.phases or {}).items()})
        pg = scratch_postgres(ctx, socket_host(result), result.port)
        restored = restored_position(pg)
        names = database_names(pg)
        ctx.progress.stage(f"drill {drill_id}: running {len(settings.verify.checks)} check(s) on the restored server")
        run_checks(pg, settings.verify.checks, {n: n for n in names}, outcome, where="the restored server")
        t_checked = time.monotonic()
        phases["checks"] = round(t_checked - t_ready, 3)
    except PgBackupError as exc:
        outcome.error, outcome.error_exit_code = str(exc), exc.exit_code
    finally:
        if not (keep and result is not None):
            remove_scratch_server(data_dir)
    finished = ctx.clock()

    fallback = None
    if outcome.backup_id:
        try:
            fallback = ctx.repo.load_manifest(outcome.backup_id).finished_at
        except PgBackupError:
            pass
    rpo = measure_rpo(primary, restored, loss_time, fallback)
    rpo_target = settings.drill.rpo_target_minutes * 60
    rto_target = settings.drill.rto_target_minutes * 60
    rto_seconds = round(t_checked - t_loss, 3) if t_checked is not None else None
    rto = {"seconds": rto_seconds, "target_seconds": rto_target, "phases": phases,
           "met": rto_seconds is not None and outcome.passed and rto_seconds <= rto_target,
           "server_ready_seconds": round(t_ready - t_loss, 3) if t_ready is not None else None}
    rpo.update(target_seconds=rpo_target, met=rpo.get("seconds") is not None and rpo["seconds"] <= rpo_target)
    if rto_seconds is not None and rto_seconds > rto_target:
        outcome.fail(f"RTO {rto_seconds:.0f} s is above the target of {settings.drill.rto_target_minutes} min")
    if rpo.get("seconds") is None:
        outcome.fail("RPO could not be measured")
    elif not rpo["met"]:
        outcome.fail(f"RPO {rpo['seconds']:.0f} s is above the target of {settings.drill.rpo_target_minutes} min "
                     f"({rpo.get('lost_wal_bytes') or 'unknown'} byte(s) of WAL written before the loss are missing "
                     f"from the restore)")
    report: Dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION, "drill_id": drill_id, "cluster": ctx.cluster,
        "host": socket.gethostname(), "agent_version": __version__, "started_at": iso(started),
        "finished_at": iso(finished), "duration_seconds": round(time.monotonic() - t_start, 3),
        "prepare_seconds": round(t_loss - t_start, 3), "backup_id": outcome.backup_id or None,
        "data_dir": data_dir, "port": port, "kept": bool(keep) and result is not None,
        "targets": {"rto_minutes": settings.drill.rto_target_minutes,
                    "rpo_minutes": settings.drill.rpo_target_minutes},
        "primary": primary, "restored": {**restored, "reached": jsonable(getattr(result, "reached", None))},
        "rto": rto, "rpo": rpo, "checks": [dataclasses.asdict(c) for c in outcome.checks],
        "erasures": getattr(result, "erasures", None),
        "passed": outcome.passed, "failures": outcome.failures, "recovery_error": outcome.error, "notes": outcome.notes,
    }
    try:
        write_report(ctx, report)
    except PgBackupError as exc:
        report["notes"].append(f"the report could not be stored: {exc}")
        ctx.progress.warn(f"cannot store the drill report in the repository: {exc}")
    if outcome.backup_id:
        verdict = {"backup_id": outcome.backup_id, "kind": "drill", "drill_id": drill_id,
                   "passed": outcome.error is None and all(c.status != "failed" for c in outcome.checks),
                   "checks": report["checks"], "started_at": report["started_at"], "finished_at": report["finished_at"]}
        record_verification(ctx.repo, verdict, finished, ctx.progress.warn)
    return DrillRun(outcome, report)
