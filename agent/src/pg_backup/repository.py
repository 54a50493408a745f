"""The storage layout of one cluster and the catalog read from it (DESIGN §2).

    <prefix>/<cluster>/backups/<backup_id>/manifest.json   written last: the commit point
    <prefix>/<cluster>/backups/<backup_id>/<objects>
    <prefix>/<cluster>/wal/archive.json                     the WAL archive's identity
    <prefix>/<cluster>/wal/<timeline>/<wal file>.zst.gpg    every file PostgreSQL archives
    <prefix>/<cluster>/wal/conflicts/<ts>-<name>-<rand>.json refused pushes
    <prefix>/<cluster>/audit/<yyyy>/<mm>/<ts>-<op>-<rand>.json
    <prefix>/<cluster>/audit/chain/<seq>.json               the audit hash chain (create-only, docs/audit.md)
    <prefix>/<cluster>/audit/verifications/<ts>-<backup_id>-<rand>-<passed|failed>.json
    <prefix>/<cluster>/audit/drills/<drill_id>/{history.png,report.md,report.json}
    <prefix>/<cluster>/erasures/<erasure_id>.json.zst.gpg   the erasure register (docs/erasure.md)

Every plain-JSON object above (manifest.json, archive.json, conflict, audit, chain, verification
records, report.json) has its detached signature ``<key>.sig`` beside it where the writing host holds
the cluster's signing key (``put_signed``, docs/signing.md).
"""
from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional

from .errors import IntegrityError, NotFoundError
from .manifest import MANIFEST_NAME, Manifest
from .signing import SIGNATURE_SUFFIX, SignatureError, Signatures
from .storage.base import IncompleteUpload, ObjectInfo, PutOptions, Storage
from .wal.names import object_name

#: The name of a verification record under ``verifications_prefix``: time, backup id, random, verdict.
VERIFICATION_NAME = re.compile(r"^(\d{8}T\d{6}Z)-(.+)-([0-9a-f]{6})-(passed|failed)\.json$")
#: An erasure id: the UTC time it was recorded, to the microsecond, and a random tag; ids sort in time order.
ERASURE_ID = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}$")
ERASURE_SUFFIX = ".json.zst.gpg"


@dataclass
class Leftover:
    """A backup directory without a manifest: an interrupted or still-running backup."""

    backup_id: str
    keys: List[str] = field(default_factory=list)
    newest: Optional[dt.datetime] = None
    size: int = 0


class Repository:
    def __init__(self, storage: Storage, cluster: str,
                 signatures: Callable[[], Optional[Signatures]] = lambda: None):
        self.storage = storage
        self.cluster = cluster
        self.root = f"{cluster}/"
        #: The cluster's signing keys (None: none configured): manifests are signed and verified with them.
        self._signatures = signatures
        #: Backups the catalog (``manifests``) left out: their manifest has no trusted signature (id -> why).
        self.refused: Dict[str, str] = {}

    # -- keys --------------------------------------------------------------------------------------
    def backup_prefix(self, backup_id: str) -> str:
        return f"{self.root}backups/{backup_id}/"

    def object_key(self, backup_id: str, name: str) -> str:
        return self.backup_prefix(backup_id) + name

    def manifest_key(self, backup_id: str) -> str:
        return self.object_key(backup_id, MANIFEST_NAME)

    def manifest_signature_key(self, backup_id: str) -> str:
        """The detached signature of the manifest (docs/signing.md), written just before it."""
        return self.manifest_key(backup_id) + SIGNATURE_SUFFIX

    def audit_key(self, ts: dt.datetime, op: str, suffix: str) -> str:
        u = ts.astimezone(dt.timezone.utc)
        return f"{self.root}audit/{u:%Y}/{u:%m}/{u:%Y%m%dT%H%M%S}Z-{op}-{suffix}.json"

    def audit_month_prefix(self, year: int, month: int) -> str:
        """The audit records of operations started in one month (UTC), as ``audit_key`` names them."""
        return f"{self.root}audit/{year:04d}/{month:02d}/"

    @property
    def audit_records_prefix(self) -> str:
        """Every audit record (``audit/<yyyy>/<mm>/...``), among verifications, drills and the chain."""
        return f"{self.root}audit/"

    @property
    def audit_chain_prefix(self) -> str:
        """The audit chain's entries, ``audit/chain/<seq, 12 digits>.json``, written create-only: the
        sequence number in the key is how concurrent writers take turns (audit.chain, DESIGN §10)."""
        return f"{self.root}audit/chain/"

    def audit_chain_key(self, seq: int) -> str:
        return f"{self.audit_chain_prefix}{seq:012d}.json"

    # -- keys of the WAL archive (DESIGN §5) --------------------------------------------------------
    @property
    def wal_prefix(self) -> str:
        return f"{self.root}wal/"

    def wal_key(self, name: str) -> str:
        """The object of WAL file ``name`` (WalNameError for anything that is not one)."""
        return self.wal_prefix + object_name(name)

    @property
    def wal_identity_key(self) -> str:
        return self.wal_prefix + "archive.json"

    @property
    def wal_conflicts_prefix(self) -> str:
        return self.wal_prefix + "conflicts/"

    # -- keys of restore verifications and drills (DESIGN §10: under audit/, verdicts in the names) ----
    @property
    def verifications_prefix(self) -> str:
        return f"{self.root}audit/verifications/"

    def verification_key(self, when: dt.datetime, backup_id: str, passed: bool) -> str:
        """A new record of one verification (see VERIFICATION_NAME): ``health`` reads verdicts from one listing."""
        stamp = when.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return (f"{self.verifications_prefix}{stamp}-{backup_id}-{secrets.token_hex(3)}-"
                f"{'passed' if passed else 'failed'}.json")

    @property
    def drills_prefix(self) -> str:
        return f"{self.root}audit/drills/"

    def drill_prefix(self, drill_id: str) -> str:
        """The reports of one drill: ``history.png``, ``report.md`` and ``report.json`` (written last)."""
        return f"{self.drills_prefix}{drill_id}/"

    # -- keys of the erasure register (written once, encrypted like backups) --------------------------
    @property
    def erasures_prefix(self) -> str:
        return f"{self.root}erasures/"

    def erasure_key(self, erasure_id: str) -> str:
        if not ERASURE_ID.match(erasure_id):
            raise NotFoundError(f"{erasure_id!r} is not an erasure id", hint="see 'pg-backup erasure list'")
        return f"{self.erasures_prefix}{erasure_id}{ERASURE_SUFFIX}"

    def erasure_ids(self) -> List[str]:
        """Every recorded erasure, oldest first (replay order); objects of any other name are not records."""
        ids = []
        for info in self.storage.list(self.erasures_prefix):
            name = info.key[len(self.erasures_prefix):]
            if name.endswith(ERASURE_SUFFIX) and ERASURE_ID.match(name[:-len(ERASURE_SUFFIX)]):
                ids.append(name[:-len(ERASURE_SUFFIX)])
        return sorted(ids)

    def erasure_through(self, started: dt.datetime) -> Optional[str]:
        """The newest erasure recorded before ``started``: a record is written after its statements
        committed, so a backup that started later contains it (and every older one)."""
        u = started.astimezone(dt.timezone.utc)
        stamp = f"{u:%Y%m%dT%H%M%S}.{u.microsecond:06d}Z"
        before = [i for i in self.erasure_ids() if i.split("-", 1)[0] < stamp]
        return before[-1] if before else None

    @property
    def location(self) -> str:
        return f"{self.storage.location.rstrip('/')}/{self.root}"

    # -- catalog -----------------------------------------------------------------------------------
    def _backup_objects(self) -> Dict[str, List[ObjectInfo]]:
        grouped: Dict[str, List[ObjectInfo]] = {}
        prefix = f"{self.root}backups/"
        for info in self.storage.list(prefix):
            rest = info.key[len(prefix):]
            backup_id, _, _name = rest.partition("/")
            grouped.setdefault(backup_id, []).append(info)
        return grouped

    def manifests(self) -> List[Manifest]:
        """Every committed backup, oldest first."""
        result = []
        for backup_id, objects in sorted(self._backup_objects().items()):
            if any(o.key.endswith("/" + MANIFEST_NAME) for o in objects):
                signed = any(o.key.endswith("/" + MANIFEST_NAME + SIGNATURE_SUFFIX) for o in objects)
                try:
                    result.append(self.load_manifest(backup_id, signed=signed))
                except SignatureError as exc:   # forged or unsigned: never a candidate, never a listing's end
                    self.refused[backup_id] = str(exc)
        result.sort(key=lambda m: (m.started_at, m.backup_id))
        return result

    def load_manifest(self, backup_id: str, signed: bool = True) -> Manifest:
        """``signed`` False: the caller's listing shows no ``.sig`` beside it, so none is fetched."""
        if "/" in backup_id or not backup_id:
            raise NotFoundError(f"{backup_id!r} is not a backup id", hint="see 'pg-backup list'")
        key = self.manifest_key(backup_id)
        try:
            data = self.storage.get_bytes(key)
        except NotFoundError:
            raise NotFoundError(f"backup {backup_id} does not exist in {self.location}",
                                hint="see 'pg-backup list' for the backups there are") from None
        signatures = self._signatures()
        if signatures is not None:
            signature: Optional[bytes] = None
            try:
                if signed:
                    signature = self.storage.get_bytes(self.manifest_signature_key(backup_id))
            except NotFoundError:
                signature = None
            signatures.verify_detached(data, signature, f"manifest {key}")
        manifest = Manifest.from_json(data, source=f"manifest of {backup_id}")
        if manifest.backup_id != backup_id:
            raise IntegrityError(f"manifest at {key} names backup {manifest.backup_id}")
        if signatures is not None and manifest.cluster != self.cluster:
            raise SignatureError(f"manifest {key} is a backup of cluster {manifest.cluster!r}, not {self.cluster!r}: "
                                 f"refusing a backup moved from another cluster's prefix")
        for obj in manifest.objects:  # every reader of this backup reads the versions the backup wrote
            self.storage.pin_version(self.object_key(backup_id, obj.name), obj.version_id)
        return manifest

    def leftovers(self) -> List[Leftover]:
        """Backup directories that have objects but no manifest."""
        result = []
        for backup_id, objects in sorted(self._backup_objects().items()):
            if any(o.key.endswith("/" + MANIFEST_NAME) for o in objects):
                continue
            left = Leftover(backup_id, [o.key for o in objects], max(o.modified for o in objects),
                            sum(o.size for o in objects))
            result.append(left)
        return result

    def incomplete_uploads(self) -> Iterator[IncompleteUpload]:
        return self.storage.list_incomplete(self.root)

    def exists(self, backup_id: str) -> bool:
        return any(True for _ in self.storage.list(self.backup_prefix(backup_id)))

    # -- writes ------------------------------------------------------------------------------------
    def commit_manifest(self, manifest: Manifest, options: PutOptions) -> None:
        """Write the manifest, never over an existing one: the last step of every backup.

        It claims the erasures the backup contains (``extra["erasure_through"]``: docs/erasure.md)."""
        manifest.extra.setdefault("erasure_through", self.erasure_through(manifest.started))
        signatures = self._signatures()
        signer = signatures.own_fingerprint() if signatures is not None else None
        if signatures is not None and signer:
            manifest.extra["signer"] = signer
            signature = signatures.sign_detached(manifest.to_json(), f"manifest of {manifest.backup_id}") or b""
            try:
                self.storage.put_bytes(self.manifest_signature_key(manifest.backup_id), signature,
                                       PutOptions(storage_class=None, tags=options.tags,
                                                  content_type="application/pgp-signature"), overwrite=False)
            except FileExistsError:
                raise IntegrityError(f"backup {manifest.backup_id} already has a manifest signature; refusing to "
                                     f"overwrite it") from None
        try:
            self.storage.put_bytes(self.manifest_key(manifest.backup_id), manifest.to_json(),
                                   PutOptions(storage_class=None, tags=options.tags,
                                              content_type="application/json"), overwrite=False)
        except FileExistsError:
            raise IntegrityError(f"backup {manifest.backup_id} already has a manifest; refusing to overwrite it") from None

    # -- signed JSON records: archive.json, conflicts, audit, verifications, drill reports -----------
    @property
    def verifies(self) -> bool:
        """Signing keys are configured: readers judge the signatures of the records they read."""
        return self._signatures() is not None

    @property
    def signs(self) -> bool:
        """This host holds the cluster's signing key: records it writes are signed (docs/signing.md)."""
        signatures = self._signatures()
        return bool(signatures is not None and signatures.own_fingerprint())

    def put_signed(self, key: str, data: bytes, options: PutOptions, *, signature_first: bool = True,
                   operational: bool = False) -> None:
        """Store a plain-JSON record create-only, after its detached signature ``<key>.sig`` (also
        create-only: a record is never without its signature). Unsigned without a signing key.
        FileExistsError when either exists. ``operational`` (audit, verification and drill records): a
        restore host signs it with its records-only key (docs/signing.md).

        ``signature_first=False`` (archive.json): the record first, then its signature. A crash between
        the two then leaves an unsigned record the next writer adopts (signs), where the other order
        would leave a signature that blocks the record's key for ever (nothing may be overwritten)."""
        if not signature_first:
            self.storage.put_bytes(key, data, options, overwrite=False)
            self.sign_existing(key, data, options, operational=operational)
            return
        self.sign_existing(key, data, options, operational=operational)
        self.storage.put_bytes(key, data, options, overwrite=False)

    def sign_existing(self, key: str, data: bytes, options: Optional[PutOptions] = None, *,
                      operational: bool = False) -> None:
        """Write ``<key>.sig`` for ``data`` create-only (nothing without a signing key). Also how a record
        written before signing was enabled gets its signature without being rewritten (archive.json)."""
        signatures = self._signatures()
        signature = signatures.sign_detached(data, key, operational) if signatures is not None else None
        if signature:
            self.storage.put_bytes(key + SIGNATURE_SUFFIX, signature,
                                   PutOptions(tags=options.tags if options else {},
                                              content_type="application/pgp-signature"), overwrite=False)

    def record_signer(self, key: str, data: bytes, what: str = "", *, operational: bool = False) -> Optional[str]:
        """The trusted signer of record ``key`` holding ``data`` (None: signing not configured, or an
        unsigned record admitted because signing is not required). SignatureError (exit 4) naming the
        object and the signer for a record without a trusted signature. ``operational`` (audit,
        verification and drill records): records-only keys are trusted too; never for archive.json or
        WAL conflict records, which decide what a restore replays."""
        signatures = self._signatures()
        if signatures is None:
            return None
        try:
            signature: Optional[bytes] = self.storage.get_bytes(key + SIGNATURE_SUFFIX)
        except NotFoundError:
            signature = None
        return signatures.verify_detached(data, signature, what or key, operational)

    def read_signed(self, key: str, what: str = "", *, operational: bool = False) -> bytes:
        """A record's bytes once its signature is judged trusted (see :meth:`record_signer`)."""
        data = self.storage.get_bytes(key)
        self.record_signer(key, data, what, operational=operational)
        return data

    def delete_backup(self, manifest_or_id: str, keys: Optional[List[str]] = None) -> None:
        """Remove the manifest first, so a half-deleted backup is never mistaken for a complete one."""
        backup_id = manifest_or_id
        self.storage.delete([self.manifest_key(backup_id)])
        rest = keys if keys is not None else [o.key for o in self.storage.list(self.backup_prefix(backup_id))]
        self.storage.delete([k for k in rest if not k.endswith("/" + MANIFEST_NAME)])
