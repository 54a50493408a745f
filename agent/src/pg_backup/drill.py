"""``pg-backup drill``: a disaster-recovery drill with measured RTO and RPO.

1. **Mark the primary** (if it answers): commit a marker transaction (a transactional logical
   message ``pg-backup-drill``, no table needed), create the restore point ``pgb-drill-<id>``, switch
   WAL and wait (bounded) until that segment is in the archive. Then read the primary's WAL position:
   this instant is the *simulated loss*. Preparing is reported separately and is not part of the RTO.
2. **Recover** the newest base backup plus every archived WAL segment (``pitr.recover`` to the latest
   point) into a scratch data directory on the drill port, archiving off, as if the primary were gone.
3. **Check** the restored server: ``verify.checks`` must hold.
4. **Measure**
   - RTO = simulated loss -> restored server accepting connections *and* the checks passed, with
     the phases of recovery (download, decrypt+decompress, extract, WAL replay, startup, checks).
   - RPO: if the restored server replayed WAL up to the primary's position at the loss
     (``pg_last_wal_replay_lsn() >= loss LSN``) nothing was lost: RPO 0. Otherwise the RPO is the
     time from the last commit present in the restore (``pg_last_xact_replay_timestamp()``) to the
     loss, and the WAL bytes missing are reported too. That time is an upper bound of what was
     lost: it counts from the last recovered commit, and the lost WAL may hold no commit at all.
     The loss instant is the agent's clock (the ``PG_BACKUP_TEST_NOW`` test clock applies).
5. **Report** to ``<cluster>/audit/drills/<drill id>/``: ``report.md``, ``report.json`` and
   ``history.png`` (RTO and RPO of every drill in storage against the targets). ``report.json`` is
   written last. The drill exits 4 when a check failed or a target was missed, with the report written.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from typing import Any, Dict, List, Optional, Tuple

from . import __version__
from .context import Context
from .errors import EXIT_INTEGRITY, PgBackupError
from .health import lsn_to_int
from .manifest import iso, parse_iso
from .postgres import archiver_state, archiving_off
from .storage.base import PutOptions
from .verify_restore import (Outcome, jsonable, record_verification, remove_scratch_server, run_checks,
                             scratch_postgres)

REPORT_SCHEMA_VERSION = 1
DRILLS_DIR = "audit/drills/"
MARKER_PREFIX = "pg-backup-drill"
HISTORY_LIMIT = 200
LONG_PAGE_HEADER = 40    # SizeOfXLogLongPHD: the first page of a WAL segment
SHORT_PAGE_HEADER = 24   # SizeOfXLogShortPHD: every other WAL page


# -- the primary -----------------------------------------------------------------------------------

def mark_primary(ctx: Context, drill_id: str, wait_seconds: float) -> Dict[str, Any]:
    """Commit a marker, create a restore point, switch WAL, wait for the segment in the archive,
    then take the loss position. Never raises: an unreachable primary is part of a real disaster."""
    info: Dict[str, Any] = {"reachable": False, "marker_written": False, "marker_archived": False}
    try:
        with ctx.pg.connect() as conn:
            info["reachable"] = True
            if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                info["error"] = "the configured server is a standby: no marker written (run drills against the primary)"
                return info
            off = archiving_off(archiver_state(conn))
            if off:
                info["archive_wait"] = (f"archiving is off ({off}): no marker written, nothing more will reach "
                                        f"the archive")
            else:
                _write_marker(conn, drill_id, info)
            if info.get("segment"):
                info["marker_archived"], why = _wait_archived(ctx, conn, info["segment"], wait_seconds)
                if why:
                    info["archive_wait"] = why
            insert, block, segment_size = conn.execute(
                "SELECT pg_current_wal_insert_lsn()::text, current_setting('wal_block_size')::int,"
                " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')").fetchone()
            info["loss_insert_lsn"] = insert
            info["loss_lsn"] = record_end(insert, block, segment_size)
    except PgBackupError as exc:
        info["error"] = exc.message
    except Exception as exc:  # the connection broke half-way: the drill goes on without the primary
        info["error"] = f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return info


def _write_marker(conn: Any, drill_id: str, info: Dict[str, Any]) -> None:
    """Marker commit, restore point and WAL switch; a failure (no privilege, ...) is noted, not raised."""
    try:
        row = conn.execute("SELECT pg_logical_emit_message(true, %s, %s)::text", (MARKER_PREFIX, drill_id)).fetchone()
        info.update(marker_written=True, marker_lsn=row[0])
        info["restore_point"] = f"pgb-drill-{drill_id}"
        conn.execute("SELECT pg_create_restore_point(%s)", (info["restore_point"],))
        info["segment"] = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    except Exception as exc:  # psycopg.Error: no privilege, wal_level minimal, ...
        info["error"] = f"cannot write the drill marker: {str(exc).strip().splitlines()[0]}"


def record_end(insert_lsn: str, block_size: int, segment_size: int) -> str:
    """The end of the last WAL record from ``pg_current_wal_insert_lsn()``, which points past the page
    header when the insert position is at a page start (after a WAL switch, say); replay positions
    on a restored server never include that header."""
    pos = lsn_to_int(insert_lsn)
    if pos % segment_size == LONG_PAGE_HEADER:
        pos -= LONG_PAGE_HEADER
    elif pos % block_size == SHORT_PAGE_HEADER:
        pos -= SHORT_PAGE_HEADER
    return f"{pos >> 32:X}/{pos & 0xFFFFFFFF:X}"


def _wait_archived(ctx: Context, conn: Any, segment: str, wait_seconds: float) -> Tuple[bool, str]:
    from .walarchive import WalArchive

    archive = WalArchive(ctx.storage, ctx.cluster)
    started = conn.execute("SELECT now()").fetchone()[0]
    deadline = time.monotonic() + wait_seconds
    ctx.progress.stage(f"drill: waiting up to {wait_seconds:.0f} s for WAL segment {segment} in the archive")
    while True:
        if archive.has(segment):
            return True, ""
        state = archiver_state(conn)
        failed_wal, failed_at = state["last_failed_wal"], state["last_failed_time"]
        off = archiving_off(state)
        if off:
            return False, f"archiving is off ({off}): {segment} will not be archived"
        if failed_wal and failed_at and failed_at >= started:
            return False, f"archive_command failed for {failed_wal} at {failed_at}"
        if time.monotonic() >= deadline:
            return False, f"{segment} did not reach the archive within {wait_seconds:.0f} s"
        time.sleep(0.25)


# -- the restored server ---------------------------------------------------------------------------

def restored_position(pg: Any) -> Dict[str, Any]:
    with pg.connect() as conn:
        lsn, commit_time, now = conn.execute(
            "SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp(), now()").fetchone()
    return {"last_replay_lsn": lsn, "last_commit_time": iso(commit_time) if commit_time else None,
            "server_time": iso(now)}


def measure_rpo(primary: Dict[str, Any], restored: Dict[str, Any], loss_time: str,
                fallback_commit_time: Optional[str]) -> Dict[str, Any]:
    """RPO from the loss position/time on the primary and the replay position/last commit of the restore."""
    rpo: Dict[str, Any] = {"loss_time": loss_time, "loss_lsn": primary.get("loss_lsn"),
                           "last_replay_lsn": restored.get("last_replay_lsn"),
                           "last_commit_time": restored.get("last_commit_time") or fallback_commit_time}
    loss_lsn, replay_lsn = primary.get("loss_lsn"), restored.get("last_replay_lsn")
    if loss_lsn and replay_lsn:
        missing = lsn_to_int(loss_lsn) - lsn_to_int(replay_lsn)
        rpo["lost_wal_bytes"] = max(0, missing)
        if missing <= 0:
            rpo.update(seconds=0.0, method="exact: the restore replayed WAL up to the primary's position at the loss")
            return rpo
    else:
        rpo["lost_wal_bytes"] = None
    last = rpo["last_commit_time"]
    if last is None:
        rpo.update(seconds=None, method="unknown: no commit time in the restore and no base backup time")
        return rpo
    rpo["seconds"] = round(max(0.0, (parse_iso(loss_time) - parse_iso(last)).total_seconds()), 3)
    rpo["method"] = ("upper bound: time from the last commit present in the restore to the loss"
                     + ("" if loss_lsn else " (the primary gave no WAL position)"))
    return rpo


# -- reports ---------------------------------------------------------------------------------------

def drill_prefix(ctx: Context, drill_id: str) -> str:
    return f"{ctx.repo.root}{DRILLS_DIR}{drill_id}/"


def load_history(ctx: Context) -> List[Dict[str, Any]]:
    """Every drill report in storage (``audit/drills/*/report.json``), oldest first."""
    keys = [o.key for o in ctx.storage.list(f"{ctx.repo.root}{DRILLS_DIR}") if o.key.endswith("/report.json")]
    reports = []
    for key in sorted(keys)[-HISTORY_LIMIT:]:
        try:
            doc = json.loads(ctx.storage.get_bytes(key))
        except (PgBackupError, ValueError) as exc:
            ctx.progress.warn(f"skipping unreadable drill report {key}: {exc}")
            continue
        if isinstance(doc, dict) and doc.get("drill_id"):
            reports.append(doc)
    reports.sort(key=lambda r: (r.get("started_at") or "", r["drill_id"]))
    return reports


def _minutes(seconds: Optional[float]) -> str:
    if seconds is None:
        return "unknown"
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def render_markdown(report: Dict[str, Any], history: List[Dict[str, Any]]) -> str:
    rto, rpo = report["rto"], report["rpo"]
    verdict = "PASSED" if report["passed"] else "FAILED"
    out = [f"# Disaster-recovery drill {report['drill_id']}: {verdict}", "",
           "| | |", "| --- | --- |",
           f"| cluster | `{report['cluster']}` |",
           f"| started (UTC) | {report['started_at']} |",
           f"| host | {report['host']} (agent {report['agent_version']}) |",
           f"| base backup | `{report.get('backup_id') or 'none'}` |",
           f"| restored into | `{report.get('data_dir')}` on port {report.get('port')} "
           f"({'kept running' if report.get('kept') else 'removed after the drill'}) |",
           f"| RTO | **{_minutes(rto.get('seconds'))}**, target {report['targets']['rto_minutes']} min: "
           f"{'met' if rto.get('met') else 'MISSED'} |",
           f"| RPO | **{_minutes(rpo.get('seconds'))}**, target {report['targets']['rpo_minutes']} min: "
           f"{'met' if rpo.get('met') else 'MISSED'} |", ""]
    out += ["## Recovery time", "", "From the simulated loss to a restored server that accepts connections and "
            "passed its checks (preparing the primary is not counted).", "", "| phase | seconds |", "| --- | ---: |"]
    for phase, seconds in rto.get("phases", {}).items():
        out.append(f"| {phase.replace('_', ' ')} | {seconds:.1f} |")
    out += [f"| **total** | **{rto['seconds']:.1f}** |" if rto.get("seconds") is not None else "| total | unknown |",
            "", f"Preparing the primary (marker, WAL switch, wait for the archive): "
                f"{report.get('prepare_seconds', 0):.1f} s.", ""]
    out += ["## Recovery point", "", f"Method: {rpo.get('method')}.", "",
            f"- simulated loss at {rpo.get('loss_time')}, primary WAL position {rpo.get('loss_lsn') or 'unknown'}",
            f"- restore replayed up to {rpo.get('last_replay_lsn') or 'unknown'}; last commit present: "
            f"{rpo.get('last_commit_time') or 'unknown'}",
            f"- WAL missing from the restore: {rpo.get('lost_wal_bytes') if rpo.get('lost_wal_bytes') is not None else 'unknown'} byte(s)"]
    primary = report.get("primary", {})
    out.append(f"- marker: {'committed' if primary.get('marker_written') else 'not written'}"
               + (f" at {primary.get('marker_lsn')}, restore point `{primary.get('restore_point')}`"
                  if primary.get("marker_written") else "")
               + (f"; segment {primary.get('segment')} {'archived' if primary.get('marker_archived') else 'NOT archived'}"
                  if primary.get("segment") else ""))
    if primary.get("archive_wait"):
        out.append(f"- archive: {primary['archive_wait']}")
    if primary.get("error"):
        out.append(f"- primary: {primary['error']}")
    out += ["", "## Checks", ""]
    if report["checks"]:
        out += ["| check | database | value | expectation | result |", "| --- | --- | --- | --- | --- |"]
        for c in report["checks"]:
            out.append(f"| {_md(c['name'])} | {_md(c['database'])} | {_md(repr(c['value']))} | {_md(c['expect'])} | "
                       f"{c['status'].upper()}{' — ' + _md(c['detail']) if c['detail'] else ''} |")
    else:
        out.append("No `verify.checks` configured: only the restore itself was proven.")
    if report["failures"] or report.get("recovery_error"):
        out += ["", "## Failures", ""] + [f"- {_md(f)}" for f in report["failures"]]
        if report.get("recovery_error"):
            out.append(f"- recovery failed: {_md(report['recovery_error'])}")
    if report["notes"]:
        out += ["", "## Notes", ""] + [f"- {_md(n)}" for n in report["notes"]]
    out += ["", "## History", "", "![RTO and RPO of every drill](history.png)" if report.get("chart") else
            f"(no chart: {report.get('chart_error')})", "",
            "| drill | RTO (min) | RPO (min) | result |", "| --- | ---: | ---: | --- |"]
    for h in history[-20:]:
        r, p = h.get("rto", {}), h.get("rpo", {})
        out.append(f"| {h['drill_id']} | {_num(r.get('seconds'))} | {_num(p.get('seconds'))} | "
                   f"{'passed' if h.get('passed') else 'FAILED'} |")
    return "\n".join(out) + "\n"


def _num(seconds: Optional[float]) -> str:
    return "?" if seconds is None else f"{seconds / 60:.1f}"


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_report(ctx: Context, report: Dict[str, Any]) -> Dict[str, str]:
    """history.png, report.md, then report.json (last: a drill with a JSON report is complete)."""
    from .charts import ChartUnavailable, drill_history_png

    prefix = drill_prefix(ctx, report["drill_id"])
    history = [h for h in load_history(ctx) if h["drill_id"] != report["drill_id"]] + [report]
    keys: Dict[str, str] = {}
    try:
        png = drill_history_png(history, report["targets"]["rto_minutes"], report["targets"]["rpo_minutes"],
                                title=f"DR drills of cluster {report['cluster']}: RTO and RPO against the targets")
        ctx.storage.put_bytes(prefix + "history.png", png, PutOptions(content_type="image/png"), overwrite=False)
        keys["chart"] = prefix + "history.png"
        report["chart"] = True
    except ChartUnavailable as exc:
        report["chart"], report["chart_error"] = False, str(exc)
        report["notes"].append(f"no history chart: {exc}")
    report["reports"] = {"markdown": prefix + "report.md", "json": prefix + "report.json", **keys}
    ctx.storage.put_bytes(prefix + "report.md", render_markdown(report, history).encode(),
                          PutOptions(content_type="text/markdown; charset=utf-8"), overwrite=False)
    ctx.storage.put_bytes(prefix + "report.json",
                          (json.dumps(report, indent=1, sort_keys=True, default=str) + "\n").encode(),
                          PutOptions(content_type="application/json"), overwrite=False)
    return report["reports"]


def _new_drill_id(ctx: Context, started: Any) -> str:
    base = started.strftime("%Y%m%dT%H%M%SZ")
    drill_id, n = base, 0
    while any(True for _ in ctx.storage.list(drill_prefix(ctx, drill_id))):
        n += 1
        drill_id = f"{base}-{n}"
    return drill_id


# -- the command -----------------------------------------------------------------------------------

def run_drill(ctx: Context, args: Any) -> Dict[str, Any]:
    from . import pitr

    settings = ctx.settings
    started = ctx.clock()
    t_start = time.monotonic()
    drill_id = _new_drill_id(ctx, started)
    port = args.port or settings.drill.port
    data_dir = os.path.abspath(args.data_dir) if args.data_dir else os.path.join(ctx.scratch_root(),
                                                                                f"drill-{drill_id}")
    # Before the primary is marked: a data directory this user cannot create (or one a server runs in)
    # is a usage error with one clear line, not a traceback after the drill has begun.
    pitr.check_data_dir(data_dir)
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
        result = pitr.recover(ctx, pitr.latest_target(), data_dir, port=port, start=True, archiving=False)
        t_ready = time.monotonic()
        outcome.backup_id = result.backup_id
        phases.update({k: round(float(v), 3) for k, v in (result.phases or {}).items()})
        pg = scratch_postgres(ctx, pitr.socket_host(result), result.port)
        restored = restored_position(pg)
        with pg.connect() as conn:
            names = [r[0] for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate")]
        ctx.progress.stage(f"drill {drill_id}: running {len(settings.verify.checks)} check(s) on the restored server")
        run_checks(pg, settings.verify.checks, {n: n for n in names}, outcome, where="the restored server")
        t_checked = time.monotonic()
        phases["checks"] = round(t_checked - t_ready, 3)
    except PgBackupError as exc:
        outcome.error, outcome.error_exit_code = str(exc), exc.exit_code
    finally:
        if not (args.keep and result is not None):
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
        "data_dir": data_dir, "port": port, "kept": bool(args.keep) and result is not None,
        "targets": {"rto_minutes": settings.drill.rto_target_minutes,
                    "rpo_minutes": settings.drill.rpo_target_minutes},
        "primary": primary, "restored": {**restored, "reached": jsonable(getattr(result, "reached", None))},
        "rto": rto, "rpo": rpo, "checks": [dataclasses.asdict(c) for c in outcome.checks],
        "passed": outcome.passed, "failures": outcome.failures, "recovery_error": outcome.error, "notes": outcome.notes,
    }
    try:
        write_report(ctx, report)
    except PgBackupError as exc:
        report["notes"].append(f"the report could not be stored: {exc}")
        ctx.progress.warn(f"cannot store the drill report in the repository: {exc}")
    if outcome.backup_id:
        record_verification(ctx, {"backup_id": outcome.backup_id, "kind": "drill", "drill_id": drill_id,
                                  "passed": outcome.error is None and all(c.status != "failed" for c in outcome.checks),
                                  "checks": report["checks"], "started_at": report["started_at"],
                                  "finished_at": report["finished_at"]}, finished)
    res: Dict[str, Any] = {k: v for k, v in report.items()}
    res["_text"] = render_text(report)
    if outcome.error is not None:
        res["_exit"] = outcome.error_exit_code or EXIT_INTEGRITY
        res["_error"] = f"drill {drill_id} could not recover: {outcome.error} (report written)"
    elif not outcome.passed:
        res["_exit"] = EXIT_INTEGRITY
        res["_error"] = f"drill {drill_id} FAILED: {'; '.join(outcome.failures)}"
    return res


def render_text(report: Dict[str, Any]) -> List[str]:
    rto, rpo = report["rto"], report["rpo"]
    lines = [f"drill {report['drill_id']} of cluster {report['cluster']}: {'PASSED' if report['passed'] else 'FAILED'}",
             f"  base backup {report.get('backup_id') or 'none'} -> {report['data_dir']} (port {report['port']}"
             f"{', kept running' if report['kept'] else ', removed'})",
             f"  RTO {_minutes(rto.get('seconds'))} (target {report['targets']['rto_minutes']} min): "
             f"{'met' if rto.get('met') else 'MISSED'}"]
    if rto.get("phases"):
        lines.append("    " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in rto["phases"].items()))
    lines.append(f"  RPO {_minutes(rpo.get('seconds'))} (target {report['targets']['rpo_minutes']} min): "
                 f"{'met' if rpo.get('met') else 'MISSED'} — {rpo.get('method')}")
    for c in report["checks"]:
        lines.append(f"  {c['status'].upper():<7} check {c['name']!r} = {c['value']!r} expect {c['expect']}"
                     f"{': ' + c['detail'] if c['detail'] else ''}")
    lines += [f"  failure: {f}" for f in report["failures"]]
    if report.get("recovery_error"):
        lines.append(f"  recovery failed: {report['recovery_error']}")
    lines += [f"  note: {n}" for n in report["notes"]]
    for what, key in (report.get("reports") or {}).items():
        lines.append(f"  report {what}: {key}")
    return lines
