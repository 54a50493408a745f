"""Storage backends: a local directory or an S3-compatible bucket."""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from ..config import S3Settings, Settings
from ..errors import ConfigError
from .base import IncompleteUpload, ObjectInfo, PutOptions, Storage


def open_storage(settings: Settings, warn: Optional[Callable[[str], None]] = None,
                 duty: Optional[str] = None) -> Storage:
    """The backend the configuration names, rooted at ``<prefix>/`` (the cluster part is added by Repository).
    ``warn`` receives one-line warnings (TLS verification off, an outage being waited out); ``duty``
    (writer, pruner, restorer; None for catalog reads) picks the S3 credentials file."""
    repo = settings.repository
    if repo.type == "local":
        from .local import LocalStorage

        return LocalStorage(repo.path or "", repo.prefix)
    from .s3 import S3Storage

    s3 = dataclasses.replace(repo.s3, credentials_file=credentials_file_for(repo.s3, duty))
    return S3Storage(s3, repo.prefix, warn)


def credentials_file_for(s3: S3Settings, duty: Optional[str]) -> Optional[str]:
    """The credentials file a command of ``duty`` (writer, pruner, restorer; None: catalog reads, the
    first one set) uses, else repository.s3.credentials_file. With per-duty files configured but none
    for this duty, the host holds no credentials for it: ConfigError (exit 2), not a store's refusal."""
    per_duty = {d: getattr(s3.credentials, d) for d in DUTIES}
    if duty is None:
        return next((f for f in per_duty.values() if f), None) or s3.credentials_file
    chosen = per_duty[duty] or s3.credentials_file
    if chosen is None and any(per_duty.values()):
        held = ", ".join(d for d, f in per_duty.items() if f)
        raise ConfigError(f"repository.s3.credentials.{duty}: not set, and this command needs the {duty} "
                          f"credentials (this configuration holds only: {held})",
                          hint="run it where the duty's credentials are (restores: the collection's playbooks "
                               "deliver them for the job) or set the option")
    return chosen


#: The duties S3 credentials serve (repository.s3.credentials; the bucket role writes a policy per duty).
DUTIES = ("writer", "pruner", "restorer")

__all__ = ["IncompleteUpload", "ObjectInfo", "PutOptions", "Storage", "open_storage"]
