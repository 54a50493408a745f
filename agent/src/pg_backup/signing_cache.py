"""A local cache of positive signature verdicts, so ``pg-backup list`` does not run one gpg per backup.

Key: SHA-256 of (data, signature, the sorted trusted fingerprints); value: the signer's fingerprint.
Only acceptances are stored: a refusal is recomputed every time. A changed object, signature or trust
set gives another key, so the cache can never vouch for bytes gpg has not judged with today's trust.
A damaged or unreadable file is ignored (treated as empty) and rewritten; the file is 0600.

Writes are batched: ``put`` only marks the cache dirty; the file is rewritten (temp file + ``os.replace``)
by ``flush`` (called when the command's Context closes) and at most every ``FLUSH_INTERVAL`` seconds
during a long run, so a cold ``list`` of thousands of manifests writes the file a handful of times
instead of once per manifest, and a killed command keeps all but the last interval's verdicts.
"""

import hashlib
import json
import os
import tempfile
import threading
import time
from typing import Dict, Iterable, Optional

#: File name under paths.state_dir.
CACHE_NAME = "signature-verdicts.json"
#: Entries kept; the oldest inserted are dropped beyond this.
MAX_ENTRIES = 20000
#: Seconds between two writes while puts keep coming (a killed command loses at most this much work).
FLUSH_INTERVAL = 10.0


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
        self._dirty = False
        self._last_write = time.monotonic()
        #: Number of times the file was written (for tests and logs).
        self.writes = 0

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
        """Remember an acceptance; the file is written by :meth:`flush`, or here if the last write is
        older than ``FLUSH_INTERVAL`` seconds."""
        with self._lock:
            entries = self._load()
            entries[key] = signer
            while len(entries) > MAX_ENTRIES:
                entries.pop(next(iter(entries)))
            self._dirty = True
            if time.monotonic() - self._last_write >= FLUSH_INTERVAL:
                self._flush_locked()

    def flush(self) -> None:
        """Write pending verdicts, if any (best effort: a read-only state dir only costs speed)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._dirty or self._entries is None:
            return
        self._last_write = time.monotonic()
        try:
            self._write(self._entries)
        except OSError:
            return          # stays dirty: the next flush tries again
        self._dirty = False
        self.writes += 1

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
