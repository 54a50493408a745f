"""Health evaluation is a pure function of manifests, probes and a clock."""
from __future__ import annotations

import datetime as dt

from pg_backup.config import HealthSettings
from pg_backup.health import Probes, document, evaluate, render_nagios, render_prometheus
from pg_backup.manifest import EncryptionInfo, Manifest, iso, make_backup_id

NOW = dt.datetime(2026, 6, 15, 12, tzinfo=dt.timezone.utc)


def _m(tier: str, hours_ago: float, stored: int = 1000) -> Manifest:
    started = NOW - dt.timedelta(hours=hours_ago)
    from pg_backup.manifest import StoredObject
    return Manifest(backup_id=make_backup_id(started, "logical", tier), kind="logical", tier=tier, cluster="main",
                    hostname="h", agent_version="0", server_version="15", server_version_num=150000,
                    system_identifier="1", started_at=iso(started), finished_at=iso(started),
                    encryption=EncryptionInfo("openpgp", "passphrase", "AES256", "scrypt:x"), compression={},
                    objects=[StoredObject("o", "database", stored, "0" * 64, stored)])


def _status(checks, name):
    return {c.name: c.status for c in checks}[name]


def test_fresh_backups_are_ok_and_overdue_tiers_warn_then_go_critical():
    manifests = [_m("daily", 3), _m("weekly", 30), _m("monthly", 24 * 40)]
    checks = evaluate(manifests, HealthSettings(), Probes(), NOW)
    assert _status(checks, "freshness_daily") == "ok"
    assert _status(checks, "freshness_weekly") == "ok"
    assert _status(checks, "freshness_monthly") == "warning"  # 40 days > 32 days
    checks = evaluate([_m("daily", 27)], HealthSettings(), Probes(), NOW)
    assert _status(checks, "freshness_daily") == "warning"
    checks = evaluate([_m("daily", 53)], HealthSettings(), Probes(), NOW)
    assert _status(checks, "freshness_daily") == "critical"
    checks = evaluate([], HealthSettings(), Probes(), NOW)
    assert _status(checks, "freshness_daily") == "critical"


def test_a_backup_that_shrank_by_60_percent_warns():
    history = [_m("daily", 24 * d, stored=1000) for d in range(2, 9)]
    checks = evaluate(history + [_m("daily", 1, stored=400)], HealthSettings(), Probes(), NOW)
    size = [c for c in checks if c.name == "size_daily"][0]
    assert size.status == "warning" and size.value == -60.0


def test_failed_last_run_unreachable_storage_and_wrong_region():
    probes = Probes(last_runs={"backup:daily": {"result": "failure", "started_at": "t", "error": "pg_dump failed"}},
                    storage_error="cannot reach http://x")
    checks = evaluate([_m("daily", 1)], HealthSettings(), probes, NOW)
    assert _status(checks, "last_run_backup_daily") == "critical"
    assert _status(checks, "storage") == "critical"
    probes = Probes(storage={"region": "us-east-1"}, configured_region="eu-central-1")
    checks = evaluate([_m("daily", 1)], HealthSettings(), probes, NOW)
    assert "data locality" in [c for c in checks if c.name == "storage"][0].message


def test_renderings_carry_the_same_verdict():
    manifests = [_m("daily", 30)]
    doc = document("main", evaluate(manifests, HealthSettings(), Probes(), NOW))
    assert doc["status"] == "warning"
    nagios = render_nagios(doc)
    assert nagios.startswith("PG-BACKUP WARNING - main:") and "'freshness_daily'=30h;26;52" in nagios
    prom = render_prometheus(doc, manifests, NOW)
    assert 'pg_backup_health_status{cluster="main"} 1' in prom
    assert 'pg_backup_last_backup_age_seconds{cluster="main",tier="daily"} 108000' in prom
