"""A local cache of encryption-key fingerprints, so every process does not pay scrypt again.

The passphrase fingerprint (``scrypt:...``) is public: it is written in every manifest. The scrypt
that derives it costs ~0.1-0.2 s of CPU, paid by every backup, wal-push and wal-fetch process.
This cache maps the passphrase file's *identity* (realpath, device, inode, size, mtime and ctime in
nanoseconds) to the fingerprint, so nothing about the passphrase beyond what manifests already show
is stored (never a fast hash of it). Any change to the file (a rewrite changes its ctime) gives
another key, so the fingerprint is computed again. A file changed in the last
:data:`RACY_SECONDS` is not cached (its timestamps could still repeat for other content, as git's
"racily clean" index entries). A damaged or unreadable cache, or one another user could have
written, is ignored (and rewritten); the file is 0600.
"""

import json
import os
import time
from typing import Any, Callable, Dict, Optional, Tuple

from .files import atomic_write

#: File name under paths.state_dir.
CACHE_NAME = "key-fingerprints.json"
#: Entries kept (one per key file ever configured); the oldest inserted are dropped beyond this.
MAX_ENTRIES = 64
#: A file whose ctime is this recent is fingerprinted but not cached.
RACY_SECONDS = 2.0


def file_identity(fd: int, path: str) -> Tuple[str, float]:
    """The cache key of the open file ``fd`` (opened from ``path``) and its ctime in seconds."""
    st = os.fstat(fd)
    key = "|".join(str(v) for v in (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size,
                                    st.st_mtime_ns, st.st_ctime_ns))
    return key, st.st_ctime_ns / 1e9


class FingerprintCache:
    """Fingerprints by file identity in one JSON file (``path``); counts ``hits`` and ``misses``."""

    def __init__(self, path: Optional[str]):
        self.path = path
        self.hits = 0
        self.misses = 0
        self._entries: Optional[Dict[str, str]] = None

    def _load(self) -> Dict[str, str]:
        if self._entries is None:
            entries: Dict[str, str] = {}
            try:
                if self.path:
                    with open(self.path, encoding="utf-8") as fh:
                        st = os.fstat(fh.fileno())
                        # Only a file of ours that nobody else could have written is believed.
                        trusted = st.st_uid == os.geteuid() and not st.st_mode & 0o022
                        raw: Any = json.load(fh) if trusted else {}
                    if isinstance(raw, dict) and isinstance(raw.get("fingerprints"), dict):
                        entries = {k: v for k, v in raw["fingerprints"].items()
                                   if isinstance(k, str) and isinstance(v, str) and v}
            except (OSError, ValueError, UnicodeDecodeError):
                entries = {}
            self._entries = entries
        return self._entries

    def lookup(self, key: str, ctime: float, compute: Callable[[], str],
               valid: Callable[[str], bool] = lambda value: True) -> str:
        """The value cached under ``key`` if ``valid``, else ``compute()`` (stored unless the file is racy)."""
        found = self._load().get(key)
        if found is not None and valid(found):
            self.hits += 1
            return found
        self.misses += 1
        value = compute()
        if self.path and time.time() - ctime >= RACY_SECONDS:
            entries = self._load()
            entries[key] = value
            while len(entries) > MAX_ENTRIES:
                entries.pop(next(iter(entries)))
            try:   # best effort: a read-only state dir only costs speed
                os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
                atomic_write(self.path, json.dumps({"version": 1, "fingerprints": entries}).encode(), mode=0o600)
            except OSError:
                pass
        return value
