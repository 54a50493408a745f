"""One streamed S3 multipart upload: parts in parallel, each retried through an outage, the upload
resumed from the parts already stored.

Memory stays bounded: a part's bytes are kept only until the store acknowledged that part (so a retry
re-sends exactly the same bytes, with the same Content-MD5), and at most ``max_concurrency`` parts are
in flight besides the one being filled; the producer (pg_dump, a base backup) waits meanwhile.

No overwrite: CompleteMultipartUpload carries ``If-None-Match: *`` (the parts carry no condition: S3
checks it when the object is created); a key that exists by then fails the upload, which is aborted.

Failure: nothing is committed (the object exists only after CompleteMultipartUpload). When the
producer failed or a signal arrived, the upload is aborted at once (best effort). When storage itself
stayed unreachable beyond the outage window, the upload is left as it is: the store is not answering
anyway, and ``prune`` aborts incomplete uploads older than ``retention.incomplete_grace_hours``.
"""
from __future__ import annotations

import base64
import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, Iterator, List

from ..errors import StorageError
from .base import PutOptions, Stored
from .outage import StorageUnreachable

MAX_PARTS = 10000
MIB = 1 << 20


def part_size_for(part_number: int, base: int) -> int:
    """Part size for 1-based ``part_number``: the configured size for the first 2,000 parts (32 GiB at
    16 MiB), then doubling every 500 parts up to S3's 5 GiB maximum, so a stream of unknown length
    reaches S3's 5 TiB object limit before its 10,000th part. Memory stays at a few base-size parts
    for anything under ~30 GiB stored and grows only with the largest objects."""
    if part_number <= 2000:
        return base
    return min(base << ((part_number - 2001) // 500 + 1), 5 * 1024 * MIB)


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - transfer check, not security


def multipart_etag(parts: List[Dict[str, Any]]) -> str:
    """The ETag S3 gives the completed object: MD5 of the parts' MD5s, '-', the part count."""
    digests = b"".join(bytes.fromhex(p["ETag"].strip('"')) for p in parts)
    return f'"{hashlib.md5(digests).hexdigest()}-{len(parts)}"'  # noqa: S324


class _Abandoned(Exception):
    """Raised inside a part's retry loop once the upload as a whole has failed (not retried)."""


class MultipartUpload:
    """``storage`` is the S3Storage writing the object (its client, outage window and error mapping)."""

    def __init__(self, storage: Any, key: str, options: PutOptions, overwrite: bool):
        self.storage = storage
        self.key = key
        self.full = storage._key(key)
        self.options = options
        self.overwrite = overwrite
        self.upload_id = ""
        self.parts: List[Dict[str, Any]] = []
        self._pending: List[Future] = []
        self._stop = threading.Event()
        self._part_number = 1
        self.total = 0
        self.version_id: Any = None

    def run(self, first: List[bytes], rest: Iterator[bytes]) -> Stored:
        """Upload the chunks already held (``first``, at least one part's worth) and everything after."""
        st = self.storage
        base = st.settings.part_size_mib * MIB
        args = st._put_args(self.options)
        self.upload_id = st._call("starting upload of", self.key, lambda: st.client.create_multipart_upload(
            Bucket=st.bucket, Key=self.full, **args)["UploadId"])
        pool = ThreadPoolExecutor(max_workers=st.settings.max_concurrency, thread_name_prefix="s3-part")
        held = list(first)
        first.clear()
        try:
            self._submit(pool, held)
            held_size = 0
            for chunk in rest:
                held.append(chunk)
                held_size += len(chunk)
                if held_size >= part_size_for(self._part_number, base):
                    self._submit(pool, held)
                    held_size = 0
            if held:
                self._submit(pool, held)
            for f in self._pending:
                self.parts.append(f.result())
            self.parts.sort(key=lambda p: p["PartNumber"])
            self._complete()
        except BaseException as exc:
            self._stop.set()
            for f in self._pending:
                f.cancel()
            pool.shutdown(wait=True)
            if not _unreachable(exc):
                self._abort()
            raise
        pool.shutdown(wait=True)
        return Stored(self.total, self.version_id)

    def _submit(self, pool: ThreadPoolExecutor, held: List[bytes]) -> None:
        if self._part_number > MAX_PARTS:
            raise StorageError(f"{self.full}: more than {MAX_PARTS} parts; raise repository.s3.part_size_mib")
        data = b"".join(held)
        held.clear()  # the chunks go before we may wait for a free upload slot: one copy per byte
        # Back-pressure: never more than max_concurrency parts in memory besides the one being filled.
        while len([f for f in self._pending if not f.done()]) >= self.storage.settings.max_concurrency:
            next(f for f in self._pending if not f.done()).result()
        for f in [f for f in self._pending if f.done()]:
            self.parts.append(f.result())
            self._pending.remove(f)
        self._pending.append(pool.submit(self._send, self._part_number, data))
        self.total += len(data)
        self._part_number += 1

    def _send(self, number: int, data: bytes) -> Dict[str, Any]:
        st = self.storage
        digest = md5_b64(data)

        def request() -> str:
            if self._stop.is_set():
                raise _Abandoned()
            return st.client.upload_part(Bucket=st.bucket, Key=self.full, UploadId=self.upload_id,
                                         PartNumber=number, Body=data, ContentMD5=digest)["ETag"]

        etag = st._call(f"uploading part {number} of", self.key, request)
        return {"PartNumber": number, "ETag": etag}

    def _complete(self) -> None:
        st = self.storage
        complete = dict(Bucket=st.bucket, Key=self.full, UploadId=self.upload_id,
                        MultipartUpload={"Parts": self.parts})
        expected = multipart_etag(self.parts)

        def request(**extra: Any) -> Any:
            # An answer lost after the store completed the upload makes the retry fail with NoSuchUpload
            # (the upload is gone, the object is there): the object's ETag tells whether it is ours.
            from botocore.exceptions import ClientError

            try:
                return st.client.complete_multipart_upload(**extra, **complete)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                    found = st.current(self.key)
                    if found is not None and found.get("ETag") == expected:
                        return found
                raise

        with st._errors("completing upload of", self.key):
            if self.overwrite or not st._conditional_writes:
                answer = st.window.call(request, f"completing upload of {self.key}")
            else:
                answer = st._conditional(lambda: st.window.call(lambda: request(IfNoneMatch="*"),
                                                                f"completing upload of {self.key}"),
                                         self.key, lambda: st.window.call(request, f"completing upload of {self.key}"),
                                         expected_etag=expected)
        self.version_id = st.version_of(answer)

    def _abort(self) -> None:
        st = self.storage
        try:
            st.client.abort_multipart_upload(Bucket=st.bucket, Key=self.full, UploadId=self.upload_id)
        except Exception:  # noqa: BLE001 - best effort: prune removes abandoned uploads after the grace period
            pass


def _unreachable(exc: BaseException) -> bool:
    """The upload failed because the store stayed unreachable (aborting it would only wait again)."""
    return isinstance(exc, StorageUnreachable)
