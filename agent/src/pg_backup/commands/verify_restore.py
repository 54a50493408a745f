"""``verify --restore``: restore one backup into a scratch database or data directory, compare row
counts, run the configured checks, clean up. (The CLI rejects the options that do not apply.)"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..context import Context
from ..erasure.replay import summary_line
from ..verification.outcome import exit_and_error
from ..verification.restore_check import verify_restore as run_verification
from . import CommandResult


def verify_restore(ctx: Context, *, backup_id: Optional[str], tier: Optional[str], random_pick: bool,
                   kind: Optional[str], skip_erasures: Optional[Dict[str, str]] = None) -> CommandResult:
    done = run_verification(ctx, backup_id, tier=tier, random_pick=random_pick, kind=kind,
                            skip_erasures=skip_erasures)
    doc = done.document
    exit_code, error = exit_and_error(done.outcome,
                                      unfinished=f"restore verification of {doc['backup_id']} could not finish",
                                      failed=f"restore verification of {doc['backup_id']} FAILED")
    return CommandResult(fields=dict(doc), text=render_text(doc), exit_code=exit_code, error=error)


def render_text(doc: Dict[str, Any]) -> List[str]:
    verdict = "PASSED" if doc["passed"] else "FAILED"
    lines = [f"restore verification of {doc['backup_id']} ({doc['kind']}, {doc['tier']}): {verdict} "
             f"in {doc['duration_seconds']:.1f} s"]
    for db in doc["databases"]:
        if "name" in db:
            rc = db.get("row_counts") or {}
            counts = (f"{rc['tables']} table(s), {len(rc['mismatches'])} row-count mismatch(es)" if rc.get("recorded")
                      else "row counts not recorded at backup time")
            lines.append(f"  database {db['name']!r} -> {db['scratch_database']!r}: "
                         f"{'restored' if db.get('restored') else 'NOT restored'}; {counts}")
        else:
            lines.append(f"  server restored into {db['data_dir']} (port {db['port']})")
        if db.get("erasures") is not None:
            lines.append(f"    {summary_line(db['erasures'])}")
    for c in doc["checks"]:
        shown = "" if c["value"] is None and c["status"] == "skipped" else f" = {c['value']!r}"
        lines.append(f"  {c['status'].upper():<7} check {c['name']!r} ({c['database']}){shown} expect "
                     f"{c['expect']}{': ' + c['detail'] if c['detail'] else ''}")
    if not doc["checks"]:
        lines.append("  no verify.checks configured")
    lines += [f"  failure: {f}" for f in doc["failures"]]
    if doc["restore_error"]:
        lines.append(f"  error: {doc['restore_error']}")
    lines += [f"  note: {n}" for n in doc["notes"]]
    lines += [f"  kept for inspection: {k}" for k in doc["kept"]]
    if doc.get("record"):
        lines.append(f"  recorded as {doc['record']}")
    return lines
