"""A compliance report document as ``compliance report --format json`` writes it (fixed values), for the
rendering tests: three tiers, Object Lock, a PITR window, drills, an erasure and an audit trail."""
from __future__ import annotations

import copy
from typing import Any, Dict


def _backup(backup_id: str, kind: str, tier: str, started: str, size: int, expires: str, checksum: Dict[str, Any],
            lock_until: str) -> Dict[str, Any]:
    return {"backup_id": backup_id, "kind": kind, "tier": tier, "host": "db1", "started_at": started,
            "finished_at": started[:14] + "12:00.000000Z", "size_bytes": size, "raw_bytes": size * 4, "objects": 2,
            "databases": ["crm"] if kind == "logical" else [], "server_version": "15.10",
            "encryption": {"mode": "public-key", "cipher": "AES256",
                           "key_fingerprint": "0123456789ABCDEF0123456789ABCDEF01234567"},
            "incremental_of": None, "checksum": checksum, "storage_class": "STANDARD_IA",
            "object_lock": {"mode": "COMPLIANCE", "retain_until": lock_until, "objects_locked": 2, "objects": 2},
            "expires_at": expires, "expiry_basis": f"{tier} backup within retention", "kept_now_because": "within",
            "deletable_from": max(expires, lock_until), "erasure_through": None}


_DOC: Dict[str, Any] = {
    "schema_version": 1, "report": "compliance", "cluster": "ledger", "generated_at": "2026-12-01T08:00:00.000000Z",
    "generated_by": {"host": "db1", "agent_version": "0.9.0"},
    "period": {"since": "2026-11-01T00:00:00.000000Z", "until": "2026-12-01T00:00:00.000000Z", "label": "2026-11"},
    "repository": "s3://backups-eu/pg/ledger/",
    "retention": {"daily_days": 30, "weekly_weeks": 12, "monthly_months": 84, "wal_hours": 24,
                  "assumption": "expiry dates assume the backup schedules keep running; prune deletes a backup "
                                "at its first run after that date"},
    "locality": {"type": "s3", "location": "s3://backups-eu/pg", "bucket": "backups-eu", "endpoint": "AWS",
                 "configured_region": "eu-central-1", "actual_region": "eu-central-1", "matches": True},
    "object_lock": {"enabled": True, "mode": "COMPLIANCE", "days": 35, "years": None},
    "tiers": {
        "daily": {"count": 1, "size_bytes": 5 << 20, "backups": [
            _backup("20261130T020000Z-logical-daily", "logical", "daily", "2026-11-30T02:00:00.000000Z", 5 << 20,
                    "2026-12-30T02:00:01.000000Z", {"state": "passed", "at": "2026-11-30T05:00:00.000000Z",
                                                    "by": "verify --restore"}, "2027-01-04T02:12:00.000000Z")]},
        "weekly": {"count": 0, "size_bytes": 0, "backups": []},
        "monthly": {"count": 1, "size_bytes": 3 << 30, "backups": [
            _backup("20261101T030000Z-physical-monthly", "physical", "monthly", "2026-11-01T03:00:00.000000Z", 3 << 30,
                    "2033-11-01T03:00:01.000000Z", {"state": "not verified", "at": None, "by": None},
                    "2026-12-06T03:12:00.000000Z")]}},
    "backups_total": 2,
    "recoverable": {"databases": [
        {"database": "crm", "oldest_point": "2026-11-01T03:12:00.000000Z", "backup_id": "20261101T030000Z-physical-monthly",
         "kind": "pitr", "logical_backups": 1},
        {"database": "(whole cluster)", "oldest_point": "2026-11-01T03:12:00.000000Z",
         "backup_id": "20261101T030000Z-physical-monthly", "kind": "pitr", "logical_backups": None}],
        "pitr_window": {"start_time": "2026-11-01T03:12:00.000000Z", "end_time": "2026-11-30T23:59:00.000000Z",
                        "start_backup_id": "20261101T030000Z-physical-monthly"}},
    "verification": {"last": {"backup_id": "20261130T020000Z-logical-daily", "at": "2026-11-30T05:00:00.000000Z",
                              "passed": True, "duration_seconds": 312.0, "within_rto_target": True},
                     "in_period": 4, "passed_in_period": 4, "failed_in_period": 0, "rto_target_minutes": 240},
    "drill": {"last": {"drill_id": "20261115T100000Z", "started_at": "2026-11-15T10:00:00.000000Z", "passed": True,
                       "rto_seconds": 2700.0, "rto_met": True, "rpo_seconds": 30.0, "rpo_met": True,
                       "rto_target_minutes": 240, "rpo_target_minutes": 60, "backup_id": "20261101T030000Z-physical-monthly"},
              "count": 2, "in_period": 1, "targets": {"rto_minutes": 240, "rpo_minutes": 60},
              "history": [{"drill_id": "20261015T100000Z", "started_at": "2026-10-15T10:00:00.000000Z", "passed": False,
                           "rto_seconds": 15500.0, "rto_met": False, "rpo_seconds": 45.0, "rpo_met": True,
                           "rto_target_minutes": 240, "rpo_target_minutes": 60, "backup_id": None}]},
    "erasures": {"count": 1, "complete_everywhere_at": "2033-11-01T03:00:01.000000Z", "records": [
        {"erasure_id": "20261110T091500.123456Z-a1b2c3", "recorded_at": "2026-11-10T09:15:00.123456Z",
         "backups_holding_data": ["20261101T030000Z-physical-monthly"], "complete_at": "2033-11-01T03:00:01.000000Z",
         "complete": False}]},
    "audit": {"count": 2, "by_operation": {"backup": 1, "erasure-add": 1}, "records": [
        {"started_at": "2026-11-10T09:15:00.000000Z", "operation": "erasure-add", "who": "postgres@db1",
         "result": "success", "exit_code": 0, "backup_id": None, "erasure_id": "20261110T091500.123456Z-a1b2c3",
         "restored_into": None, "erasures_skipped": None, "error": None},
        {"started_at": "2026-11-30T02:00:00.000000Z", "operation": "backup", "who": "postgres@db1", "result": "success",
         "exit_code": 0, "backup_id": "20261130T020000Z-logical-daily", "erasure_id": None, "restored_into": None,
         "erasures_skipped": None, "error": None}]},
    "notes": [],
}
_DOC["drill"]["history"].append(dict(_DOC["drill"]["last"]))


def sample_report() -> Dict[str, Any]:
    return copy.deepcopy(_DOC)
