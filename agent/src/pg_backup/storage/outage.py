"""Riding out storage outages by time rather than by luck.

botocore's own retries stay on (``standard`` mode, ``repository.s3.max_attempts``): they absorb a
throttled or failed request within a second or two. They cannot state a tolerance in time:
``standard`` mode sleeps ``random() × 2^n`` seconds (capped at 20 s) between attempts, so ten attempts
cover anything from a few seconds to about a minute depending on the dice (with 10 attempts a 4 s cut
killed one backup in five), and its retry quota (500 tokens per client, 10 per connection error)
switches retrying off altogether during a longer outage of several parallel part uploads. Neither is
configurable in botocore, so this small loop wraps each storage request: a failure that means "the
endpoint is not answering" (connection refused, reset or cut, a timeout, a 5xx or throttling answer
after the client's own attempts) is retried with capped exponential backoff until
``outage_tolerance_seconds`` have passed since the request first failed. A refusal (403, 404, a
precondition) or a TLS certificate problem is never retried here: waiting does not change it.

Each request is idempotent as the callers use it: a part is re-sent with the same bytes (the caller
keeps them until the part is acknowledged), a conditional create that succeeded before its answer was
lost is recognised by its ETag (see ``S3Storage``), reads resume at the offset reached.
"""
from __future__ import annotations

import ssl
import threading
import time
from typing import Callable, Optional, TypeVar

from ..errors import PgBackupError, StorageError

T = TypeVar("T")


class StorageUnreachable(StorageError):
    """The store did not answer (within the outage window, if one was given). Exit code 5 as every
    StorageError; the type tells a multipart upload not to wait again just to abort itself."""

#: Backoff between attempts: short enough that the end of an outage is noticed within seconds.
FIRST_DELAY = 0.5
MAX_DELAY = 4.0
#: S3 error codes worth waiting out (besides every 5xx status).
TRANSIENT_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                             "InternalError", "ServiceUnavailable", "IncompleteBody", "BadDigest",
                             "RequestTimeoutException", "PriorRequestNotComplete"})


def certificate_problem(exc: BaseException) -> Optional[str]:
    """The certificate problem behind a TLS failure (unknown CA, wrong host name, expired, ...), or None
    when ``exc`` is not one: a handshake cut by the network is an outage, not a certificate problem."""
    seen = 0
    cur: Optional[BaseException] = exc
    while cur is not None and seen < 10:
        if isinstance(cur, ssl.SSLCertVerificationError):
            return cur.verify_message or str(cur)
        if type(cur).__name__ == "CertificateError":  # urllib3's own host name check
            return str(cur)
        text = str(cur)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            detail = text.split("certificate verify failed:", 1)[-1].split("(_ssl.c", 1)[0]
            return detail.strip(" :)'\"") or "certificate verify failed"
        inner = [a for a in getattr(cur, "args", ()) if isinstance(a, BaseException)]
        cur = (cur.__cause__ or cur.__context__ or (getattr(cur, "kwargs", {}) or {}).get("error")
               or (inner[0] if inner else None))
        seen += 1
    return None


def is_transient(exc: BaseException) -> bool:
    """True for failures an outage explains and time may cure."""
    from botocore import exceptions as bx

    inner = (getattr(exc, "kwargs", None) or {}).get("error")
    if isinstance(inner, (PgBackupError, KeyboardInterrupt)):   # a signal arrived inside the HTTP client
        return False
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return err.get("Code") in TRANSIENT_CODES or status >= 500
    if isinstance(exc, bx.SSLError):
        return certificate_problem(exc) is None
    return isinstance(exc, (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError))


class OutageWindow:
    """Retries a request for up to ``seconds`` after it first failed (0: fail at the first outage).
    ``warn`` is called once per outage (not per attempt), so a run shows that it is waiting."""

    def __init__(self, seconds: float, endpoint: str, warn: Optional[Callable[[str], None]] = None,
                 setting: str = "repository.s3.outage_tolerance_seconds"):
        self.seconds = float(seconds)
        self.endpoint = endpoint
        self.setting = setting
        self._warn = warn
        self._warned = False
        self._lock = threading.Lock()
        #: Set once an outage outlasted the window: later requests of this run (e.g. the audit record
        #: written after the failure) fail at once instead of waiting a second window; cleared by a success.
        self._exhausted = False

    def call(self, request: Callable[[], T], action: str, *, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> T:
        first_failure: Optional[float] = None
        delay = FIRST_DELAY
        while True:
            try:
                result = request()
                self._exhausted = self._warned = False
                return result
            except Exception as exc:
                if not is_transient(exc):
                    raise
                now = clock()
                if first_failure is None:
                    first_failure = now
                    self._note(action, exc)
                left = first_failure + (0 if self._exhausted else self.seconds) - now
                if left <= 0:
                    self._exhausted = True
                    raise OutageExceeded(now - first_failure, exc) from exc
                sleep(min(delay, left))
                delay = min(delay * 2, MAX_DELAY)

    def mark_down(self) -> None:
        """The store was found unreachable without a window (``check``): later requests fail at once."""
        self._exhausted = True

    def _note(self, action: str, exc: BaseException) -> None:
        with self._lock:
            if self._warned or self._warn is None or self.seconds <= 0 or self._exhausted:
                return
            self._warned = True
        self._warn(f"storage at {self.endpoint} not answering ({action}: {exc.__class__.__name__}); "
                   f"retrying for up to {self.seconds:.0f} s ({self.setting})")


class OutageExceeded(Exception):
    """The window was spent: ``waited`` seconds since the first failure; ``last`` is the last failure."""

    def __init__(self, waited: float, last: BaseException):
        super().__init__(str(last))
        self.waited = waited
        self.last = last
