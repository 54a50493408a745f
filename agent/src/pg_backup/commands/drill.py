"""``drill``: a disaster-recovery drill on a scratch port, with measured RTO and RPO and a report."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from ..context import Context
from ..drill.report import minutes_text
from ..drill.run import run_drill
from ..errors import NotFoundError, UsageError
from ..verification.outcome import exit_and_error
from ..verification.records import drill_history
from . import CommandResult


def drill(ctx: Context, *, data_dir: Optional[str], port: Optional[int], keep: bool,
          skip_erasures: Optional[Dict[str, str]] = None) -> CommandResult:
    done = run_drill(ctx, data_dir=data_dir, port=port, keep=keep, skip_erasures=skip_erasures)
    report = done.report
    exit_code, error = exit_and_error(done.outcome, unfinished=f"drill {report['drill_id']} could not recover",
                                      unfinished_note=" (report written)", failed=f"drill {report['drill_id']} FAILED",
                                      every_failure=True)
    return CommandResult(fields=dict(report), text=render_text(report), exit_code=exit_code, error=error)


def render_text(report: Dict[str, Any]) -> List[str]:
    rto, rpo = report["rto"], report["rpo"]
    lines = [f"drill {report['drill_id']} of cluster {report['cluster']}: {'PASSED' if report['passed'] else 'FAILED'}",
             f"  base backup {report.get('backup_id') or 'none'} -> {report['data_dir']} (port {report['port']}"
             f"{', kept running' if report['kept'] else ', removed'})",
             f"  RTO {minutes_text(rto.get('seconds'))} (target {report['targets']['rto_minutes']} min): "
             f"{'met' if rto.get('met') else 'MISSED'}"]
    if rto.get("phases"):
        lines.append("    " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in rto["phases"].items()))
    lines.append(f"  RPO {minutes_text(rpo.get('seconds'))} (target {report['targets']['rpo_minutes']} min): "
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


def drill_chart(ctx: Context, *, output: str) -> CommandResult:
    """The history chart of every drill in the repository, written to ``output`` (a PNG).

    Drawn here from the drills' report.json when the charts extra (matplotlib) is installed; otherwise
    the chart the newest drill stored with its reports is fetched. The result names the newest drill,
    its RTO and RPO against the targets, and where the chart came from."""
    from ..charts import ChartUnavailable, drill_history_png

    history = drill_history(ctx.repo, ctx.progress.warn)
    if not history:
        raise NotFoundError(f"no drill report under {ctx.repo.drills_prefix}: run 'pg-backup drill' first")
    newest = history[-1]
    targets = newest.get("targets") or {}
    try:
        png = drill_history_png(history, targets.get("rto_minutes", 0), targets.get("rpo_minutes", 0),
                                title=f"DR drills of cluster {ctx.cluster}: RTO and RPO against the targets")
        source, why = "drawn", ""
    except ChartUnavailable as exc:
        stored = [h for h in history if (h.get("reports") or {}).get("chart")]
        if not stored:
            raise UsageError(f"cannot draw the drill chart here: {exc}; and no drill stored one") from None
        source, why = stored[-1]["reports"]["chart"], str(exc)
        png = ctx.storage.get_bytes(source)
    directory = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(directory):
        raise UsageError(f"--output {output}: directory {directory} does not exist")
    with open(output, "wb") as f:
        f.write(png)
    fields = {"output": os.path.abspath(output), "bytes": len(png), "drills": len(history), "source": source,
              "newest_drill": {k: newest.get(k) for k in ("drill_id", "started_at", "passed", "rto", "rpo", "targets")}}
    rto, rpo = newest.get("rto") or {}, newest.get("rpo") or {}
    text = [f"drill chart of cluster {ctx.cluster}: {len(history)} drill(s) -> {fields['output']} ({len(png)} bytes)",
            f"  newest drill {newest.get('drill_id')} at {newest.get('started_at')}: "
            f"{'PASSED' if newest.get('passed') else 'FAILED'}; RTO {minutes_text(rto.get('seconds'))} (target "
            f"{targets.get('rto_minutes')} min), RPO {minutes_text(rpo.get('seconds'))} (target "
            f"{targets.get('rpo_minutes')} min)",
            "  drawn here from every drill's report.json" if source == "drawn" else
            f"  fetched {source}, the chart stored by the newest drill that drew one (drawing here: {why})"]
    return CommandResult(fields=fields, text=text)
