"""Generate the Grafana dashboard of pg-backup (roles/monitoring/files/pg_backup_dashboard.json).

Every metric the dashboard queries is named through :func:`metric`, which accepts only names in the
agent's own table (pg_backup.health.render.METRICS): a renamed or removed metric fails here, and
tests/roles/test_alert_rules.py fails when the checked-in JSON differs from this script's output.

    .venv/bin/python scripts/generate-dashboard.py          # rewrite the JSON
    .venv/bin/python scripts/generate-dashboard.py --check  # exit 1 if the JSON is out of date
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "agent" / "src"))
from pg_backup.health.render import METRICS  # noqa: E402  (the agent's metric table)

OUTPUT = ROOT / "roles" / "monitoring" / "files" / "pg_backup_dashboard.json"
UID = "pg-backup-overview"
SEL = 'instance=~"$instance",cluster=~"$cluster"'
ON_INSTANCE = 'instance=~"$instance"'


def metric(name: str, selector: str = SEL) -> str:
    if name not in METRICS:
        raise SystemExit(f"generate-dashboard: {name} is not a metric the agent emits (pg_backup.health.render.METRICS)")
    return f"{name}{{{selector}}}"


def target(expr: str, legend: str, ref: str, instant: bool = False) -> Dict[str, Any]:
    t = {"datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr, "legendFormat": legend,
         "refId": ref}
    if instant:
        t.update({"instant": True, "range": False, "format": "table"})
    return t


def dashed(name: str) -> Dict[str, Any]:
    return {"matcher": {"id": "byRegexp", "options": name},
            "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                           {"id": "color", "value": {"mode": "fixed", "fixedColor": "orange"}}]}


def timeseries(title: str, description: str, targets: List[Dict[str, Any]], unit: str, grid: Dict[str, int],
               overrides: Optional[List[Dict[str, Any]]] = None, fill: int = 0) -> Dict[str, Any]:
    return {"type": "timeseries", "title": title, "description": description, "gridPos": grid,
            "datasource": {"type": "prometheus", "uid": "${datasource}"}, "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit, "min": 0,
                                         "custom": {"lineWidth": 2, "fillOpacity": fill, "showPoints": "never",
                                                    "spanNulls": True}},
                            "overrides": overrides or []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


STATUS_MAPPING = [{"type": "value", "options": {
    "0": {"text": "OK", "color": "green"}, "1": {"text": "WARNING", "color": "orange"},
    "2": {"text": "CRITICAL", "color": "red"}, "3": {"text": "UNKNOWN", "color": "purple"}}}]


def stat(title: str, description: str, targets: List[Dict[str, Any]], grid: Dict[str, int], unit: str = "none",
         mappings: Optional[List[Dict[str, Any]]] = None,
         steps: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    return {"type": "stat", "title": title, "description": description, "gridPos": grid,
            "datasource": {"type": "prometheus", "uid": "${datasource}"}, "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit, "mappings": mappings or [],
                                         "thresholds": {"mode": "absolute", "steps": steps or [
                                             {"color": "green", "value": None}]}},
                            "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "none", "textMode": "value_and_name"}}


def variable(name: str, label: str, query: str, multi: bool) -> Dict[str, Any]:
    return {"type": "query", "name": name, "label": label,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": f"{name}-var"}, "definition": query, "refresh": 2, "sort": 1,
            "multi": multi, "includeAll": multi, **({"allValue": ".*"} if multi else {}),
            "current": {}, "options": []}


def dashboard() -> Dict[str, Any]:
    age = f"time() - {metric('pg_backup_last_backup_timestamp_seconds')}"
    one = 'instance=~"$instance",cluster="$cluster",kind="$kind",tier="$tier"'
    # The size panel repeats per cluster (one band per panel): the band's two series have fixed names.
    size_panel = timeseries("$cluster: stored size of the newest $kind $tier backup, with the expected band",
                            "Stored (compressed, encrypted) size of the newest backup of the selected kind and tier; the "
                            "band is the median of the previous backups ± health.size_change_percent. Outside it, "
                            "PgBackupSizeAnomaly fires.",
                            [target(metric("pg_backup_last_backup_stored_bytes", one), "stored", "A"),
                             target(metric("pg_backup_size_band_upper_bytes", one), "expected max", "B"),
                             target(metric("pg_backup_size_band_lower_bytes", one), "expected min", "C")],
                            "bytes", {"x": 12, "y": 5, "w": 12, "h": 9},
                            [{"matcher": {"id": "byRegexp", "options": "expected (max|min)"},
                              "properties": [{"id": "custom.lineWidth", "value": 0},
                                             {"id": "custom.fillOpacity", "value": 15},
                                             {"id": "color", "value": {"mode": "fixed", "fixedColor": "blue"}}]},
                             {"matcher": {"id": "byRegexp", "options": "expected min"},
                              "properties": [{"id": "custom.fillOpacity", "value": 0}]},
                             {"matcher": {"id": "byFrameRefID", "options": "B"},
                              "properties": [{"id": "custom.fillBelowTo", "value": "expected min"}]}])
    size_panel.update(repeat="cluster", repeatDirection="v")
    panels = [
        stat("Health", "pg-backup health per cluster (the worst check); 'pg-backup health' on the host says why.",
             [target(metric("pg_backup_health_status"), "{{cluster}} on {{instance}}", "A")],
             {"x": 0, "y": 0, "w": 8, "h": 5}, mappings=STATUS_MAPPING),
        {"type": "table", "title": "Checks that are not OK", "gridPos": {"x": 8, "y": 0, "w": 16, "h": 5},
         "description": "Every health check whose status is not ok (pg_backup_check_status).",
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "targets": [target(f"{metric('pg_backup_check_status')} > 0", "", "A", instant=True)],
         "fieldConfig": {"defaults": {"mappings": STATUS_MAPPING, "custom": {"cellOptions": {"type": "color-background"}}},
                         "overrides": []},
         "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True, "job": True,
                                                                              "__name__": True}}}],
         "options": {"showHeader": True}},
        timeseries("Backup age per tier",
                   "Age of the newest backup of each kind and tier; dashed: its limit (health.max_age_hours). "
                   "PgBackupTooOld fires beyond the limit (critical beyond twice).",
                   [target(age, "{{cluster}} {{kind}} {{tier}}", "A"),
                    target(metric("pg_backup_backup_max_age_seconds"), "limit {{cluster}} {{kind}} {{tier}}", "B")],
                   "s", {"x": 0, "y": 5, "w": 12, "h": 9}, [dashed("limit .*")]),
        size_panel,
        timeseries("WAL archiving lag",
                   "Age of the newest WAL segment in the repository and of PostgreSQL's last successful archive "
                   "(pg_stat_archiver). An idle server's lag grows without harm; the agent's wal_newest_age check "
                   "(PgBackupWalArchiveBehind) knows the difference.",
                   [target(f"time() - {metric('pg_backup_wal_newest_archived_timestamp_seconds')}",
                           "repository {{cluster}}", "A"),
                    target(f"time() - {metric('pg_backup_archiver_last_archived_timestamp_seconds')}",
                           "pg_stat_archiver {{cluster}}", "B")],
                   "s", {"x": 0, "y": 14, "w": 12, "h": 8}),
        timeseries("WAL archive failures and gaps",
                   "Failed archive attempts per hour (pg_stat_archiver.failed_count), gaps and conflicting pushes "
                   "in the WAL archive.",
                   [target(f"increase({metric('pg_backup_archiver_failed_total')}[1h])", "failures/h {{cluster}}", "A"),
                    target(metric("pg_backup_wal_gaps"), "gaps {{cluster}}", "B"),
                    target(metric("pg_backup_wal_conflicts"), "conflicts {{cluster}}", "C")],
                   "short", {"x": 12, "y": 14, "w": 12, "h": 8}),
        timeseries("Last drill: RTO and RPO against the targets",
                   "RTO and RPO measured by the newest disaster-recovery drill; dashed: drill.rto_target_minutes "
                   "and drill.rpo_target_minutes. The drill's report.md in <cluster>/audit/drills/ has the phases.",
                   [target(metric("pg_backup_last_drill_rto_seconds"), "RTO {{cluster}}", "A"),
                    target(metric("pg_backup_drill_rto_target_seconds"), "RTO target {{cluster}}", "B"),
                    target(metric("pg_backup_last_drill_rpo_seconds"), "RPO {{cluster}}", "C"),
                    target(metric("pg_backup_drill_rpo_target_seconds"), "RPO target {{cluster}}", "D")],
                   "s", {"x": 0, "y": 22, "w": 12, "h": 8}, [dashed(".* target .*")]),
        stat("Last drill and restore verification",
             "Time since the newest drill and the last successful restore verification; the drill's verdict.",
             [target(f"time() - {metric('pg_backup_last_drill_timestamp_seconds')}", "since drill {{cluster}}", "A"),
              target(f"time() - {metric('pg_backup_last_restore_verification_timestamp_seconds')}",
                     "since verification {{cluster}}", "B")],
             {"x": 12, "y": 22, "w": 6, "h": 8}, unit="s"),
        stat("Repository and disk",
             "1 if the repository answered the agent; free fraction of the agent's state directory's filesystem.",
             [target(metric("pg_backup_storage_up"), "storage up {{cluster}}", "A"),
              target(metric("pg_backup_disk_free_ratio"), "disk free {{cluster}}", "B")],
             {"x": 18, "y": 22, "w": 6, "h": 8}, unit="percentunit"),
        stat("Key expiry", "Time left until each OpenPGP key the host writes with expires (PgBackupKeyExpiring warns "
             "30 days before; backups stop once it has expired).",
             [target(metric("pg_backup_key_expiry_seconds"), "{{cluster}} {{key}} {{fingerprint}}", "A")],
             {"x": 0, "y": 30, "w": 24, "h": 4}, unit="s",
             steps=[{"color": "red", "value": None}, {"color": "orange", "value": 0},
                    {"color": "green", "value": 30 * 86400}]),
    ]
    for i, p in enumerate(panels, 1):
        p["id"] = i
    return {
        "uid": UID, "title": "pg-backup", "description": "PostgreSQL backups taken by pg-backup "
        "(miometry.pg_backup): freshness, size, WAL archiving, drills. Generated by scripts/generate-dashboard.py.",
        "tags": ["postgresql", "backup", "pg-backup"], "timezone": "utc", "schemaVersion": 39, "version": 1,
        "editable": True, "refresh": "5m", "time": {"from": "now-7d", "to": "now"},
        "templating": {"list": [
            {"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus",
             "current": {}, "options": [], "refresh": 1},
            variable("instance", "Host", f"label_values({metric('pg_backup_health_status', '')}, instance)", True),
            variable("cluster", "Cluster",
                     f"label_values({metric('pg_backup_health_status', ON_INSTANCE)}, cluster)", True),
            variable("kind", "Kind (size panel)",
                     f"label_values({metric('pg_backup_last_backup_stored_bytes', SEL)}, kind)", False),
            variable("tier", "Tier (size panel)",
                     f"label_values({metric('pg_backup_last_backup_stored_bytes', SEL)}, tier)", False),
        ]},
        "annotations": {"list": []}, "links": [], "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the checked-in JSON is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run scripts/generate-dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
