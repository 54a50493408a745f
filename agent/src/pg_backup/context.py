"""Everything a command needs, built once from the configuration and torn down at the end."""
from __future__ import annotations

import datetime as dt
from typing import Callable, Optional

from .config import Settings
from .crypto import GnuPG
from .manifest import utcnow
from .postgres import Postgres
from .progress import Progress
from .repository import Repository
from .storage import Storage, open_storage
from .storage.base import PutOptions


class Context:
    def __init__(self, settings: Settings, progress: Optional[Progress] = None,
                 clock: Callable[[], dt.datetime] = utcnow):
        self.settings = settings
        self.progress = progress or Progress(quiet=True)
        self.clock = clock
        self._storage: Optional[Storage] = None
        self._repo: Optional[Repository] = None
        self._gpg: Optional[GnuPG] = None
        self._pg: Optional[Postgres] = None

    @property
    def cluster(self) -> str:
        return self.settings.cluster or ""

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = open_storage(self.settings)
        return self._storage

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            self._repo = Repository(self.storage, self.cluster)
        return self._repo

    @property
    def gpg(self) -> GnuPG:
        if self._gpg is None:
            self._gpg = GnuPG(self.settings.encryption)
        return self._gpg

    @property
    def pg(self) -> Postgres:
        if self._pg is None:
            self._pg = Postgres(self.settings.postgres)
        return self._pg

    def put_options(self, tier: str, kind: str) -> PutOptions:
        """Storage class and tags for a tier's data objects (tags drive the bucket's lifecycle rules)."""
        storage_class = None
        if self.settings.repository.type == "s3":
            storage_class = getattr(self.settings.repository.s3.storage_class, tier)
        return PutOptions(storage_class=storage_class,
                          tags={"tier": tier, "cluster": self.cluster, "kind": kind})

    def close(self) -> None:
        if self._gpg is not None:
            self._gpg.close()
            self._gpg = None
