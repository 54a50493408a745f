"""The compliance report document of one cluster (JSON, ``schema_version``), read from the repository
alone: manifests, the bucket's objects (storage class, Object Lock), the verification and drill records,
the erasure register's ids and the audit trail. The Markdown and PDF renderings show this document."""
from __future__ import annotations

import socket
from typing import Any, Dict

from .. import __version__
from ..context import Context
from ..errors import PgBackupError
from ..manifest import iso
from ..recovery.window import recoverable_window
from ..verification.records import verification_history
from .backups import recoverable_section, tiers_section
from .evidence import (audit_trail, checksum_checks, drill_section, erasure_section, locality_section, read_audit,
                       verification_section)
from .period import Period

REPORT_SCHEMA_VERSION = 1


def build_report(ctx: Context, period: Period) -> Dict[str, Any]:
    now = ctx.clock()
    settings = ctx.settings
    host = socket.gethostname()
    notes = []
    locality = locality_section(settings, ctx.storage, host)
    lock_config = ctx.storage.object_lock()
    manifests = ctx.repo.manifests()
    ctx.progress.stage(f"compliance report of {ctx.cluster}: {len(manifests)} backup(s), period {period.label}")
    def untrusted(message: str) -> None:      # a record without a trusted signature is left out (docs/signing.md)
        notes.append(message)
        ctx.progress.warn(message)

    records = read_audit(ctx.repo, period.since, period.until, untrusted)
    verifications = verification_history(ctx.repo, untrusted)
    tiers = tiers_section(ctx, manifests, checksum_checks(records, verifications), lock_config is not None, now)
    by_id = {b["backup_id"]: b for t in tiers.values() for b in t["backups"]}
    try:
        window = recoverable_window(ctx, manifests)
        window_doc = window.to_dict() if window else None
    except PgBackupError as exc:
        window_doc = None
        notes.append(f"the point-in-time window could not be read: {exc}")
    has_wal = any(m.kind == "physical" for m in manifests)
    drill = settings.drill
    if lock_config is None and locality["type"] == "s3":
        notes.append("the bucket has no Object Lock: retention is enforced by prune and lifecycle rules only")
    elif lock_config is not None and lock_config.get("enabled") is None:
        notes.append(f"the bucket's Object Lock configuration is {lock_config.get('error')}; objects' retention is "
                     f"shown only where HeadObject reports it (s3:GetObjectRetention)")
    if any(t["backups"] and any(b["expires_at"] is None for b in t["backups"]) for t in tiers.values()):
        notes.append("a backup without an expiry date is kept by retention at every future date considered")
    return {
        "schema_version": REPORT_SCHEMA_VERSION, "report": "compliance", "cluster": ctx.cluster,
        "generated_at": iso(now), "generated_by": {"host": host, "agent_version": __version__},
        "period": period.to_dict(), "repository": ctx.repo.location,
        "retention": {"daily_days": settings.retention.daily_days, "weekly_weeks": settings.retention.weekly_weeks,
                      "monthly_months": settings.retention.monthly_months, "wal_hours": settings.retention.wal_hours,
                      "assumption": "expiry dates assume the backup schedules keep running; prune deletes a backup "
                                    "at its first run after that date"},
        "locality": locality, "object_lock": lock_config,
        "tiers": tiers, "backups_total": len(manifests),
        "recoverable": recoverable_section(manifests, window_doc),
        "verification": verification_section(ctx.storage, verifications, period.since, drill.rto_target_minutes),
        "drill": drill_section(ctx.repo, untrusted, period.since, drill.rto_target_minutes,
                               drill.rpo_target_minutes),
        "erasures": erasure_section(ctx.repo.erasure_ids(), manifests, by_id,
                                    settings.retention.wal_hours if has_wal else None, now),
        "audit": audit_trail([r for r in records if str(r.get("started_at") or "") < iso(period.until)],
                             period.since),
        "notes": notes,
    }
