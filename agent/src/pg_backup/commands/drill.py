"""``drill``: a disaster-recovery drill on a scratch port, with measured RTO and RPO and a report."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..context import Context
from ..drill.report import minutes_text
from ..drill.run import run_drill
from ..verification.outcome import exit_and_error
from . import CommandResult


def drill(ctx: Context, *, data_dir: Optional[str], port: Optional[int], keep: bool) -> CommandResult:
    done = run_drill(ctx, data_dir=data_dir, port=port, keep=keep)
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
