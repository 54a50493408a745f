"""Health of the erasure register: can it be read, and do the backups claim what they contain?

:func:`probe_register` reads storage (listing, object metadata and a SHA-256 of each small record:
no decryption, so it runs on database hosts that hold only the public key, and costs no gpg process
per record); :func:`erasure_checks` is a pure function of that probe and the manifests.

- ``erasure_register`` critical: the register cannot be listed, or a record's stored bytes no longer
  match the SHA-256 written with it (or it lacks one), or an object there is not a record.
- ``erasure_claims`` warning: an erasure recorded before the newest backup started that the
  backup's manifest does not claim (``extra["erasure_through"]``): made by an agent from before the
  register, or a record written with a time that is not when it was recorded. Restores re-apply it
  all the same; the warning says the repository's own account of what the backup holds is wrong.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import List, Optional

from ..errors import PgBackupError
from ..manifest import Manifest
from ..repository import ERASURE_ID, ERASURE_SUFFIX, Repository
from .checks import Check

META_SHA256 = "pgb-sha256"  # the same metadata key the register writes (erasure.register)


@dataclass
class ErasureProbe:
    ids: List[str] = field(default_factory=list)
    damaged: List[str] = field(default_factory=list)   # "<id or key>: why"
    error: Optional[str] = None


def probe_register(repo: Repository) -> ErasureProbe:
    probe = ErasureProbe()
    prefix = repo.erasures_prefix
    try:
        for info in repo.storage.list(prefix):
            name = info.key[len(prefix):]
            erasure_id = name[:-len(ERASURE_SUFFIX)] if name.endswith(ERASURE_SUFFIX) else ""
            if not ERASURE_ID.match(erasure_id):
                probe.damaged.append(f"{info.key}: not an erasure record")
                continue
            probe.ids.append(erasure_id)
            expected = ((repo.storage.head(info.key) or info).metadata or {}).get(META_SHA256)
            if not expected:
                probe.damaged.append(f"{erasure_id}: no SHA-256 stored with it")
            elif hashlib.sha256(repo.storage.get_bytes(info.key)).hexdigest() != expected:
                probe.damaged.append(f"{erasure_id}: stored bytes differ from their SHA-256")
    except PgBackupError as exc:
        probe.error = exc.message
    probe.ids.sort()
    return probe


def erasure_checks(probe: ErasureProbe, manifests: List[Manifest]) -> List[Check]:
    if probe.error:
        return [Check("erasure_register", "critical", f"the erasure register cannot be read: {probe.error}; restores "
                      f"cannot re-apply erasures until it can")]
    if probe.damaged:
        return [Check("erasure_register", "critical",
                      f"{len(probe.damaged)} erasure record(s) cannot be trusted ({'; '.join(probe.damaged[:3])}): "
                      f"restores refuse to hand data over until they are restored from the bucket's versions or "
                      f"re-added", float(len(probe.damaged)), None, 1)]
    checks = [Check("erasure_register", "ok", f"{len(probe.ids)} erasure record(s)"
                    + (f", newest {probe.ids[-1]}" if probe.ids else ""), float(len(probe.ids)))]
    if not manifests or not probe.ids:
        return checks
    newest = max(manifests, key=lambda m: m.started_at)
    started = newest.started
    stamp = f"{started:%Y%m%dT%H%M%S}.{started.microsecond:06d}Z"
    claimed = newest.extra.get("erasure_through") or ""
    unclaimed = [i for i in probe.ids if i.split("-", 1)[0] < stamp and i > claimed]
    if unclaimed:
        checks.append(Check("erasure_claims", "warning",
                            f"{len(unclaimed)} erasure(s) recorded before the newest backup {newest.backup_id} started "
                            f"are not claimed by its manifest (first {unclaimed[0]}; it claims "
                            f"{claimed or 'none'}): was it made by an older agent? Restores re-apply them all the same",
                            float(len(unclaimed)), 1, None))
    else:
        checks.append(Check("erasure_claims", "ok", f"the newest backup {newest.backup_id} claims every erasure "
                            f"recorded before it ({claimed or 'none'})", 0.0))
    return checks
