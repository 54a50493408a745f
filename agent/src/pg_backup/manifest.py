"""Backup manifests: the catalog is nothing but the set of these files.

A manifest is written last, with create-if-absent semantics; its presence is the commit point of
a backup. Everything restore, verify and retention need is in it, so storage alone is the truth.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from .errors import IntegrityError

MANIFEST_SCHEMA_VERSION = 3
# Manifests of full backups keep schema 1, so agents from before incremental backups still read
# them; an incremental backup's manifest is schema 2, which those agents refuse ("upgrade pg-backup")
# instead of restoring an incremental archive as if it were a full one. A backup with an archive
# stored as several parts (``parts``) is schema 3, refused by agents that would restore only its
# first part.
FULL_MANIFEST_SCHEMA_VERSION = 1
SPLIT_MANIFEST_SCHEMA_VERSION = 3
MANIFEST_NAME = "manifest.json"

def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def make_backup_id(started: dt.datetime, kind: str, tier: str, sequence: int = 0) -> str:
    """Sortable, human-readable ids: 20261125T020000Z-logical-daily (a -N suffix on a clash)."""
    base = f"{started.astimezone(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{kind}-{tier}"
    return f"{base}-{sequence}" if sequence else base


def allocate_backup_id(exists: Callable[[str], bool], started: dt.datetime, kind: str, tier: str) -> str:
    """The first id for this start time that ``exists`` does not know yet."""
    sequence = 0
    backup_id = make_backup_id(started, kind, tier)
    while exists(backup_id):
        sequence += 1
        backup_id = make_backup_id(started, kind, tier, sequence)
    return backup_id


@dataclass
class StoredObject:
    """One object of a backup, as stored (compressed and encrypted)."""

    name: str                      # file name within the backup's directory
    role: str                      # "database", "globals" or "base"
    size: int                      # stored bytes
    sha256: str                    # of the stored bytes
    raw_size: int                  # bytes before compression
    database: Optional[str] = None
    #: The version the store gave the object (a versioned bucket; None elsewhere): restores and verify read
    #: exactly it. Stored in the JSON as ``extra["object_versions"]`` (name -> id), which agents from before
    #: version ids keep and ignore (they refuse unknown object fields).
    version_id: Optional[str] = None


@dataclass
class DatabaseInfo:
    name: str
    object: str                    # StoredObject.name holding its dump
    encoding: str
    collate: str
    ctype: str
    owner: str
    size_bytes: int
    row_counts: Optional[Dict[str, int]] = None


@dataclass
class EncryptionInfo:
    format: str                    # "openpgp"
    mode: str                      # "public-key" or "passphrase"
    cipher: str                    # "AES256"
    fingerprint: str               # key fingerprint (public key) or passphrase fingerprint


@dataclass
class ChainInfo:
    """An incremental physical backup's place in its chain (PostgreSQL 17+ incremental base backups:
    ``UPLOAD_MANIFEST`` of the parent's ``backup_manifest``, then ``BASE_BACKUP ... INCREMENTAL``).

    ``members`` lists the backups a restore needs before this one, oldest first: ``members[0]`` is
    the chain's full backup (``root``) and ``members[-1]`` the ``parent``; restoring this backup means
    combining ``members + [this backup]`` with ``pg_combinebackup``.
    """

    parent: str                    # backup_id of the backup this one is incremental to
    root: str                      # backup_id of the chain's full backup
    members: List[str]             # root .. parent, oldest first (this backup not included)
    parent_stop_lsn: str           # the parent's stop_lsn: the summaries must cover parent start .. our start
    depth: int                     # 1 for the first incremental after the full backup


@dataclass
class Manifest:
    backup_id: str
    kind: str                      # "logical" (pg_dump) or "physical" (base backup)
    tier: str
    cluster: str
    hostname: str
    agent_version: str
    server_version: str
    server_version_num: int
    system_identifier: Optional[str]
    started_at: str
    finished_at: str
    encryption: EncryptionInfo
    compression: Dict[str, Any]
    objects: List[StoredObject] = field(default_factory=list)
    databases: List[DatabaseInfo] = field(default_factory=list)
    pg_dump_version: Optional[str] = None
    # Physical backups (kind "physical"): where WAL replay must start and may stop, and the WAL
    # file names that bound the range retention must keep (DESIGN §6).
    timeline: Optional[int] = None
    start_lsn: Optional[str] = None
    stop_lsn: Optional[str] = None
    start_wal: Optional[str] = None
    stop_wal: Optional[str] = None
    wal_segment_size: Optional[int] = None
    tablespaces: List[Dict[str, Any]] = field(default_factory=list)
    # Upper bounds of a physical backup's consistency point, read from the server right after
    # pg_backup_stop: the server's clock and its next transaction id. A recovery target after them
    # can start from this backup (time: stop_time < target; xid: next_xid <= target).
    stop_time: Optional[str] = None
    next_xid: Optional[int] = None
    # Incremental physical backups only: the chain this backup belongs to (None for a full backup).
    incremental: Optional[ChainInfo] = None
    #: Archives stored as several objects (physical/tarsplit.py): first object's name -> the parts in
    #: order, each {"object", "index", "offset", "size", "resume"} (layout.archive_parts reads them).
    parts: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    schema_version: int = FULL_MANIFEST_SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.incremental is not None:
            self.schema_version = max(self.schema_version, 2)
        if self.parts:
            self.schema_version = max(self.schema_version, SPLIT_MANIFEST_SCHEMA_VERSION)

    @property
    def started(self) -> dt.datetime:
        return parse_iso(self.started_at)

    @property
    def finished(self) -> dt.datetime:
        return parse_iso(self.finished_at)

    @property
    def is_incremental(self) -> bool:
        return self.incremental is not None

    def chain_ids(self) -> List[str]:
        """Every backup a restore of this one needs, oldest first, ending with this backup."""
        return (list(self.incremental.members) if self.incremental else []) + [self.backup_id]

    @property
    def stored_bytes(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def raw_bytes(self) -> int:
        return sum(o.raw_size for o in self.objects)

    def object_named(self, name: str) -> StoredObject:
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise IntegrityError(f"manifest of {self.backup_id} does not list object {name}")

    def database(self, name: str) -> Optional[DatabaseInfo]:
        for db in self.databases:
            if db.name == name:
                return db
        return None

    def globals_object(self) -> Optional[StoredObject]:
        for obj in self.objects:
            if obj.role == "globals":
                return obj
        return None

    def to_json(self) -> bytes:
        doc = dataclasses.asdict(self)
        if not doc["parts"]:
            del doc["parts"]                # manifests without parts stay readable by older agents
        versions = {o["name"]: o["version_id"] for o in doc["objects"] if o["version_id"]}
        for o in doc["objects"]:
            del o["version_id"]
        if versions:
            doc["extra"] = dict(doc["extra"], object_versions=versions)
        return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()

    def summary(self) -> Dict[str, Any]:
        """The compact form used by ``list --json``."""
        doc = {
            "backup_id": self.backup_id, "kind": self.kind, "tier": self.tier, "cluster": self.cluster,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "stored_bytes": self.stored_bytes, "raw_bytes": self.raw_bytes,
            "databases": [d.name for d in self.databases], "server_version": self.server_version,
            "key_fingerprint": self.encryption.fingerprint, "encryption_mode": self.encryption.mode,
            "signer": self.extra.get("signer"),
        }
        if self.kind == "physical":
            doc.update(timeline=self.timeline, start_lsn=self.start_lsn, stop_lsn=self.stop_lsn,
                       start_wal=self.start_wal, stop_wal=self.stop_wal, stop_time=self.stop_time,
                       tablespaces=[t.get("name") for t in self.tablespaces])
            doc["incremental"] = dataclasses.asdict(self.incremental) if self.incremental else None
        return doc

    @classmethod
    def from_json(cls, data: bytes, *, source: str = "manifest") -> "Manifest":
        try:
            raw = json.loads(data)
            version = raw.get("schema_version")
            if not isinstance(version, int) or version > MANIFEST_SCHEMA_VERSION:
                raise IntegrityError(f"{source} has manifest schema_version {version!r}; this agent reads up to "
                                     f"{MANIFEST_SCHEMA_VERSION}", hint="upgrade pg-backup")
            raw["encryption"] = EncryptionInfo(**raw["encryption"])
            versions = (raw.get("extra") or {}).get("object_versions") or {}
            raw["objects"] = [StoredObject(**dict(o, version_id=o.get("version_id") or versions.get(o.get("name"))))
                              for o in raw.get("objects", [])]
            raw["databases"] = [DatabaseInfo(**d) for d in raw.get("databases", [])]
            if raw.get("incremental") is not None:
                raw["incremental"] = ChainInfo(**raw["incremental"])
            return cls(**raw)
        except IntegrityError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise IntegrityError(f"{source} is not a valid manifest ({exc.__class__.__name__}: {exc})") from None


# -- chains of incremental physical backups -------------------------------------------------------

def missing_members(manifest: Manifest, known: "set[str] | Dict[str, Any]") -> List[str]:
    """The members of ``manifest``'s chain that are not among ``known`` backup ids (a broken chain:
    removed out of band); empty for a full backup."""
    return [b for b in (manifest.incremental.members if manifest.incremental else []) if b not in known]


def dependents(manifests: List[Manifest]) -> Dict[str, List[str]]:
    """backup_id -> the backups whose restore needs it (every later member of a chain), oldest first."""
    needed: Dict[str, List[str]] = {}
    for m in sorted(manifests, key=lambda x: (x.started_at, x.backup_id)):
        for member in (m.incremental.members if m.incremental else []):
            needed.setdefault(member, []).append(m.backup_id)
    return needed


def chain_root(manifest: Manifest) -> str:
    """The full backup a physical backup's chain starts with (the backup itself when it is full)."""
    return manifest.incremental.root if manifest.incremental else manifest.backup_id
