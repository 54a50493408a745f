"""S3-compatible object storage through boto3 (AWS, MinIO, Ceph RGW, ... via ``endpoint_url``).

- Bounded memory: streams are cut into parts of ``part_size_mib``; at most ``max_concurrency``
  parts are in flight, so memory is about part_size × (max_concurrency + 1) whatever the size.
- Integrity in transit: Content-MD5 on every PUT and part, so the server rejects a damaged body.
  boto3 ≥ 1.36 would add CRC32 trailers by default, which many non-AWS stores reject; checksums
  are therefore computed "when required" only, and MD5 is ours.
- Atomicity: a multipart upload is aborted on any failure; an object exists only once complete.
- Archived classes (GLACIER, DEEP_ARCHIVE) are retrieved by the agent itself (``make_readable``).
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import threading
import time
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

from ..config import S3Settings
from ..errors import NotFoundError, PgBackupError, StorageError
from .base import IncompleteUpload, ObjectInfo, ProgressFn, PutOptions, Storage

ARCHIVED_CLASSES = ("GLACIER", "DEEP_ARCHIVE")
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


def tagging(tags: Dict[str, str]) -> str:
    return urllib.parse.urlencode(sorted(tags.items()))


def join_key(prefix: str, key: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key


def _md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - transfer check, not security


class S3Storage(Storage):
    def __init__(self, settings: S3Settings, prefix: str = ""):
        self.settings = settings
        self.prefix = prefix.strip("/")
        self.bucket = settings.bucket or ""
        endpoint = settings.endpoint_url or "AWS"
        self.location = f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''} ({endpoint})"
        self._client: Any = None
        self._lock = threading.Lock()
        #: False once the store answered a conditional write (If-None-Match) with NotImplemented.
        self._conditional_writes = True

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        s = self.settings
        session_args: Dict[str, Any] = {}
        if s.credentials_file:
            import botocore.session

            core = botocore.session.Session(profile=s.profile or "default")
            core.set_config_variable("credentials_file", s.credentials_file)
            core.set_config_variable("config_file", "/dev/null")
            session = boto3.session.Session(botocore_session=core)
        else:
            if s.profile:
                session_args["profile_name"] = s.profile
            session = boto3.session.Session(**session_args)
        config = Config(
            region_name=s.region or None,
            retries={"total_max_attempts": s.max_attempts, "mode": "standard"},  # attempts, not retries
            connect_timeout=s.connect_timeout, read_timeout=s.read_timeout,
            s3={"addressing_style": "path" if s.force_path_style else "auto"},
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
            max_pool_connections=max(10, s.max_concurrency + 2),
        )
        verify: Any = s.ca_bundle if (s.verify_tls and s.ca_bundle) else s.verify_tls
        return session.client("s3", endpoint_url=s.endpoint_url or None, config=config, verify=verify)

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    @contextlib.contextmanager
    def _errors(self, action: str, key: Optional[str] = None) -> Iterator[None]:
        """Every boto3 failure becomes one clear StorageError line (never with credentials)."""
        from botocore import exceptions as bx

        where = f"s3://{self.bucket}/{self._key(key) if key is not None else ''}"
        endpoint = self.settings.endpoint_url or "AWS"
        try:
            yield
        except (NotFoundError, StorageError, FileExistsError):
            raise
        except bx.ClientError as exc:
            err = exc.response.get("Error", {})
            code = err.get("Code", "?")
            if code in ("NoSuchKey", "404", "NotFound") and key is not None:
                raise NotFoundError(f"object {where} does not exist") from None
            if code == "NoSuchBucket" or (key is None and code in ("404", "NotFound")):
                raise StorageError(f"bucket {self.bucket} does not exist at {endpoint}",
                                   hint="create it (the bucket role does) or fix repository.s3.bucket") from None
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                raise StorageError(f"{action} {where} refused by {endpoint}: {code}",
                                   hint="check the credentials and the IAM policy of this host") from None
            raise StorageError(f"{action} {where} failed at {endpoint}: {code} {err.get('Message', '')}".rstrip()) from None
        except bx.NoCredentialsError:
            raise StorageError(f"no S3 credentials for {endpoint}",
                               hint="set repository.s3.credentials_file or give the host an IAM role") from None
        except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                bx.ConnectionClosedError, bx.ConnectionError) as exc:
            raise StorageError(f"storage unreachable: {action} {where} at {endpoint}: {exc.__class__.__name__}",
                               hint="check repository.s3.endpoint_url, the network and the store") from None
        except bx.BotoCoreError as exc:
            inner = getattr(exc, "kwargs", {}).get("error")
            if isinstance(inner, PgBackupError):  # e.g. Interrupted by a signal inside the HTTP client
                raise inner from None
            raise StorageError(f"{action} {where} failed at {endpoint}: {exc}") from None

    def _put_args(self, options: PutOptions) -> Dict[str, Any]:
        args: Dict[str, Any] = {"ContentType": options.content_type}
        if options.storage_class and options.storage_class != "STANDARD":
            args["StorageClass"] = options.storage_class
        if options.tags:
            args["Tagging"] = tagging(options.tags)
        if options.metadata:
            args["Metadata"] = dict(options.metadata)
        if self.settings.sse == "AES256":
            args["ServerSideEncryption"] = "AES256"
        elif self.settings.sse == "aws:kms":
            args["ServerSideEncryption"] = "aws:kms"
            if self.settings.sse_kms_key_id:
                args["SSEKMSKeyId"] = self.settings.sse_kms_key_id
        return args

    # -- writes --------------------------------------------------------------------------------
    def put_stream(self, key: str, chunks: Iterable[bytes], options: PutOptions = PutOptions(), *,
                   overwrite: bool = True) -> int:
        base = self.settings.part_size_mib * MIB
        full = self._key(key)
        iterator = iter(chunks)
        # Chunks are collected in a list and joined once per part: one copy per byte, and a part
        # may exceed its nominal size by less than one chunk (S3 only sets a lower bound).
        held: List[bytes] = []
        held_size = 0
        part_number = 1
        for chunk in iterator:
            held.append(chunk)
            held_size += len(chunk)
            if held_size >= part_size_for(1, base):
                break
        else:
            data = b"".join(held)
            self.put_bytes(key, data, options, overwrite=overwrite)
            return len(data)

        if not overwrite and not self._conditional_writes and self.head(key) is not None:
            raise FileExistsError(key)
        with self._errors("starting upload of", key):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=full,
                                                            **self._put_args(options))["UploadId"]
        parts: List[Dict[str, Any]] = []
        pending: List[Future] = []
        total = 0
        pool = ThreadPoolExecutor(max_workers=self.settings.max_concurrency, thread_name_prefix="s3-part")
        try:
            def send(number: int, data: bytes) -> Dict[str, Any]:
                with self._errors(f"uploading part {number} of", key):
                    etag = self.client.upload_part(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                   PartNumber=number, Body=data, ContentMD5=_md5(data))["ETag"]
                return {"PartNumber": number, "ETag": etag}

            def submit(data: bytes) -> None:
                nonlocal part_number, total
                if part_number > MAX_PARTS:
                    raise StorageError(f"{full}: more than {MAX_PARTS} parts; raise repository.s3.part_size_mib")
                # Back-pressure: never more than max_concurrency parts in memory besides the one being filled.
                while len([f for f in pending if not f.done()]) >= self.settings.max_concurrency:
                    next(f for f in pending if not f.done()).result()
                for f in [f for f in pending if f.done()]:
                    parts.append(f.result())
                    pending.remove(f)
                pending.append(pool.submit(send, part_number, data))
                total += len(data)
                part_number += 1

            def flush() -> None:
                nonlocal held_size
                data = b"".join(held)
                held.clear()  # the chunks go before submit() may wait for a free upload slot
                held_size = 0
                submit(data)

            flush()
            for chunk in iterator:
                held.append(chunk)
                held_size += len(chunk)
                if held_size >= part_size_for(part_number, base):
                    flush()
            if held:
                flush()
            for f in pending:
                parts.append(f.result())
            parts.sort(key=lambda p: p["PartNumber"])
            complete = dict(Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts})
            with self._errors("completing upload of", key):
                if overwrite or not self._conditional_writes:
                    self.client.complete_multipart_upload(**complete)
                else:
                    self._conditional(lambda: self.client.complete_multipart_upload(IfNoneMatch="*", **complete),
                                      key, lambda: self.client.complete_multipart_upload(**complete))
        except BaseException:
            for f in pending:
                f.cancel()
            pool.shutdown(wait=True)
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            except Exception:  # best effort: prune removes abandoned uploads after the grace period
                pass
            raise
        pool.shutdown(wait=True)
        return total

    def _conditional(self, attempt: Callable[[], Any], key: str, unconditional: Callable[[], Any]) -> None:
        """Run a create-if-absent request; FileExistsError if the key exists. A store without
        conditional writes (NotImplemented) is remembered and served by check-then-write."""
        from botocore.exceptions import ClientError

        try:
            attempt()
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                raise FileExistsError(key) from None
            if code not in ("NotImplemented", "InvalidArgument", "InvalidRequest") and status != 501:
                raise
        self._conditional_writes = False
        if self.head(key) is not None:
            raise FileExistsError(key)
        unconditional()

    def put_bytes(self, key: str, data: bytes, options: PutOptions = PutOptions(), *,
                  overwrite: bool = True, content_md5: Optional[str] = None) -> None:
        """``content_md5`` (base64) may be passed when the caller already hashed ``data``."""
        args = dict(Bucket=self.bucket, Key=self._key(key), Body=data, ContentMD5=content_md5 or _md5(data),
                    **self._put_args(options))
        with self._errors("writing", key):
            if overwrite:
                self.client.put_object(**args)
            elif not self._conditional_writes:
                # The store does not support conditional writes: check, then write.
                if self.head(key) is not None:
                    raise FileExistsError(key)
                self.client.put_object(**args)
            else:
                self._conditional(lambda: self.client.put_object(IfNoneMatch="*", **args), key,
                                  lambda: self.client.put_object(**args))

    # -- reads ---------------------------------------------------------------------------------
    def iter_chunks(self, key: str, chunk_size: int = MIB) -> Iterator[bytes]:
        with self._errors("reading", key):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code == "InvalidObjectState":
                    raise StorageError(f"s3://{self.bucket}/{self._key(key)} is in an archived storage class and "
                                       f"not retrieved yet", hint="restore and verify retrieve it automatically") from None
                raise
        body = response["Body"]
        try:
            while True:
                with self._errors("reading", key):
                    block = body.read(chunk_size)
                if not block:
                    return
                yield block
        finally:
            body.close()

    def head(self, key: str) -> Optional[ObjectInfo]:
        from botocore.exceptions import ClientError

        with self._errors("inspecting", key):
            try:
                h = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
        storage_class = h.get("StorageClass") or "STANDARD"
        state = None
        if storage_class in ARCHIVED_CLASSES:
            restore = h.get("Restore") or ""
            state = "restoring" if 'ongoing-request="true"' in restore else "restored" if restore else "archived"
        return ObjectInfo(key, h["ContentLength"], h["LastModified"], storage_class, state,
                          metadata=dict(h.get("Metadata") or {}))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        found: List[ObjectInfo] = []
        with self._errors("listing", prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for o in page.get("Contents", []):
                    found.append(ObjectInfo(self._rel(o["Key"]), o["Size"], o["LastModified"],
                                            o.get("StorageClass") or "STANDARD"))
        found.sort(key=lambda o: o.key)
        return iter(found)

    def delete(self, keys: List[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            with self._errors("deleting from", ""):
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True})
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise StorageError(f"cannot delete s3://{self.bucket}/{first.get('Key')}: {first.get('Code')} "
                                   f"({len(errors)} object(s) not deleted)",
                                   hint="the credentials may lack s3:DeleteObject (prune needs the pruner policy)")

    def list_incomplete(self, prefix: str) -> Iterator[IncompleteUpload]:
        found: List[IncompleteUpload] = []
        with self._errors("listing uploads under", prefix):
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for u in page.get("Uploads", []):
                    found.append(IncompleteUpload(self._rel(u["Key"]), u["Initiated"], u["UploadId"]))
        return iter(found)

    def abort_incomplete(self, upload: IncompleteUpload) -> None:
        from botocore.exceptions import ClientError

        with self._errors("aborting upload of", upload.key):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(upload.key),
                                                   UploadId=upload.upload_id)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise

    def make_readable(self, keys: List[str], progress: Optional[ProgressFn] = None) -> None:
        from botocore.exceptions import ClientError

        s = self.settings
        waiting = []
        for key in keys:
            info = self.head(key)
            if info is None or info.archive_state in (None, "restored"):
                continue
            if info.archive_state == "archived":
                with self._errors("requesting retrieval of", key):
                    try:
                        self.client.restore_object(Bucket=self.bucket, Key=self._key(key), RestoreRequest={
                            "Days": s.restore_days, "GlacierJobParameters": {"Tier": s.restore_tier}})
                    except ClientError as exc:
                        if exc.response.get("Error", {}).get("Code") != "RestoreAlreadyInProgress":
                            raise
            waiting.append(key)
        if not waiting:
            return
        deadline = time.monotonic() + s.restore_timeout_hours * 3600
        total = len(waiting)
        while True:
            waiting = [k for k in waiting if (self.head(k) or ObjectInfo(k, 0, dt.datetime.now())).archive_state
                       not in (None, "restored")]
            if progress:
                progress(total - len(waiting), total, f"{s.restore_tier} retrieval from the archive tier")
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise StorageError(f"{len(waiting)} of {total} archived object(s) still not retrieved after "
                                   f"{s.restore_timeout_hours} h", hint="try again later; the retrieval continues")
            time.sleep(s.restore_poll_seconds)

    def check(self) -> Dict[str, object]:
        with self._errors("reaching bucket", None):
            self.client.head_bucket(Bucket=self.bucket)
            try:
                # AWS answers None for us-east-1; "EU" is the legacy name of eu-west-1.
                location = self.client.get_bucket_location(Bucket=self.bucket).get("LocationConstraint")
                region: Optional[str] = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)
            except Exception:  # some stores do not implement it; reachability is what matters here
                region = None
        return {"reachable": True, "bucket": self.bucket, "endpoint": self.settings.endpoint_url or "AWS",
                "region": region, "configured_region": self.settings.region}
