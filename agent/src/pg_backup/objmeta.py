"""Object metadata of the local backend: one extended attribute, or a sidecar file where the
filesystem has no user xattrs. Standard library only: the wal-fetch fast path reads it without
loading the storage package (which imports the configuration schema)."""
from __future__ import annotations

import errno
import json
import os
from typing import Dict, Optional

META_XATTR = "user.pg-backup.meta"
META_SUFFIX = ".pgb-meta"          # sidecar holding an object's metadata where xattrs are unsupported
NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.E2BIG, errno.ENOSPC, errno.EACCES}


def encode(metadata: Dict[str, str]) -> bytes:
    return json.dumps(metadata, sort_keys=True, separators=(",", ":")).encode()


def set_on_fd(fd: int, metadata: Dict[str, str]) -> Optional[bytes]:
    """Attach metadata to an open (temporary) file; returns the encoded metadata when the filesystem
    refuses, for the caller to write as a sidecar."""
    if not metadata:
        return None
    data = encode(metadata)
    try:
        os.setxattr(fd, META_XATTR, data)
        return None
    except OSError as exc:
        if exc.errno in NO_XATTR:
            return data
        raise


def read(path: str) -> Dict[str, str]:
    """The metadata of the object at ``path`` ({} if it has none)."""
    raw: Optional[bytes] = None
    try:
        raw = os.getxattr(path, META_XATTR)
    except OSError:
        try:
            with open(path + META_SUFFIX, "rb") as fh:
                raw = fh.read()
        except OSError:
            return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
