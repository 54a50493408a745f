"""The monitoring role's Prometheus alerting rules and Grafana dashboard.

- ``promtool check rules`` accepts roles/monitoring/files/pg_backup.rules.yml;
- ``promtool test rules`` runs tests/roles/alert_rules/pg_backup.rules.test.yml, which has, for every
  rule (alert name and severity), a case where it fires and one where it does not;
- every rule has a severity, the host/service labels and summary, description and runbook text;
- every health condition the agent evaluates has a rule;
- every metric the rules, their tests and the dashboard use is one the agent emits: its table
  ``pg_backup.health.render.METRICS``, the only names its Prometheus output can carry
  (agent/tests/unit/test_health_metrics.py ties the output to the table);
- the checked-in dashboard JSON is what scripts/generate-dashboard.py generates;
- the role installs both (validated with promtool), a second run changes nothing, off removes them.

promtool comes from the Debian package prometheus (scripts/install-deps.sh). Plain pytest:

    .venv/bin/python -m pytest tests/roles/test_alert_rules.py
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "roles" / "monitoring" / "files" / "pg_backup.rules.yml"
DASHBOARD = ROOT / "roles" / "monitoring" / "files" / "pg_backup_dashboard.json"
RULE_TESTS = ROOT / "tests" / "roles" / "alert_rules" / "pg_backup.rules.test.yml"
GENERATOR = ROOT / "scripts" / "generate-dashboard.py"
VENV_BIN = Path(sys.executable).parent

sys.path.insert(0, str(ROOT / "agent" / "src"))
from pg_backup.health.render import METRICS  # noqa: E402

METRIC_RE = re.compile(r"\bpg_backup_[a-z_]+\b")
# Every condition the agent's health evaluation reports (pg_backup.health docstring: the check names)
# and the rule that alerts on it.
CONDITIONS = {
    "freshness_<tier> too old": "PgBackupTooOld",
    "freshness_<tier> no backup at all": "PgBackupMissing",
    "last_run_<operation> failed": "PgBackupRunFailed",
    "size_<tier>, size_<tier>_db_<database>": "PgBackupSizeAnomaly",
    "wal_archiver failing or off": "PgBackupWalArchiverFailing",
    "wal_newest_age behind": "PgBackupWalArchiveBehind",
    "wal_gaps": "PgBackupWalGaps",
    "wal_conflicts": "PgBackupWalConflicts",
    "storage unreachable": "PgBackupStorageUnreachable",
    "storage in the wrong region": "PgBackupStorageWrongRegion",
    "local_disk": "PgBackupLowDisk",
    "restore_verification too old": "PgBackupRestoreVerificationTooOld",
    "restore_verification failed": "PgBackupRestoreVerificationFailed",
    "drill RTO over target": "PgBackupDrillRtoOverTarget",
    "drill RPO over target": "PgBackupDrillRpoOverTarget",
    "drill failed": "PgBackupDrillFailed",
    "key_expiry_<purpose> near, expired, revoked or unreadable": "PgBackupKeyExpiring",
    "wal_summarizer off or behind (warning), incremental backups impossible (critical)": "PgBackupWalSummarizer",
    "erasure_register unreadable or a record damaged": "PgBackupErasureRegisterDamaged",
    "erasure_claims an erasure the newest backup does not claim": "PgBackupErasureUnclaimed",
    "audit_chain gap, deleted, edited or forged audit record": "PgBackupAuditChainBroken",
    "a check that cannot be evaluated": "PgBackupCheckUnknown",
    "the health job stopped": "PgBackupHealthStale",
}


def _promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: install the Debian package prometheus (make deps / scripts/install-deps.sh)"
    return path


def _rules() -> list:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _rule_tests() -> dict:
    return yaml.safe_load(RULE_TESTS.read_text())   # resolves the file's YAML anchors and merge keys


def test_promtool_check_rules_accepts_the_rules():
    proc = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in proc.stdout


def test_promtool_unit_tests_pass(tmp_path):
    """The rules with each rule's summary as its only annotation (what the cases expect), then promtool."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["annotations"] = {"summary": rule["annotations"]["summary"]}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    tests = _rule_tests()
    for anchor in [key for key in tests if key.startswith("x-")]:  # YAML anchors only (x-common, x-other)
        tests.pop(anchor)
    tests["rule_files"] = ["rules.yml"]
    (tmp_path / "rules.test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = subprocess.run([_promtool(), "test", "rules", "rules.test.yml"], cwd=tmp_path, capture_output=True,
                          text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_rule_has_a_case_that_fires_and_one_that_does_not():
    fired, silent = set(), set()
    for case in _rule_tests()["tests"]:
        for check in case["alert_rule_test"]:
            if check["exp_alerts"]:
                fired |= {(check["alertname"], a["exp_labels"]["severity"]) for a in check["exp_alerts"]}
            else:
                silent.add(check["alertname"])
    rules = {(r["alert"], r["labels"]["severity"]) for r in _rules()}
    assert rules - fired == set(), "rules without a case where they fire"
    assert {name for name, severity in rules} - silent == set(), "rules without a case where they stay silent"


def test_every_rule_has_severity_labels_and_runbook_text():
    for rule in _rules():
        labels, notes = rule["labels"], rule["annotations"]
        assert labels["severity"] in ("warning", "critical"), rule["alert"]
        assert labels["service"] == "pg-backup" and "$labels.instance" in labels["host"], rule["alert"]
        for key in ("summary", "description", "runbook"):
            assert len(notes.get(key, "").split()) >= 5, f"{rule['alert']}: annotation {key} missing or too short"
        assert "$labels.cluster" in notes["summary"], f"{rule['alert']}: the summary should name the cluster"
        assert "for" in rule, f"{rule['alert']}: no 'for' (a single scrape would page)"


def test_every_health_condition_has_a_rule():
    names = {r["alert"] for r in _rules()}
    assert set(CONDITIONS.values()) - names == set()
    assert names - set(CONDITIONS.values()) == set(), "a rule for no listed condition: add it to CONDITIONS"
    # check names (or name prefixes) the rules key on are ones the agent's health evaluation makes
    health = "\n".join(p.read_text() for p in (ROOT / "agent" / "src" / "pg_backup" / "health").glob("*.py"))
    for check in set(re.findall(r'check(?:=~|=)"([a-z_]+)', RULES.read_text())):
        assert check in health, f"rules key on check {check!r}, which the agent's health package does not name"


def test_rules_tests_and_dashboard_use_only_metrics_the_agent_emits():
    used = {
        "rules": set(METRIC_RE.findall("\n".join(r["expr"] for r in _rules()))),
        "rule tests": set(METRIC_RE.findall("\n".join(s["series"] for t in _rule_tests()["tests"]
                                                      for s in t["input_series"]))),
        "dashboard": set(METRIC_RE.findall(DASHBOARD.read_text())),
    }
    for where, names in used.items():
        assert names, where
        assert names - set(METRICS) == set(), f"{where} use metrics the agent does not emit"


def test_the_dashboard_is_generated_and_covers_the_issue_panels():
    proc = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(DASHBOARD.read_text())
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in doc["panels"]}

    def panel(word: str) -> str:
        found = [e for title, e in exprs.items() if word in title]
        assert len(found) == 1, (word, list(exprs))
        return found[0]

    assert "pg_backup_last_backup_timestamp_seconds" in panel("Backup age per tier")
    assert {"pg_backup_size_band_lower_bytes", "pg_backup_size_band_upper_bytes",
            "pg_backup_last_backup_stored_bytes"} <= set(METRIC_RE.findall(panel("stored size")))
    assert "pg_backup_wal_newest_archived_timestamp_seconds" in panel("WAL archiving lag")
    assert {"pg_backup_last_drill_rto_seconds", "pg_backup_drill_rto_target_seconds", "pg_backup_last_drill_rpo_seconds",
            "pg_backup_drill_rpo_target_seconds"} <= set(METRIC_RE.findall(panel("RTO and RPO")))
    assert len({p["id"] for p in doc["panels"]}) == len(doc["panels"])


def _play(tmp_path: Path, extra: dict, *flags: str) -> str:
    collections = tmp_path / "collections" / "ansible_collections" / "miometry"
    collections.mkdir(parents=True, exist_ok=True)
    link = collections / "pg_backup"
    if not link.exists():
        link.symlink_to(ROOT)
    play = [{"hosts": "localhost", "gather_facts": False, "roles": [{"role": "miometry.pg_backup.monitoring"}],
             "vars": {"monitoring_clusters": [], "monitoring_nrpe_enabled": False,
                      "monitoring_prometheus_enabled": False, "monitoring_become": False,
                      "monitoring_prometheus_service": "",
                      "monitoring_alert_rules_file": str(tmp_path / "prometheus" / "rules" / "pg_backup.rules.yml"),
                      "monitoring_dashboard_file": str(tmp_path / "grafana" / "pg_backup.json"),
                      "monitoring_promtool": _promtool(), **extra}}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(tmp_path / "play.yml"), *flags],
                          capture_output=True, text=True, check=False, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _changed(out: str) -> int:
    return int(re.search(r"changed=(\d+)", out).group(1))


def test_the_role_installs_validates_and_removes_rules_and_dashboard(tmp_path):
    on = {"monitoring_alert_rules_enabled": True, "monitoring_dashboard_enabled": True}
    rules = tmp_path / "prometheus" / "rules" / "pg_backup.rules.yml"
    dashboard = tmp_path / "grafana" / "pg_backup.json"
    _play(tmp_path, on, "--check")
    assert not rules.exists() and not dashboard.exists()
    assert _changed(_play(tmp_path, on)) > 0
    assert rules.read_bytes() == RULES.read_bytes() and dashboard.read_bytes() == DASHBOARD.read_bytes()
    assert oct(rules.stat().st_mode & 0o777) == "0o644"
    assert _changed(_play(tmp_path, on)) == 0
    _play(tmp_path, {})
    assert not rules.exists() and not dashboard.exists()


def test_the_role_refuses_rules_that_promtool_rejects(tmp_path):
    """The validation is real: a promtool that rejects the file keeps the installed one."""
    fake = tmp_path / "promtool-rejects"
    fake.write_text("#!/bin/sh\necho 'rule file rejected' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(AssertionError, match="failed to validate"):
        _play(tmp_path, {"monitoring_alert_rules_enabled": True, "monitoring_promtool": str(fake)})
    assert not (tmp_path / "prometheus" / "rules" / "pg_backup.rules.yml").exists()
