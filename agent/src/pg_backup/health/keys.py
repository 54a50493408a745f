"""Key expiry in health: the OpenPGP keys this host writes with (``encryption.public_key_file``; the
cluster's signing key once it exists), read by :func:`probe_keys`, judged by :func:`key_checks` (a
pure function of the probes and a clock, through :func:`pg_backup.keys.openpgp.expiry_verdict`).

Checks: ``key_expiry_<purpose>`` (e.g. ``key_expiry_encryption``): ok; warning 30 days before the
key expires; critical once it has expired (backups and WAL archiving then stop with exit 8), is
revoked, or cannot be read. Metric: ``pg_backup_key_expiry_seconds{key,fingerprint}``, the seconds
left (negative once expired; no sample for a key that never expires).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..errors import PgBackupError
from ..keys.host import KEY_FILES
from ..keys.openpgp import WARN_DAYS, KeyInfo, expiry_verdict, read_key_file


@dataclass
class KeyProbe:
    """One key file the host writes with, as read now."""

    purpose: str
    setting: str
    path: str
    key: Optional[KeyInfo] = None
    error: Optional[str] = None


def probe_keys(settings: Any) -> List[KeyProbe]:
    """Read every OpenPGP key file the host writes with (rows of :data:`pg_backup.keys.host.KEY_FILES`)."""
    probes: List[KeyProbe] = []
    for row in KEY_FILES:
        if not (row.writes and row.openpgp):
            continue
        obj = settings
        for part in row.setting.split("."):
            obj = getattr(obj, part)
        if not obj:
            continue
        probe = KeyProbe(row.purpose, row.setting, obj)
        try:
            keys = read_key_file(obj, settings.encryption.gpg_binary)
            if len(keys) != 1:
                raise PgBackupError(f"{obj} holds {len(keys)} keys; put exactly one in it")
            probe.key = keys[0]
        except PgBackupError as exc:
            probe.error = str(exc)
        probes.append(probe)
    return probes


def key_checks(probes: List[KeyProbe], now: dt.datetime, warn_days: int = WARN_DAYS) -> List[Dict[str, Any]]:
    """The fields of one :class:`~pg_backup.health.checks.Check` per probed key."""
    checks = []
    for p in probes:
        name = f"key_expiry_{p.purpose}"
        if p.key is None:
            stops = "restores, verifications and drills" if p.purpose == "record_signing" else "backups"
            checks.append({"name": name, "status": "critical", "unit": "s", "labels": {"key": p.purpose},
                           "message": f"{p.setting}: cannot read the key: {p.error}; {stops} stop with exit 8"})
            continue
        status, message, left = expiry_verdict(p.key, now, warn_days, encrypts="signing" not in p.purpose)
        checks.append({"name": name, "status": status, "message": f"{p.purpose} {message}", "value": left,
                       "unit": "s", "labels": {"key": p.purpose, "fingerprint": p.key.fingerprint}})
    return checks


def expiry_samples(probes: List[KeyProbe], now: dt.datetime) -> List[Tuple[Dict[str, str], Optional[float]]]:
    """Samples of ``pg_backup_key_expiry_seconds``: seconds left per key that expires."""
    return [({"key": p.purpose, "fingerprint": p.key.fingerprint}, round((p.key.expires - now).total_seconds()))
            for p in probes if p.key is not None and p.key.expires is not None]
