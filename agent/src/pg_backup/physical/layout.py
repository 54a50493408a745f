"""What a physical backup's objects are called in the repository (``<backup_id>/<name>``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..errors import IntegrityError
from ..tarstream import Resume

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


def part_name(first: str, index: int) -> str:
    """The object of part ``index`` (1-based) of the archive whose first object is ``first``: part 1
    keeps the archive's own name, so a backup of one part is laid out as before parts existed."""
    if index == 1:
        return first
    stem = first[:-len(".tar" + ENCRYPTED_SUFFIX)]
    return f"{stem}.tar.part-{index:04d}{ENCRYPTED_SUFFIX}"


@dataclass
class ArchivePart:
    """One object of an archive and where it starts in the archive's tar stream."""

    name: str
    index: int
    count: int
    resume: Optional[Resume] = None

    @property
    def last(self) -> bool:
        return self.index == self.count


def archive_parts(manifest: Any, first: str) -> List[ArchivePart]:
    """The objects of the archive ``first`` (base.tar or a tablespace's) in order: the manifest's
    ``parts`` record when it was split, else the one object. IntegrityError (exit 4) when that record
    does not fit the manifest's objects."""
    records = manifest.parts.get(first)
    if not records:
        return [ArchivePart(first, 1, 1)]
    what = f"{manifest.backup_id}/{first}"
    names = {o.name for o in manifest.objects}
    out = []
    for i, rec in enumerate(records, 1):
        name = rec.get("object") if isinstance(rec, dict) else None
        if name != part_name(first, i) or name not in names or rec.get("index") != i:
            raise IntegrityError(f"{what}: the manifest's part {i} record ({rec!r}) does not name an object of the "
                                 f"backup in order")
        out.append(ArchivePart(name, i, len(records), Resume.from_dict(rec.get("resume"), what)))
    return out


def split_records(first: str, parts: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The manifest's ``parts`` entry of an archive from the splitter's part records."""
    return [dict(rec, object=part_name(first, rec["index"])) for rec in parts]
