"""What a physical backup's objects are called in the repository (``<backup_id>/<name>``)."""
from __future__ import annotations

from typing import Optional, Tuple

ENCRYPTED_SUFFIX = ".zst.gpg"
BASE_OBJECT = "base.tar" + ENCRYPTED_SUFFIX
BACKUP_MANIFEST_OBJECT = "backup_manifest" + ENCRYPTED_SUFFIX
CONFIG_OBJECT = "config.tar" + ENCRYPTED_SUFFIX      # configuration files kept outside the data directory


def tablespace_object(oid: int) -> str:
    return f"tablespace-{oid}.tar{ENCRYPTED_SUFFIX}"


def object_for(archive_name: str) -> Tuple[str, str, Optional[int]]:
    """(object name, role, tablespace oid) of an archive of the base backup stream."""
    if archive_name == "backup_manifest":
        return BACKUP_MANIFEST_OBJECT, "backup_manifest", None
    stem = archive_name[:-len(".tar")]
    if stem == "base":
        return BASE_OBJECT, "base", None
    return tablespace_object(int(stem)), "tablespace", int(stem)
