"""Health evaluation is a pure function of manifests, probes and a clock."""
from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from typing import Dict, Optional

import pytest

from pg_backup.config import HealthSettings
from pg_backup.health.checks import ArchiverProbe, Probes, WalProbe, database_check_name, evaluate
from pg_backup.health.render import document, render_nagios, render_prometheus
from pg_backup.manifest import DatabaseInfo, EncryptionInfo, Manifest, StoredObject, iso, make_backup_id
from pg_backup.verification.records import VerificationRecord
from pg_backup.wal.names import segment_end

NOW = dt.datetime(2026, 6, 15, 12, tzinfo=dt.timezone.utc)
PUSH = "pg-backup --config /etc/pg-backup/main.yml wal-push %p"   # archive_command of an archiving server


def _m(tier: str, hours_ago: float, stored: int = 1000, dbs: Optional[Dict[str, int]] = None,
       kind: str = "logical") -> Manifest:
    started = NOW - dt.timedelta(hours=hours_ago)
    if dbs is None:
        objects = [StoredObject("o", "database" if kind == "logical" else "base", stored, "0" * 64, stored)]
        databases = []
    else:
        objects = [StoredObject(f"db-{i}", "database", size, "0" * 64, size, database=name)
                   for i, (name, size) in enumerate(dbs.items())]
        databases = [DatabaseInfo(name, f"db-{i}", "UTF8", "C", "C", "postgres", 0) for i, name in enumerate(dbs)]
    return Manifest(backup_id=make_backup_id(started, kind, tier), kind=kind, tier=tier, cluster="main",
                    hostname="h", agent_version="0", server_version="15", server_version_num=150000,
                    system_identifier="1", started_at=iso(started), finished_at=iso(started),
                    encryption=EncryptionInfo("openpgp", "passphrase", "AES256", "scrypt:x"), compression={},
                    objects=objects, databases=databases)


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
    # Nagios knows no hours: ages go out in seconds.
    assert nagios.startswith("PG-BACKUP WARNING - main:") and "'freshness_daily'=108000s;93600;187200" in nagios
    prom = render_prometheus(doc, manifests, NOW)
    assert 'pg_backup_health_status{cluster="main"} 1' in prom
    assert 'pg_backup_last_backup_age_seconds{cluster="main",kind="logical",tier="daily"} 108000' in prom


def _check(checks, name):
    return [c for c in checks if c.name == name][0]


def test_size_is_judged_per_database_too():
    # The whole backup barely changes (app grew, ledger shrank by 60 %): only the per-database check sees it.
    history = [_m("daily", 24 * d, dbs={"app": 10_000, "ledger": 1_000}) for d in range(2, 6)]
    newest = _m("daily", 1, dbs={"app": 10_500, "ledger": 400})
    checks = evaluate(history + [newest], HealthSettings(), Probes(), NOW)
    assert _status(checks, "size_daily") == "ok"
    ledger = _check(checks, "size_daily_db_ledger")
    assert ledger.status == "warning" and ledger.value == -60.0 and ledger.labels == {"tier": "daily",
                                                                                     "database": "ledger"}
    assert _status(checks, "size_daily_db_app") == "ok"
    # Names are made safe for Nagios/Prometheus and stay distinct.
    assert database_check_name("daily", "a b") != database_check_name("daily", "a_b")
    assert "'" not in database_check_name("daily", "it's")


def test_physical_backups_have_their_own_freshness_and_size():
    manifests = [_m("daily", 3), _m("daily", 50, kind="physical"), _m("daily", 30, kind="physical", stored=3000)]
    checks = evaluate(manifests, HealthSettings(), Probes(), NOW)
    assert _status(checks, "freshness_daily") == "ok"
    assert _status(checks, "freshness_physical_daily") == "warning"  # 30 h > 26 h
    assert _check(checks, "size_physical_daily").labels == {"tier": "daily", "kind": "physical"}
    # Only physical backups: no logical freshness noise, the physical daily tier is what counts.
    only = evaluate([_m("weekly", 3, kind="physical")], HealthSettings(), Probes(), NOW)
    names = {c.name for c in only}
    assert "freshness_daily" not in names and _status(only, "freshness_physical_daily") == "critical"


def _wal(age_s: float, **kw) -> WalProbe:
    return WalProbe(segments=10, newest_segment="000000010000000000000005",
                    newest_modified=NOW - dt.timedelta(seconds=age_s), **kw)


def test_wal_age_warns_beyond_factor_times_timeout_and_is_critical_beyond_the_rpo():
    phys = [_m("daily", 3, kind="physical")]
    ok = evaluate(phys, HealthSettings(), Probes(wal=_wal(100)), NOW)
    assert _status(ok, "wal_newest_age") == "ok"
    warn = evaluate(phys, HealthSettings(), Probes(wal=_wal(301)), NOW)   # 5 x 60 s
    assert _status(warn, "wal_newest_age") == "warning"
    crit = evaluate(phys, HealthSettings(), Probes(wal=_wal(3601)), NOW)  # rpo 60 min
    assert _status(crit, "wal_newest_age") == "critical"
    custom = evaluate(phys, HealthSettings(), Probes(wal=_wal(700)), NOW, archive_timeout_seconds=200,
                      rpo_target_minutes=30)
    assert _status(custom, "wal_newest_age") == "ok"
    # An idle primary (nothing written since the newest archived segment ended) is not at risk.
    idle = ArchiverProbe(archive_mode="on", current_lsn=segment_end("000000010000000000000005", 16 << 20))
    checks = evaluate(phys, HealthSettings(), Probes(wal=_wal(3601), archiver=idle), NOW)
    assert _status(checks, "wal_newest_age") == "ok" and "idle" in _check(checks, "wal_newest_age").message
    busy = ArchiverProbe(archive_mode="on", current_lsn=segment_end("000000010000000000000005", 16 << 20) + 100)
    checks = evaluate(phys, HealthSettings(), Probes(wal=_wal(3601), archiver=busy), NOW)
    assert _status(checks, "wal_newest_age") == "critical" and "100 byte(s)" in _check(checks, "wal_newest_age").message


def test_segment_end_positions():
    assert segment_end("000000010000000000000000", 16 << 20) == 16 << 20
    assert segment_end("0000000100000001000000FF", 16 << 20) == (1 << 32) + (256 << 24)


def test_gaps_conflicts_and_no_wal():
    phys = [_m("daily", 3, kind="physical")]
    checks = evaluate(phys, HealthSettings(), Probes(wal=_wal(10, gaps=["000000010000000000000003"],
                                                                conflicts=["x: different content"])), NOW)
    assert _status(checks, "wal_gaps") == "critical" and _status(checks, "wal_conflicts") == "critical"
    checks = evaluate(phys, HealthSettings(), Probes(wal=WalProbe()), NOW)
    assert _status(checks, "wal_newest_age") == "critical"
    # No physical backup, no WAL, archiving off: WAL checks stay out of a logical-only setup.
    checks = evaluate([_m("daily", 1)], HealthSettings(), Probes(archiver=ArchiverProbe(archive_mode="off")), NOW)
    assert not [c for c in checks if c.name.startswith("wal_")]


def test_archiver_failing_now_recovered_and_unreachable():
    t = NOW - dt.timedelta(minutes=5)
    failing = ArchiverProbe(archive_mode="on", archive_command=PUSH, failed_count=3, last_failed_time=t,
                            last_archived_time=t - dt.timedelta(minutes=1), last_failed_wal="000000010000000000000007")
    checks = evaluate([_m("daily", 1)], HealthSettings(), Probes(archiver=failing), NOW)
    assert _status(checks, "wal_archiver") == "critical" and "000000010000000000000007" in \
        _check(checks, "wal_archiver").message
    recovered = ArchiverProbe(archive_mode="on", archive_command=PUSH, failed_count=5,
                              last_failed_time=t - dt.timedelta(minutes=1), last_archived_time=t,
                              previous_failed_count=3)
    assert _status(evaluate([], HealthSettings(), Probes(archiver=recovered), NOW), "wal_archiver") == "warning"
    steady = ArchiverProbe(archive_mode="on", archive_command=PUSH, failed_count=5,
                           last_failed_time=t - dt.timedelta(minutes=1), last_archived_time=t, previous_failed_count=5)
    assert _status(evaluate([], HealthSettings(), Probes(archiver=steady), NOW), "wal_archiver") == "ok"
    down = evaluate([_m("daily", 1, kind="physical")], HealthSettings(),
                    Probes(archiver_error="cannot connect", wal=_wal(1)), NOW)
    assert _status(down, "wal_archiver") == "unknown"


def test_archiver_without_a_command_is_broken_like_archive_mode_off():
    """health agrees with postgres.archiver.archiving_off: archive_mode = on with neither archive_command
    nor archive_library archives nothing, whatever pg_stat_archiver says."""
    quiet = dict(archived_count=0, failed_count=0, previous_failed_count=0)
    for probe in (ArchiverProbe(archive_mode="on", **quiet), ArchiverProbe(archive_mode="always", archive_command="  ",
                                                                           **quiet)):
        checks = evaluate([_m("daily", 1)], HealthSettings(), Probes(archiver=probe), NOW)
        assert _status(checks, "wal_archiver") == "critical"
        assert _check(checks, "wal_archiver").message.startswith(f"archive_mode is {probe.archive_mode} but "
                                                                 f"archive_command is empty")
    off = evaluate([_m("daily", 1, kind="physical")], HealthSettings(), Probes(archiver=ArchiverProbe()), NOW)
    assert _check(off, "wal_archiver").message.startswith("archive_mode is off")
    for works in (ArchiverProbe(archive_mode="on", archive_command=PUSH, **quiet),
                  ArchiverProbe(archive_mode="on", archive_library="basic_archive", **quiet)):
        assert _status(evaluate([], HealthSettings(), Probes(archiver=works), NOW), "wal_archiver") == "ok"


def _rec(days_ago: float, passed: bool) -> VerificationRecord:
    when = NOW - dt.timedelta(days=days_ago)
    return VerificationRecord(f"main/audit/verifications/{when:%Y%m%dT%H%M%SZ}-x", when, "b1", passed)


def test_restore_verification_age_and_failures():
    m = [_m("daily", 1)]
    assert _status(evaluate(m, HealthSettings(), Probes(verifications=[_rec(3, True)]), NOW),
                   "restore_verification") == "ok"
    old = evaluate(m, HealthSettings(), Probes(verifications=[_rec(36, True)]), NOW)
    assert _status(old, "restore_verification") == "warning" and "36.0 days ago" in \
        _check(old, "restore_verification").message
    assert _status(evaluate(m, HealthSettings(), Probes(verifications=[]), NOW), "restore_verification") == "warning"
    failed = evaluate(m, HealthSettings(), Probes(verifications=[_rec(3, True), _rec(1, False)]), NOW)
    assert _status(failed, "restore_verification") == "critical" and "FAILED" in \
        _check(failed, "restore_verification").message


def test_nagios_perfdata_is_well_formed():
    history = [_m("daily", 24 * d, dbs={"it's=odd": 1000}) for d in range(2, 4)]
    probes = Probes(wal=_wal(10), verifications=[_rec(2, True)], disk_free_fraction=0.5)
    doc = document("main", evaluate(history + [_m("daily", 1, dbs={"it's=odd": 1000}, kind="physical")],
                                    HealthSettings(), probes, NOW))
    text = render_nagios(doc)
    perf = text.split(" | ", 1)[1].split(" ")
    import re
    for item in perf:
        assert re.match(r"^'[^'=]+'=-?[0-9.]+(s|%|B|c)?;-?[0-9.]*;-?[0-9.]*$", item), item
    assert "'restore_verification'=172800s;3024000;" in text


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        why = "promtool not installed (Debian package prometheus: scripts/install-deps.sh)"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return path


def test_prometheus_text_passes_promtool_with_every_probe():
    history = [_m("daily", 24 * d, dbs={"app": 1000, 'we"ird\\': 50}) for d in range(2, 5)]
    manifests = history + [_m("daily", 3, kind="physical")]
    t = NOW - dt.timedelta(minutes=1)
    probes = Probes(storage={"region": "us-east-1"}, disk_free_fraction=0.42, wal=_wal(20),
                    archiver=ArchiverProbe(archive_mode="on", archived_count=7, failed_count=1, last_archived_time=t,
                                           last_failed_time=t - dt.timedelta(minutes=1)),
                    verifications=[_rec(1, True)],
                    last_drill={"started_at": "2026-06-14T10:00:00.000000Z", "passed": False,
                                "rto": {"seconds": 312.5}, "rpo": {"seconds": 0.0}})
    doc = document('main "x"', evaluate(manifests, HealthSettings(), probes, NOW))
    text = render_prometheus(doc, manifests, NOW, probes)
    proc = subprocess.run([_promtool(), "check", "metrics"], input=text, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr + text
    assert 'pg_backup_archiver_failed_total{cluster="main \\"x\\""} 1' in text
    assert "# TYPE pg_backup_archiver_failed_total counter" in text
    assert 'pg_backup_last_drill_rto_seconds{cluster="main \\"x\\""} 312.5' in text
    assert 'pg_backup_last_drill_success{cluster="main \\"x\\""} 0' in text
