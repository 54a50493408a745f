"""The erasure register: one object per erasure under ``<cluster>/erasures/``, written once, never
overwritten, encrypted like backups.

A record names data subjects (its statements do), so it goes through the same OpenPGP pipeline as a
backup: JSON, zstd, gpg (AES-256, MDC), stored create-if-absent under an id that sorts in time order
(``20261204T073012.123456Z-a1b2c3``: replay order). The object's metadata carries the key's
fingerprint (``pgb-key``) and the SHA-256 of the stored bytes (``pgb-sha256``), like WAL objects.
Decryption is authenticated, and the decrypted record must carry the id of the key it is stored
under: a changed, truncated or swapped object is refused (IntegrityError, exit 4).

In a disaster, with stock tools: ``gpg -d OBJECT | zstd -d`` prints the record (docs/erasure.md).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import zstandard

from ..crypto import GnuPG
from ..errors import IntegrityError, NotFoundError
from ..pipeline import EncryptedStream, iter_plaintext
from ..repository import Repository
from ..storage.base import PutOptions

RECORD_SCHEMA_VERSION = 1
META_KEY = "pgb-key"
META_SHA256 = "pgb-sha256"
_ID_TIME = "%Y%m%dT%H%M%S"


@dataclass
class ErasureRecord:
    erasure_id: str
    recorded_at: str
    cluster: str
    database: str
    #: {"sql", "kind" (DELETE/UPDATE), "table" (schema.table as resolved in production), "rows"}
    statements: List[Dict[str, Any]]
    #: The schemas unqualified names resolved against in production; a replay uses the same path.
    search_path: List[str] = field(default_factory=list)
    os_user: str = ""
    host: str = ""
    request_id: Optional[str] = None
    reason: Optional[str] = None
    committed_at: Optional[str] = None         # the server's clock just before COMMIT
    transaction_id: Optional[str] = None       # pg_current_xact_id() of the production transaction
    system_identifier: Optional[str] = None
    server_version_num: Optional[int] = None
    agent_version: str = ""
    schema_version: int = RECORD_SCHEMA_VERSION

    def to_json(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()

    def summary(self) -> Dict[str, Any]:
        """The record without its statements' text (for places that must not show data subjects)."""
        doc = dataclasses.asdict(self)
        doc["statements"] = [{k: v for k, v in s.items() if k != "sql"} for s in self.statements]
        return doc

    @classmethod
    def from_json(cls, data: bytes, *, expected_id: str) -> "ErasureRecord":
        what = f"erasure record {expected_id}"
        try:
            raw = json.loads(data)
            version = raw.get("schema_version")
            if not isinstance(version, int) or version > RECORD_SCHEMA_VERSION:
                raise IntegrityError(f"{what} has schema_version {version!r}; this agent reads up to "
                                     f"{RECORD_SCHEMA_VERSION}", hint="upgrade pg-backup")
            record = cls(**raw)
        except IntegrityError:
            raise
        except (ValueError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"{what} is not a valid erasure record ({exc.__class__.__name__}: {exc})") from None
        if record.erasure_id != expected_id:
            raise IntegrityError(f"the object of {what} holds record {record.erasure_id}: it was moved or replaced",
                                 hint="restore the register object from the bucket's versions, or re-add the erasure")
        if not record.statements or not all(isinstance(s, dict) and s.get("sql") for s in record.statements):
            raise IntegrityError(f"{what} has no statements")
        return record


def erasure_id_time(erasure_id: str) -> dt.datetime:
    stamp = erasure_id.split("-", 1)[0]
    return dt.datetime.strptime(stamp, _ID_TIME + ".%fZ").replace(tzinfo=dt.timezone.utc)


def new_erasure_id(now: dt.datetime, existing: List[str]) -> str:
    """An id of ``now`` that sorts after every existing one (a host whose clock is behind still appends)."""
    when = now.astimezone(dt.timezone.utc)
    if existing:
        when = max(when, erasure_id_time(existing[-1]) + dt.timedelta(microseconds=1))
    return f"{when:{_ID_TIME}}.{when.microsecond:06d}Z-{secrets.token_hex(3)}"


def store_record(repo: Repository, gpg: GnuPG, record: ErasureRecord) -> str:
    """Encrypt and store ``record`` (never over an existing object); return its key."""
    fingerprint = gpg.encryption_fingerprint()
    compressed = zstandard.ZstdCompressor(level=9).compress(record.to_json())

    def produce(stdin: Any) -> None:
        stdin.write(compressed)

    with EncryptedStream(gpg, produce, what=f"erasure record {record.erasure_id}") as stream:
        data = b"".join(stream)
    key = repo.erasure_key(record.erasure_id)
    options = PutOptions(content_type="application/octet-stream",
                         metadata={META_KEY: fingerprint, META_SHA256: hashlib.sha256(data).hexdigest()})
    try:
        repo.storage.put_bytes(key, data, options, overwrite=False)
    except FileExistsError:
        raise IntegrityError(f"erasure record {record.erasure_id} already exists; refusing to overwrite it") from None
    return key


def load_record(repo: Repository, gpg: GnuPG, erasure_id: str) -> ErasureRecord:
    """Read, authenticate and decrypt one record (IntegrityError for anything changed)."""
    key = repo.erasure_key(erasure_id)
    info = repo.storage.head(key)
    if info is None:
        raise NotFoundError(f"erasure record {erasure_id} does not exist in {repo.location}",
                            hint="see 'pg-backup erasure list'")
    meta = info.metadata or {}
    fingerprint = meta.get(META_KEY) or gpg.encryption_fingerprint()
    plain = b"".join(iter_plaintext(repo.storage, key, gpg, fingerprint, what=f"erasure record {erasure_id}",
                                    expected_sha256=meta.get(META_SHA256)))
    return ErasureRecord.from_json(plain, expected_id=erasure_id)


def load_register(repo: Repository, gpg: GnuPG, ids: Optional[List[str]] = None) -> List[ErasureRecord]:
    """Every record (or those of ``ids``), oldest first."""
    return [load_record(repo, gpg, i) for i in (repo.erasure_ids() if ids is None else ids)]


def newest_erasure_id(repo: Repository) -> Optional[str]:
    """What a backup starting now contains at most: the newest id in the register (listing only, no key)."""
    ids = repo.erasure_ids()
    return ids[-1] if ids else None
