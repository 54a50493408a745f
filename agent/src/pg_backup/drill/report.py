"""Step 5 of a drill: its reports in the repository (``history.png``, ``report.md``, then
``report.json``, which marks a drill as complete), with the history of every drill before it."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from ..context import Context
from ..erasure.replay import summary_line
from ..storage.base import PutOptions
from ..verification.records import drill_history

REPORT_SCHEMA_VERSION = 1


def minutes_text(seconds: Optional[float]) -> str:
    """A duration as ``4.2 min (252 s)``, or ``unknown``."""
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
           f"| RTO | **{minutes_text(rto.get('seconds'))}**, target {report['targets']['rto_minutes']} min: "
           f"{'met' if rto.get('met') else 'MISSED'} |",
           f"| RPO | **{minutes_text(rpo.get('seconds'))}**, target {report['targets']['rpo_minutes']} min: "
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
    if report.get("erasures") is not None:
        out += ["", _md(summary_line(report["erasures"])) + " before the checks (docs/erasure.md)."]
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
    from ..charts import ChartUnavailable, drill_history_png

    prefix = ctx.repo.drill_prefix(report["drill_id"])
    history = [h for h in drill_history(ctx.repo, ctx.progress.warn) if h["drill_id"] != report["drill_id"]] + [report]
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
    data = (json.dumps(report, indent=1, sort_keys=True, default=str) + "\n").encode()
    ctx.repo.put_signed(prefix + "report.json", data, PutOptions(content_type="application/json"),
                        operational=True)  # docs/signing.md
    return report["reports"]
