"""Where a recovery stops: :class:`RecoveryTarget` (time, WAL location, transaction, restore point, the
end of the archived WAL, or the end of the base backup) and how the ``pitr`` options make one."""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import UsageError
from ..wal.names import format_lsn, parse_lsn_arg


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops. ``kind`` is time, lsn, xid, name, latest (all archived WAL) or
    immediate (as soon as the base backup is consistent)."""

    kind: str
    value: Optional[str] = None
    inclusive: bool = True

    def describe(self) -> str:
        if self.kind == "latest":
            return "the end of the archived WAL"
        if self.kind == "immediate":
            return "the end of the base backup (consistent point)"
        label = {"time": "time", "lsn": "WAL location", "xid": "transaction", "name": "restore point"}[self.kind]
        return f"{label} {self.value}{'' if self.inclusive else ' (exclusive)'}"

    @property
    def time(self) -> Optional[dt.datetime]:
        return parse_target_time(self.value or "") if self.kind == "time" else None

    @property
    def lsn(self) -> Optional[int]:
        return parse_lsn_arg(self.value or "") if self.kind == "lsn" else None

    def settings(self) -> Dict[str, str]:
        """The recovery_target_* parameters: exactly one target (none for latest)."""
        if self.kind == "latest":
            return {}
        if self.kind == "immediate":
            return {"recovery_target": "immediate"}
        out = {f"recovery_target_{self.kind}": self.value or ""}
        if self.kind in ("time", "lsn", "xid"):
            out["recovery_target_inclusive"] = "on" if self.inclusive else "off"
        return out

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "inclusive": self.inclusive, "description": self.describe()}


def parse_target_time(text: str) -> dt.datetime:
    """ISO 8601 with a zone: 2026-11-25T14:03:00Z, 2026-11-25 14:03:00.5+01, ...+01:00."""
    raw = text.strip()
    m = re.match(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$",
                 raw, re.I)
    if not m:
        raise UsageError(f"target time {text!r} is not an ISO 8601 time like 2026-11-25T14:03:00Z")
    date, clock, frac, zone = m.groups()
    if not zone:
        raise UsageError(f"target time {text!r} has no time zone; add one, e.g. {raw}Z or {raw}+01:00")
    if len(clock) == 5:
        clock += ":00"
    zone = "+00:00" if zone.upper() == "Z" else zone
    if len(zone) == 3:
        zone += ":00"
    elif ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    micro = (frac or "0")[:6].ljust(6, "0")
    try:
        return dt.datetime.fromisoformat(f"{date}T{clock}.{micro}{zone}")
    except ValueError as exc:
        raise UsageError(f"target time {text!r}: {exc}") from None


def time_target(when: Any, inclusive: bool = True) -> RecoveryTarget:
    ts = when if isinstance(when, dt.datetime) else parse_target_time(str(when))
    if ts.tzinfo is None:
        raise UsageError("a target time needs a time zone")
    value = ts.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    return RecoveryTarget("time", value, inclusive)


def lsn_target(lsn: str, inclusive: bool = True) -> RecoveryTarget:
    return RecoveryTarget("lsn", format_lsn(parse_lsn_arg(lsn)), inclusive)


def xid_target(xid: Any, inclusive: bool = True) -> RecoveryTarget:
    text = str(xid).strip()
    if not text.isdigit() or int(text) < 3:
        raise UsageError(f"target transaction id {xid!r} is not a normal transaction id (a number >= 3)")
    return RecoveryTarget("xid", str(int(text)), inclusive)


def name_target(name: str) -> RecoveryTarget:
    if not name or len(name.encode()) >= 64:
        raise UsageError(f"restore point name {name!r} must have 1 to 63 bytes (pg_create_restore_point's limit)")
    return RecoveryTarget("name", name)


def latest_target() -> RecoveryTarget:
    return RecoveryTarget("latest")


def consistent_target() -> RecoveryTarget:
    return RecoveryTarget("immediate")


def target_from_options(*, latest: bool = False, target_time: Optional[str] = None, target_lsn: Optional[str] = None,
                        target_xid: Optional[str] = None, target_name: Optional[str] = None,
                        exclusive: bool = False) -> RecoveryTarget:
    """The one target the ``pitr`` options name (the first given, in this order); ``exclusive`` stops
    just before a time, WAL location or transaction."""
    inclusive = not exclusive
    if latest:
        if not inclusive:
            raise UsageError("--exclusive applies to --target-time, --target-lsn and --target-xid")
        return latest_target()
    if target_time:
        return time_target(target_time, inclusive)
    if target_lsn:
        return lsn_target(target_lsn, inclusive)
    if target_xid:
        return xid_target(target_xid, inclusive)
    if target_name:
        if not inclusive:
            raise UsageError("--exclusive does not apply to a restore point (--target-name)")
        return name_target(target_name)
    raise UsageError("pitr needs one target: --target-time, --target-lsn, --target-xid, --target-name or --latest")
