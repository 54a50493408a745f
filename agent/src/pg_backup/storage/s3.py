"""S3-compatible object storage through boto3 (AWS, MinIO, Ceph RGW, ... via ``endpoint_url``).

- Bounded memory: streams are cut into parts of ``part_size_mib``; at most ``max_concurrency``
  parts are in flight, so memory is about part_size × (max_concurrency + 1) whatever the size.
- Integrity in transit: Content-MD5 on every PUT and part, so the server rejects a damaged body.
  boto3 ≥ 1.36 would add CRC32 trailers by default, which many non-AWS stores reject; checksums
  are therefore computed "when required" only, and MD5 is ours.
- Outages: every request is retried through an outage of up to ``outage_tolerance_seconds``
  (:mod:`.outage`); a multipart upload resumes with the part that failed (:mod:`.multipart`), a read
  resumes at the offset reached, a TLS certificate problem fails at once.
- Atomicity: an object exists only once complete. A failed multipart upload is aborted, except when
  the store stayed unreachable: then it is left for ``prune``.
- Archived classes (GLACIER, DEEP_ARCHIVE) are retrieved by the agent itself (``make_readable``).
"""
from __future__ import annotations

import base64
import contextlib
import datetime as dt
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

from ..config import S3Settings
from ..errors import NotFoundError, PgBackupError, StorageError
from .base import IncompleteUpload, ObjectInfo, ProgressFn, PutOptions, Storage
from .multipart import MAX_PARTS, MIB, MultipartUpload, md5_b64, part_size_for  # noqa: F401 - MAX_PARTS re-exported
from .outage import OutageExceeded, OutageWindow, StorageUnreachable, certificate_problem, is_transient

ARCHIVED_CLASSES = ("GLACIER", "DEEP_ARCHIVE")


def tagging(tags: Dict[str, str]) -> str:
    return urllib.parse.urlencode(sorted(tags.items()))


def join_key(prefix: str, key: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key


class S3Storage(Storage):
    def __init__(self, settings: S3Settings, prefix: str = "", warn: Optional[Callable[[str], None]] = None):
        self.settings = settings
        self.prefix = prefix.strip("/")
        self.bucket = settings.bucket or ""
        endpoint = settings.endpoint_url or "AWS"
        self.location = f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''} ({endpoint})"
        self._client: Any = None
        self._lock = threading.Lock()
        self._warn = warn
        self.window = OutageWindow(settings.outage_tolerance_seconds, endpoint, warn)
        #: False once the store answered a conditional write (If-None-Match) with NotImplemented.
        self._conditional_writes = True

    def for_archive_command(self) -> None:
        self.window = OutageWindow(self.settings.wal_push_outage_tolerance_seconds, self.window.endpoint, self._warn,
                                   "repository.s3.wal_push_outage_tolerance_seconds")

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
        if not s.verify_tls:
            if self._warn is not None:
                self._warn(f"repository.s3.verify_tls is false: the certificate of {s.endpoint_url or 'AWS'} is "
                           f"not checked, so anyone on the network path can read and alter storage traffic")
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # said once above, not per request
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
        waited = ""
        try:
            try:
                yield
            except OutageExceeded as outage:
                waited = f" for {outage.waited:.0f} s"
                raise outage.last from None
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
            raise StorageError(f"{action} {where} failed at {endpoint}{waited}: {code} "
                               f"{err.get('Message', '')}".rstrip()) from None
        except bx.NoCredentialsError:
            raise StorageError(f"no S3 credentials for {endpoint}",
                               hint="set repository.s3.credentials_file or give the host an IAM role") from None
        except bx.SSLError as exc:
            problem = certificate_problem(exc)
            if problem is None:
                raise StorageUnreachable(f"storage unreachable{waited}: {action} {where} at {endpoint}: TLS connection "
                                   f"failed", hint="check the network and the store") from None
            raise StorageError(f"TLS certificate of {endpoint} not trusted: {problem}",
                               hint="set repository.s3.ca_bundle to the CA that signed the endpoint's certificate "
                                    "(and check the host name in endpoint_url)") from None
        except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                bx.ConnectionClosedError, bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError) as exc:
            inner = getattr(exc, "kwargs", {}).get("error")
            if isinstance(inner, PgBackupError):  # e.g. Interrupted by a signal inside the HTTP client
                raise inner from None
            raise StorageUnreachable(f"storage unreachable{waited}: {action} {where} at {endpoint}: "
                                     f"{exc.__class__.__name__}",
                                     hint="check repository.s3.endpoint_url, the network and the store "
                                          "(repository.s3.outage_tolerance_seconds: how long an outage is waited out)"
                                     ) from None
        except bx.BotoCoreError as exc:
            inner = getattr(exc, "kwargs", {}).get("error")
            if isinstance(inner, PgBackupError):  # e.g. Interrupted by a signal inside the HTTP client
                raise inner from None
            raise StorageError(f"{action} {where} failed at {endpoint}: {exc}") from None

    def _call(self, action: str, key: Optional[str], request: Callable[[], Any]) -> Any:
        """One storage request, retried through an outage of up to outage_tolerance_seconds."""
        with self._errors(action, key):
            return self.window.call(request, f"{action} {key or self.bucket}")

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
        iterator = iter(chunks)
        # Chunks are collected in a list and joined once per part: one copy per byte, and a part
        # may exceed its nominal size by less than one chunk (S3 only sets a lower bound).
        held: List[bytes] = []
        held_size = 0
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
        return MultipartUpload(self, key, options, overwrite).run(held, iterator)

    def etag_of(self, key: str) -> Optional[str]:
        """The stored object's ETag, or None if there is none."""
        from botocore.exceptions import ClientError

        try:
            return self.window.call(lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key)),
                                    f"inspecting {key}").get("ETag")
        except ClientError:
            return None

    def _conditional(self, attempt: Callable[[], Any], key: str, unconditional: Callable[[], Any], *,
                     expected_etag: Optional[str] = None) -> None:
        """Run a create-if-absent request; FileExistsError if the key exists. A store without
        conditional writes (NotImplemented) is remembered and served by check-then-write.
        ``expected_etag``: what the object has if this very write created it -- a write whose answer was
        lost and that was sent again finds its own object there, which is success, not a conflict."""
        from botocore.exceptions import ClientError

        try:
            attempt()
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                if expected_etag is not None and self.etag_of(key) == expected_etag:
                    return
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
        md5 = content_md5 or md5_b64(data)
        args = dict(Bucket=self.bucket, Key=self._key(key), Body=data, ContentMD5=md5, **self._put_args(options))

        def put(**extra: Any) -> Any:
            return self.window.call(lambda: self.client.put_object(**extra, **args), f"writing {key}")

        with self._errors("writing", key):
            if overwrite:
                put()
            elif not self._conditional_writes:
                # The store does not support conditional writes: check, then write.
                if self.head(key) is not None:
                    raise FileExistsError(key)
                put()
            else:
                self._conditional(lambda: put(IfNoneMatch="*"), key, put,
                                  expected_etag=f'"{base64.b64decode(md5).hex()}"')

    # -- reads ---------------------------------------------------------------------------------
    def iter_chunks(self, key: str, chunk_size: int = MIB) -> Iterator[bytes]:
        """The object's bytes; a read cut by an outage resumes where it stopped (a ranged GET pinned to
        the object's ETag, so a replaced object is never spliced onto the old one's beginning)."""
        full = self._key(key)
        offset = 0
        etag: Optional[str] = None
        failed_at: Optional[float] = None
        while True:
            body = self._open_body(key, full, offset, etag)
            etag = etag or body[1]
            try:
                while True:
                    try:
                        block = body[0].read(chunk_size)
                    except Exception as exc:  # noqa: BLE001 - classified below
                        if not is_transient(exc):
                            with self._errors("reading", key):
                                raise
                        now = time.monotonic()
                        failed_at = failed_at or now
                        if now - failed_at >= self.window.seconds:
                            with self._errors("reading", key):
                                raise OutageExceeded(now - failed_at, exc) from None
                        time.sleep(1)
                        break  # open again at ``offset``
                    if not block:
                        return
                    failed_at = None
                    offset += len(block)
                    yield block
            finally:
                body[0].close()

    def _open_body(self, key: str, full: str, offset: int, etag: Optional[str]) -> Any:
        extra: Dict[str, Any] = {"Range": f"bytes={offset}-", "IfMatch": etag} if offset else {}
        with self._errors("reading", key):
            try:
                response = self.window.call(lambda: self.client.get_object(Bucket=self.bucket, Key=full, **extra),
                                            f"reading {key}")
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code == "InvalidObjectState":
                    raise StorageError(f"s3://{self.bucket}/{full} is in an archived storage class and "
                                       f"not retrieved yet", hint="restore and verify retrieve it automatically") from None
                raise
        return response["Body"], response.get("ETag")

    def head(self, key: str) -> Optional[ObjectInfo]:
        from botocore.exceptions import ClientError

        with self._errors("inspecting", key):
            try:
                h = self.window.call(lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key)),
                                     f"inspecting {key}")
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
        def listing() -> List[ObjectInfo]:
            found: List[ObjectInfo] = []  # a listing cut by an outage starts again
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                               Prefix=self._key(prefix)):
                for o in page.get("Contents", []):
                    found.append(ObjectInfo(self._rel(o["Key"]), o["Size"], o["LastModified"],
                                            o.get("StorageClass") or "STANDARD"))
            return found

        found = self._call("listing", prefix, listing)
        found.sort(key=lambda o: o.key)
        return iter(found)

    def delete(self, keys: List[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            response = self._call("deleting from", "", lambda: self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True}))
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise StorageError(f"cannot delete s3://{self.bucket}/{first.get('Key')}: {first.get('Code')} "
                                   f"({len(errors)} object(s) not deleted)",
                                   hint="the credentials may lack s3:DeleteObject (prune needs the pruner policy)")

    def list_incomplete(self, prefix: str) -> Iterator[IncompleteUpload]:
        def listing() -> List[IncompleteUpload]:
            found: List[IncompleteUpload] = []
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket,
                                                                                      Prefix=self._key(prefix)):
                for u in page.get("Uploads", []):
                    found.append(IncompleteUpload(self._rel(u["Key"]), u["Initiated"], u["UploadId"]))
            return found

        return iter(self._call("listing uploads under", prefix, listing))

    def abort_incomplete(self, upload: IncompleteUpload) -> None:
        from botocore.exceptions import ClientError

        with self._errors("aborting upload of", upload.key):
            try:
                self.window.call(lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self._key(upload.key), UploadId=upload.upload_id),
                    f"aborting upload of {upload.key}")
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
                        self.window.call(lambda: self.client.restore_object(
                            Bucket=self.bucket, Key=self._key(key), RestoreRequest={
                                "Days": s.restore_days, "GlacierJobParameters": {"Tier": s.restore_tier}}),
                            f"requesting retrieval of {key}")
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

    def check(self, *, wait: bool = True) -> Dict[str, object]:
        if wait:
            self._call("reaching bucket", None, lambda: self.client.head_bucket(Bucket=self.bucket))
        else:
            try:
                with self._errors("reaching bucket", None):
                    self.client.head_bucket(Bucket=self.bucket)
            except StorageUnreachable:
                self.window.mark_down()
                raise
        with self._errors("reaching bucket", None):
            try:
                # AWS answers None for us-east-1; "EU" is the legacy name of eu-west-1.
                location = self.client.get_bucket_location(Bucket=self.bucket).get("LocationConstraint")
                region: Optional[str] = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)
            except Exception:  # some stores do not implement it; reachability is what matters here
                region = None
        return {"reachable": True, "bucket": self.bucket, "endpoint": self.settings.endpoint_url or "AWS",
                "region": region, "configured_region": self.settings.region,
                "verify_tls": self.settings.verify_tls}
