"""The compliance report as Markdown (and the plain lines the CLI prints about it).

The tables are built once (:func:`sections`) and drawn by both this module and :mod:`.pdf`, so the
two documents always show the same rows."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

Table = Tuple[str, List[str], List[List[str]], str]      # title, header, rows, text under the table


def day(value: Optional[str]) -> str:
    return value[:10] if value else "—"


def moment(value: Optional[str], zone: str = " UTC") -> str:
    return value.replace("T", " ")[:16] + zone if value else "—"


def clock(value: Optional[str]) -> str:
    """A time in a table whose header says (UTC)."""
    return moment(value, "")


def size(n: Optional[int]) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def minutes(seconds: Optional[float]) -> str:
    return "unknown" if seconds is None else f"{seconds / 60:.1f} min"


def _met(flag: Optional[bool]) -> str:
    return "met" if flag else ("MISSED" if flag is not None else "—")


def summary_rows(doc: Dict[str, Any]) -> List[List[str]]:
    loc, lock, ver, drill, er = doc["locality"], doc["object_lock"], doc["verification"], doc["drill"], doc["erasures"]
    r = doc["retention"]
    period = doc["period"]
    rows = [["cluster", doc["cluster"]],
            ["reporting period", f"{period['label']} ({moment(period['since'])} .. {moment(period['until'])})"],
            ["generated", f"{moment(doc['generated_at'])} on {doc['generated_by']['host']} "
                          f"(pg-backup {doc['generated_by']['agent_version']})"],
            ["repository", doc["repository"]],
            ["retention", f"daily {r['daily_days']} days, weekly {r['weekly_weeks']} weeks, monthly "
                          f"{r['monthly_months']} months, WAL window {r['wal_hours']} h"],
            ["backups stored", ", ".join(f"{t} {v['count']} ({size(v['size_bytes'])})" for t, v in doc["tiers"].items())],
            ["data locality", _locality(loc)],
            ["Object Lock", "none" if not lock else f"unknown: {lock['error']}" if lock.get("error") else
             f"{lock.get('mode') or 'no default mode'}, default "
                            f"{lock.get('days') or ''}{' days' if lock.get('days') else ''}"
                            f"{lock.get('years') or ''}{' years' if lock.get('years') else ''}"],
            ["last restore verification", "none recorded" if not ver["last"] else
             f"{moment(ver['last']['at'])}: {'passed' if ver['last']['passed'] else 'FAILED'} "
             f"({ver['last']['backup_id']}, restore {minutes(ver['last'].get('duration_seconds'))} against the RTO "
             f"target {ver['rto_target_minutes']} min: {_met(ver['last'].get('within_rto_target'))})"],
            ["last DR drill", "none recorded" if not drill["last"] else
             f"{moment(drill['last']['started_at'])}: {'passed' if drill['last']['passed'] else 'FAILED'}; RTO "
             f"{minutes(drill['last']['rto_seconds'])} (target {drill['targets']['rto_minutes']} min: "
             f"{_met(drill['last']['rto_met'])}), RPO {minutes(drill['last']['rpo_seconds'])} (target "
             f"{drill['targets']['rpo_minutes']} min: {_met(drill['last']['rpo_met'])})"],
            ["erasure register", "no records" if not er["count"] else
             f"{er['count']} record(s); erasure complete everywhere "
             + ("by " + day(er["complete_everywhere_at"]) if er["complete_everywhere_at"] else "not scheduled")],
            ["audit trail (period)", ", ".join(f"{k} {v}" for k, v in sorted(doc["audit"]["by_operation"].items()))
             or "no operations recorded"]]
    return rows


def _locality(loc: Dict[str, Any]) -> str:
    if loc["type"] != "s3":
        return f"local repository on {loc['host']}"
    verdict = {True: "as configured", False: "DIFFERENT from the configuration", None: "not compared"}[loc["matches"]]
    return (f"bucket {loc['bucket']} at {loc['endpoint']}: configured region {loc['configured_region'] or 'none'}, "
            f"actual region {loc['actual_region'] or 'unknown'} ({verdict})")


def sections(doc: Dict[str, Any]) -> List[Table]:
    tables: List[Table] = []
    for tier, data in doc["tiers"].items():
        rows = [[b["backup_id"], b["kind"], clock(b["started_at"]), _finish(b), size(b["size_bytes"]),
                 b["encryption"]["key_fingerprint"][-16:], f"{b['checksum']['state']} {day(b['checksum']['at'])}".strip()
                 if b["checksum"]["at"] else b["checksum"]["state"], b["storage_class"] or "—",
                 f"{b['object_lock']['mode']} until {day(b['object_lock']['retain_until'])}" if b["object_lock"] else "none",
                 day(b["expires_at"]) if b["expires_at"] else "not scheduled"] for b in data["backups"]]
        tables.append((f"{tier.capitalize()} backups ({data['count']}, {size(data['size_bytes'])})",
                       ["backup", "kind", "started (UTC)", "finished", "size", "key (last 16)", "checksum (last verify)",
                        "storage class", "Object Lock", "expires"], rows,
                       "Expiry: the date the current retention deletes it (prune's next run after it). "
                       + doc["retention"]["assumption"].capitalize() + "." if rows else ""))
    rec = doc["recoverable"]
    tables.append(("Oldest recoverable point per database", ["database", "oldest point (UTC)", "from", "backup"],
                   [[r["database"], clock(r["oldest_point"]), "point-in-time recovery" if r["kind"] == "pitr"
                     else "logical backup", r["backup_id"]] for r in rec["databases"]],
                   "Point-in-time window: " + _window(rec["pitr_window"])))
    drill = doc["drill"]
    tables.append(("DR drills", ["drill", "started (UTC)", "result", "RTO", "RTO target", "RPO", "RPO target"],
                   [[h["drill_id"], clock(h["started_at"]), "passed" if h["passed"] else "FAILED",
                     f"{minutes(h['rto_seconds'])} ({_met(h['rto_met'])})", f"{h['rto_target_minutes']} min",
                     f"{minutes(h['rpo_seconds'])} ({_met(h['rpo_met'])})", f"{h['rpo_target_minutes']} min"]
                    for h in drill["history"][-12:]],
                   f"{drill['count']} drill(s) recorded, {drill['in_period']} in the period."))
    er = doc["erasures"]
    tables.append(("Erasure register", ["erasure", "recorded (UTC)", "backups still holding the data",
                                        "complete everywhere"],
                   [[r["erasure_id"], clock(r["recorded_at"]), ", ".join(r["backups_holding_data"]) or "none",
                     ("done " if r["complete"] else "") + day(r["complete_at"]) if r["complete_at"] else "not scheduled"]
                    for r in er["records"]],
                   "An erasure is complete everywhere when the last backup (and WAL) taken before it has expired and "
                   "its Object Lock has ended; until then every restore re-applies it (docs/erasure.md)."))
    tables.append((f"Audit trail of the period ({doc['audit']['count']} operation(s))",
                   ["time (UTC)", "operation", "who", "result", "backup / erasure"],
                   [[clock(a["started_at"]), a["operation"], a["who"], f"{a['result']} (exit {a['exit_code']})",
                     a["backup_id"] or a["erasure_id"] or a["restored_into"] or ""] for a in doc["audit"]["records"]],
                   ""))
    return tables


def _window(window: Optional[Dict[str, Any]]) -> str:
    return f"{moment(window['start_time'])} .. {moment(window['end_time'])}" if window else "none"


def _finish(b: Dict[str, Any]) -> str:
    """The finish time; only the hour when it is the start's day."""
    same_day = (b["finished_at"] or "")[:10] == (b["started_at"] or "")[:10]
    return clock(b["finished_at"])[11:] if same_day else clock(b["finished_at"])


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Dict[str, Any]) -> str:
    out = [f"# Backup compliance report: cluster `{doc['cluster']}`", "",
           f"Period {doc['period']['label']}, generated {moment(doc['generated_at'])}.", "",
           "| | |", "| --- | --- |"]
    out += [f"| {k} | {_cell(v)} |" for k, v in summary_rows(doc)]
    for title, header, rows, under in sections(doc):
        out += ["", f"## {title}", ""]
        if rows:
            out += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
        else:
            out.append("None.")
        if under:
            out += ["", under]
    if doc["notes"]:
        out += ["", "## Notes", ""] + [f"- {_cell(n)}" for n in doc["notes"]]
    return "\n".join(out) + "\n"
