"""The Prometheus output and the agent's metric table (pg_backup.health.render.METRICS) are one list:
with every probe present, the output carries exactly the table's names, each with its TYPE, and the
values that alerting rules and the dashboard compare against (limits, the size band, drill targets).
The monitoring role's rules and dashboard are checked against the same table (tests/roles/test_alert_rules.py)."""
from __future__ import annotations

import datetime as dt
import re

import pytest

from pg_backup.config import HealthSettings
from pg_backup.health.checks import ArchiverProbe, Check, Probes, evaluate
from pg_backup.health.render import METRICS, _Metrics, document, render_prometheus
from test_health import NOW, _m, _rec, _wal
from test_keys_unit import key_probe


def _full_render() -> str:
    history = [_m("daily", 24 * d, stored=1000, dbs={"app": 1000}) for d in range(2, 5)]
    physical = [_m("weekly", 24 * d, stored=5000, kind="physical") for d in (10, 3)]
    manifests = history + [_m("daily", 3, dbs={"app": 1200})] + physical
    t = NOW - dt.timedelta(minutes=1)
    probes = Probes(storage={"region": "eu-central-1"}, disk_free_fraction=0.42, wal=_wal(20),
                    archiver=ArchiverProbe(archive_mode="on", archived_count=7, failed_count=1, last_archived_time=t,
                                           last_failed_time=t - dt.timedelta(minutes=1)),
                    verifications=[_rec(1, True)],
                    last_drill={"started_at": "2026-06-14T10:00:00.000000Z", "passed": True,
                                "rto": {"seconds": 312.5}, "rpo": {"seconds": 2.0},
                                "targets": {"rto_minutes": 240, "rpo_minutes": 15}},
                    keys=[key_probe(NOW + dt.timedelta(days=90))])
    audit = Check("audit_chain", "ok", "audit chain intact through entry 3", 0.0)   # commands/health adds it
    doc = document("main", evaluate(manifests, HealthSettings(), probes, NOW) + [audit])
    return render_prometheus(doc, manifests, NOW, probes)


def _value(text: str, sample_prefix: str) -> float:
    lines = [ln for ln in text.splitlines() if ln.startswith(sample_prefix)]
    assert len(lines) == 1, (sample_prefix, lines)
    return float(lines[0].rsplit(" ", 1)[1])


def test_every_metric_of_the_table_is_emitted_with_its_type_and_nothing_else():
    text = _full_render()
    emitted = set(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert emitted == {(name, kind) for name, (kind, _) in METRICS.items()}
    samples = {re.match(r"^([a-z_]+)\{", ln).group(1) for ln in text.splitlines() if not ln.startswith("#")}
    assert samples == set(METRICS)


def test_limits_band_and_targets_are_what_the_checks_used():
    text = _full_render()
    daily = 'kind="logical",tier="daily"}'
    assert _value(text, 'pg_backup_backup_max_age_seconds{cluster="main",' + daily) == 26 * 3600
    assert _value(text, 'pg_backup_backup_max_age_seconds{cluster="main",kind="physical",tier="weekly"}') == 192 * 3600
    # median of the previous daily backups (1000) ± health.size_change_percent (50 %)
    assert _value(text, 'pg_backup_size_band_lower_bytes{cluster="main",' + daily) == 500
    assert _value(text, 'pg_backup_size_band_upper_bytes{cluster="main",' + daily) == 1500
    assert _value(text, 'pg_backup_size_band_upper_bytes{cluster="main",kind="physical",tier="weekly"}') == 7500
    assert _value(text, 'pg_backup_drill_rto_target_seconds{cluster="main"}') == 240 * 60
    assert _value(text, 'pg_backup_drill_rpo_target_seconds{cluster="main"}') == 15 * 60
    assert _value(text, 'pg_backup_health_timestamp_seconds{cluster="main"}') == NOW.timestamp()


def test_a_first_backup_has_no_size_band():
    manifests = [_m("daily", 3)]
    text = render_prometheus(document("main", evaluate(manifests, HealthSettings(), Probes(), NOW)), manifests, NOW)
    assert "pg_backup_size_band_" not in text and "pg_backup_backup_max_age_seconds{" in text


def test_a_name_outside_the_table_cannot_be_emitted():
    with pytest.raises(KeyError):
        _Metrics("main").family("pg_backup_not_in_the_table", [({}, 1)])
