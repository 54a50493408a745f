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
- No overwrite: every PutObject and CompleteMultipartUpload carries ``If-None-Match: *`` (the bucket
  role's policies refuse any other); 412 PreconditionFailed becomes ObjectExists (exit 4), and a
  multipart upload refused at completion is aborted, so nothing is committed.
- Versions: a write returns the store's VersionId; a pinned key (``pin_version``) is read at that
  version, and a current version that differs (overwritten, or deleted) is warned about once.
- Archived classes (GLACIER, DEEP_ARCHIVE) are retrieved by the agent itself (``make_readable``).
"""
from __future__ import annotations

import base64
import datetime as dt
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

from ..config import S3Settings
from ..errors import StorageError
from .base import IncompleteUpload, ObjectExists, ObjectInfo, ProgressFn, PutOptions, Storage, Stored
from .multipart import MAX_PARTS, MIB, MultipartUpload, md5_b64, part_size_for  # noqa: F401 - MAX_PARTS re-exported
from .outage import OutageExceeded, OutageWindow, StorageUnreachable, is_transient
from .s3errors import translated

ARCHIVED_CLASSES = ("GLACIER", "DEEP_ARCHIVE")


def tagging(tags: Dict[str, str]) -> str:
    return urllib.parse.urlencode(sorted(tags.items()))


def version_of(answer: Optional[Dict[str, Any]]) -> Optional[str]:
    """The version id of a write's answer; None without versioning. "null" (a bucket whose versioning is
    suspended, or a store that answers it for unversioned buckets) names no version that a later write
    could not replace, so it is not recorded either."""
    version = (answer or {}).get("VersionId")
    return version if version and version != "null" else None


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
        #: key -> the version id a manifest recorded for it (``pin_version``); keys checked for a newer version.
        self._pins: Dict[str, str] = {}
        self._checked: set = set()

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

    def _errors(self, action: str, key: Optional[str] = None) -> Any:
        """A context in which every boto3 failure becomes one clear StorageError line (:mod:`.s3errors`)."""
        return translated(self.bucket, f"s3://{self.bucket}/{self._key(key) if key is not None else ''}",
                          self.settings.endpoint_url or "AWS", action, key)

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
                   overwrite: bool = False) -> Stored:
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
            return self.put_bytes(key, b"".join(held), options, overwrite=overwrite)
        if not overwrite and not self._conditional_writes and self.head(key) is not None:
            raise self.exists_error(key)
        return MultipartUpload(self, key, options, overwrite).run(held, iterator)

    version_of = staticmethod(version_of)

    def exists_error(self, key: str) -> ObjectExists:
        return ObjectExists(key, f"s3://{self.bucket}/{self._key(key)}")

    def current(self, key: str) -> Optional[Dict[str, Any]]:
        """HEAD of the key's current version (ETag, VersionId, ...), or None if there is none."""
        from botocore.exceptions import ClientError

        try:
            return self.window.call(lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key)),
                                    f"inspecting {key}")
        except ClientError:
            return None

    def etag_of(self, key: str) -> Optional[str]:
        """The stored object's ETag, or None if there is none."""
        return (self.current(key) or {}).get("ETag")

    def _conditional(self, attempt: Callable[[], Any], key: str, unconditional: Callable[[], Any], *,
                     expected_etag: Optional[str] = None) -> Any:
        """Run a create-if-absent request and return its answer; ObjectExists if the key exists. A store
        without conditional writes (NotImplemented) is remembered and served by check-then-write.
        ``expected_etag``: what the object has if this very write created it -- a write whose answer was
        lost and that was sent again finds its own object there, which is success, not a conflict."""
        from botocore.exceptions import ClientError

        try:
            return attempt()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                found = self.current(key) if expected_etag is not None else None
                if found is not None and found.get("ETag") == expected_etag:
                    return found
                raise self.exists_error(key) from None
            if code not in ("NotImplemented", "InvalidArgument", "InvalidRequest") and status != 501:
                raise
        self._conditional_writes = False
        if self.head(key) is not None:
            raise self.exists_error(key)
        return unconditional()

    def put_bytes(self, key: str, data: bytes, options: PutOptions = PutOptions(), *,
                  overwrite: bool = False, content_md5: Optional[str] = None) -> Stored:
        """``content_md5`` (base64) may be passed when the caller already hashed ``data``."""
        md5 = content_md5 or md5_b64(data)
        args = dict(Bucket=self.bucket, Key=self._key(key), Body=data, ContentMD5=md5, **self._put_args(options))

        def put(**extra: Any) -> Any:
            return self.window.call(lambda: self.client.put_object(**extra, **args), f"writing {key}")

        with self._errors("writing", key):
            if overwrite:
                answer = put()
            elif not self._conditional_writes:
                # The store does not support conditional writes: check, then write.
                if self.head(key) is not None:
                    raise self.exists_error(key)
                answer = put()
            else:
                answer = self._conditional(lambda: put(IfNoneMatch="*"), key, put,
                                           expected_etag=f'"{base64.b64decode(md5).hex()}"')
        return Stored(len(data), version_of(answer))

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

    def pin_version(self, key: str, version_id: Optional[str]) -> None:
        if version_id and version_id != "null":
            self._pins[key] = version_id

    def _version(self, key: str) -> Dict[str, Any]:
        """The VersionId argument of a request on ``key``: the pinned version, if any."""
        pinned = self._pins.get(key)
        return {"VersionId": pinned} if pinned else {}

    def _check_current(self, key: str) -> None:
        """Warn (once per key) when the current version of a pinned key is not the recorded one: someone
        with more than writer rights replaced or deleted it after the backup. The recorded one is read."""
        pinned = self._pins.get(key)
        if not pinned or key in self._checked or self._warn is None:
            return
        self._checked.add(key)
        with self._errors("inspecting", key):
            now = self.current(key)
        if now is None or now.get("VersionId") != pinned:
            state = f"replaced by version {now.get('VersionId')}" if now else "deleted"
            self._warn(f"s3://{self.bucket}/{self._key(key)} was {state} after the backup wrote it; reading the "
                       f"version the manifest records ({pinned}): find out who changed it")

    def _open_body(self, key: str, full: str, offset: int, etag: Optional[str]) -> Any:
        extra: Dict[str, Any] = {"Range": f"bytes={offset}-", "IfMatch": etag} if offset else {}
        extra.update(self._version(key))
        if not offset:
            self._check_current(key)
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
                h = self.window.call(lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key),
                                                                     **self._version(key)), f"inspecting {key}")
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
                          metadata=dict(h.get("Metadata") or {}), lock_mode=h.get("ObjectLockMode"),
                          lock_until=h.get("ObjectLockRetainUntilDate"))

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
        s = self.settings
        waiting = self.request_retrieval(keys)
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

    def request_retrieval(self, keys: List[str]) -> List[str]:
        """Request the retrieval of every archived object among ``keys`` (one request each, no waiting);
        returns the keys not readable yet (requested now, or already being retrieved)."""
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
                            Bucket=self.bucket, Key=self._key(key), **self._version(key), RestoreRequest={
                                "Days": s.restore_days, "GlacierJobParameters": {"Tier": s.restore_tier}}),
                            f"requesting retrieval of {key}")
                    except ClientError as exc:
                        if exc.response.get("Error", {}).get("Code") != "RestoreAlreadyInProgress":
                            raise
            waiting.append(key)
        return waiting

    def stored_sha256(self, key: str) -> Optional[str]:
        """The SHA-256 (hex) of the whole object as the store computed it (S3 additional checksum, asked for
        with ChecksumMode), without reading the object; None when the store keeps none, or only the
        composite checksum of a multipart upload (a hash of the parts' hashes)."""
        from botocore.exceptions import ClientError

        try:
            h = self.window.call(lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(key),
                                                                 ChecksumMode="ENABLED", **self._version(key)),
                                 f"inspecting {key}")
        except ClientError:
            return None
        value = h.get("ChecksumSHA256") or ""
        if not value or "-" in value or h.get("ChecksumType") == "COMPOSITE":
            return None
        try:
            return base64.b64decode(value).hex()
        except ValueError:
            return None

    def object_lock(self) -> Optional[Dict[str, object]]:
        from .s3lock import object_lock_configuration

        with self._errors("reading the Object Lock configuration of", None):
            return object_lock_configuration(lambda: self.window.call(
                lambda: self.client.get_object_lock_configuration(Bucket=self.bucket), "reading the Object Lock configuration"))

    def _probe(self) -> Optional[str]:
        """Reach the bucket and return its region (None if the store does not say). GetBucketLocation, which
        every duty's policy allows on the bucket, rather than HeadBucket: AWS authorises HeadBucket as
        s3:ListBucket, which the per-cluster policies limit by s3:prefix, a key HeadBucket does not carry.
        A store without GetBucketLocation is probed with HeadBucket."""
        from botocore.exceptions import ClientError

        try:
            location = self.client.get_bucket_location(Bucket=self.bucket).get("LocationConstraint")
        except ClientError as exc:
            if (exc.response.get("Error", {}).get("Code") not in ("NotImplemented", "MethodNotAllowed")
                    and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") not in (405, 501)):
                raise
            self.client.head_bucket(Bucket=self.bucket)
            return None
        # AWS answers None for us-east-1; "EU" is the legacy name of eu-west-1.
        return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)

    def check(self, *, wait: bool = True) -> Dict[str, object]:
        if wait:
            region = self._call("reaching bucket", None, self._probe)
        else:
            try:
                with self._errors("reaching bucket", None):
                    region = self._probe()
            except StorageUnreachable:
                self.window.mark_down()
                raise
        return {"reachable": True, "bucket": self.bucket, "endpoint": self.settings.endpoint_url or "AWS",
                "region": region, "configured_region": self.settings.region,
                "verify_tls": self.settings.verify_tls}
