"""Everything a command needs, built once from the configuration and torn down at the end."""
from __future__ import annotations

import datetime as dt
import os
from typing import Callable, Optional

from .config import Settings
from .crypto import GnuPG
from .errors import UsageError
from .fingerprint_cache import CACHE_NAME as FINGERPRINT_CACHE_NAME, FingerprintCache
from .manifest import utcnow
from .postgres.client import Postgres
from .progress import Progress
from .repository import Repository
from .signing import Signatures
from .signing_cache import CACHE_NAME, VerdictCache
from .storage import Storage, open_storage
from .storage.base import PutOptions
from .wal.archive import WalArchive


class Context:
    def __init__(self, settings: Settings, progress: Optional[Progress] = None,
                 clock: Callable[[], dt.datetime] = utcnow, duty: Optional[str] = None):
        self.settings = settings
        #: Whose S3 credentials this command uses (writer, pruner, restorer; None: any, catalog reads).
        self.duty = duty
        self.progress = progress or Progress(quiet=True)
        self.clock = clock
        self._storage: Optional[Storage] = None
        self._repo: Optional[Repository] = None
        self._gpg: Optional[GnuPG] = None
        self._pg: Optional[Postgres] = None
        self._wal_archive: Optional[WalArchive] = None

    @property
    def cluster(self) -> str:
        return self.settings.cluster or ""

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = open_storage(self.settings, warn=self.progress.warn, duty=self.duty)
        return self._storage

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            self._repo = Repository(self.storage, self.cluster, signatures=self._signatures)
        return self._repo

    def _signatures(self) -> Optional[Signatures]:
        """The cluster's signing keys, or None where none is configured (no GnuPG home is made for it)."""
        sign = self.settings.signing
        return self.gpg.signatures if (sign.secret_key_file or sign.trusted_public_key_files) else None

    @property
    def wal_archive(self) -> WalArchive:
        """The cluster's WAL archive (``<cluster>/wal/``), one per context: archive.json is read once."""
        if self._wal_archive is None:
            self._wal_archive = WalArchive(self.repo)
        return self._wal_archive

    @property
    def gpg(self) -> GnuPG:
        if self._gpg is None:
            self._gpg = GnuPG(self.settings.encryption, self.settings.signing)
            self._gpg.signatures.verdict_cache = VerdictCache(os.path.join(self.settings.paths.state_dir, CACHE_NAME))
            self._gpg.fingerprint_cache = FingerprintCache(os.path.join(self.settings.paths.state_dir,
                                                                       FINGERPRINT_CACHE_NAME))
        return self._gpg

    @property
    def pg(self) -> Postgres:
        if self._pg is None:
            self._pg = Postgres(self.settings.postgres)
        return self._pg

    def scratch_root(self) -> str:
        """The scratch directory of verifications and drills (verify.scratch_dir), created 0700 if missing;
        one that this user cannot create is a usage error naming the setting."""
        root = self.settings.scratch_path
        try:
            os.makedirs(root, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the scratch directory {root}: {exc.strerror}",
                             hint="set verify.scratch_dir to a directory this user may create") from None
        return root

    def put_options(self, tier: str, kind: str) -> PutOptions:
        """Storage class and tags for a tier's data objects (tags drive the bucket's lifecycle rules)."""
        return PutOptions(storage_class=self.settings.repository.storage_class_for(tier),
                          tags={"tier": tier, "cluster": self.cluster, "kind": kind})

    def close(self) -> None:
        if self._gpg is not None:
            if self._gpg.signatures.verdict_cache is not None:
                self._gpg.signatures.verdict_cache.flush()     # puts are batched: write them once
            self._gpg.close()
            self._gpg = None
