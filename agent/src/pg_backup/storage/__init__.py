"""Storage backends: a local directory or an S3-compatible bucket."""
from __future__ import annotations

from typing import Callable, Optional

from ..config import Settings
from .base import IncompleteUpload, ObjectInfo, PutOptions, Storage


def open_storage(settings: Settings, warn: Optional[Callable[[str], None]] = None) -> Storage:
    """The backend the configuration names, rooted at ``<prefix>/`` (the cluster part is added by Repository).
    ``warn`` receives one-line warnings (TLS verification off, an outage being waited out)."""
    repo = settings.repository
    if repo.type == "local":
        from .local import LocalStorage

        return LocalStorage(repo.path or "", repo.prefix)
    from .s3 import S3Storage

    return S3Storage(repo.s3, repo.prefix, warn)


__all__ = ["IncompleteUpload", "ObjectInfo", "PutOptions", "Storage", "open_storage"]
