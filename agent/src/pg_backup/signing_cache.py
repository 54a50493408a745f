"""A local cache of positive signature verdicts, so ``pg-backup list`` does not run one gpg per backup.

Key: SHA-256 of (data, signature, the sorted trusted fingerprints); value: the signer's fingerprint.
Only acceptances are stored: a refusal is recomputed every time. A changed object, signature or trust
set gives another key, so the cache can never vouch for bytes gpg has not judged with today's trust.
A damaged or unreadable file is ignored (treated as empty) and rewritten; the file is 0600.
"""

import hashlib
import json
import os
import tempfile
import threading
from typing import Dict, Iterable, Optional

#: File name under paths.state_dir.
CACHE_NAME = "signature-verdicts.json"
#: Entries kept; the oldest inserted are dropped beyond this.
MAX_ENTRIES = 20000


def verdict_key(data: bytes, signature: bytes, trusted: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for part in (data, signature, "\n".join(sorted(trusted)).encode()):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class VerdictCache:
    """Positive verdicts in one JSON file (``path``); counts ``hits`` and ``misses`` for tests and logs."""

    def __init__(self, path: str):
        self.path = path
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._entries: Optional[Dict[str, str]] = None

    def _load(self) -> Dict[str, str]:
        if self._entries is None:
            entries: Dict[str, str] = {}
            try:
                with open(self.path, encoding="utf-8") as fh:
                    raw = json.load(fh)
                if isinstance(raw, dict) and isinstance(raw.get("verdicts"), dict):
                    entries = {k: v for k, v in raw["verdicts"].items()
                               if isinstance(k, str) and len(k) == 64 and isinstance(v, str) and v}
            except (OSError, ValueError, UnicodeDecodeError):
                entries = {}
            self._entries = entries
        return self._entries

    def get(self, key: str) -> Optional[str]:
        with self._lock:
            found = self._load().get(key)
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
            return found

    def put(self, key: str, signer: str) -> None:
        """Remember an acceptance and write the file (best effort: a read-only state dir only costs speed)."""
        with self._lock:
            entries = self._load()
            entries[key] = signer
            while len(entries) > MAX_ENTRIES:
                entries.pop(next(iter(entries)))
            try:
                self._write(entries)
            except OSError:
                pass

    def _write(self, entries: Dict[str, str]) -> None:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".verdicts-", dir=directory)   # mkstemp creates it 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"version": 1, "verdicts": entries}, fh)
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
