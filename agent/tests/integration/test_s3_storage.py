"""The S3 backend against a real S3 protocol server (moto_server over HTTP on loopback)."""
from __future__ import annotations

import os

import pytest

from pg_backup.config import S3Settings, StorageClassSettings
from pg_backup.errors import NotFoundError, StorageError
from pg_backup.storage.base import PutOptions
from pg_backup.storage.s3 import S3Storage, part_size_for

pytestmark = pytest.mark.integration


@pytest.fixture
def storage(s3_server):
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    settings = S3Settings(bucket=s3_server.bucket, endpoint_url=s3_server.endpoint_url, region=s3_server.region,
                          force_path_style=True, credentials_file=str(s3_server.credentials_file), part_size_mib=5,
                          max_concurrency=2, restore_poll_seconds=1, storage_class=StorageClassSettings())
    return S3Storage(settings, "prefix/")


def test_multipart_round_trip_with_tags_class_and_bounded_parts(storage, s3_server):
    data = os.urandom(12 * 1024 * 1024 + 123)
    chunks = (data[i:i + 1_000_000] for i in range(0, len(data), 1_000_000))
    size = storage.put_stream("c/backups/x/obj", chunks,
                              PutOptions(storage_class="STANDARD_IA", tags={"tier": "weekly", "cluster": "c"}))
    assert size == len(data)
    assert b"".join(storage.iter_chunks("c/backups/x/obj")) == data
    client = s3_server.client()
    head = client.head_object(Bucket=s3_server.bucket, Key="prefix/c/backups/x/obj")
    assert head["StorageClass"] == "STANDARD_IA"
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 2 MiB: three parts
    tags = {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=s3_server.bucket,
                                                                    Key="prefix/c/backups/x/obj")["TagSet"]}
    assert tags == {"tier": "weekly", "cluster": "c"}
    assert [o.key for o in storage.list("c/")] == ["c/backups/x/obj"]


def test_failed_stream_leaves_neither_object_nor_upload(storage, s3_server):
    def chunks():
        yield os.urandom(6 * 1024 * 1024)
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError):
        storage.put_stream("c/backups/y/obj", chunks())
    assert storage.head("c/backups/y/obj") is None
    assert list(storage.list_incomplete("c/")) == []


def test_create_if_absent_and_missing_objects(storage):
    storage.put_bytes("c/backups/z/manifest.json", b"{}", overwrite=False)
    with pytest.raises(FileExistsError):
        storage.put_bytes("c/backups/z/manifest.json", b"{ }", overwrite=False)
    assert storage.get_bytes("c/backups/z/manifest.json") == b"{}"
    with pytest.raises(NotFoundError):
        list(storage.iter_chunks("c/none"))
    storage.delete(["c/backups/z/manifest.json", "c/never-existed"])
    assert storage.head("c/backups/z/manifest.json") is None


def test_abandoned_multipart_upload_is_listed_and_aborted(storage, s3_server):
    s3_server.client().create_multipart_upload(Bucket=s3_server.bucket, Key="prefix/c/backups/q/obj")
    uploads = list(storage.list_incomplete("c/"))
    assert [u.key for u in uploads] == ["c/backups/q/obj"]
    storage.abort_incomplete(uploads[0])
    assert list(storage.list_incomplete("c/")) == []


def test_archived_object_is_retrieved_before_reading(storage):
    storage.put_stream("c/backups/m/obj", [b"cold data"], PutOptions(storage_class="GLACIER"))
    assert storage.head("c/backups/m/obj").archive_state == "archived"
    with pytest.raises(StorageError, match="archived"):
        list(storage.iter_chunks("c/backups/m/obj"))
    seen = []
    storage.make_readable(["c/backups/m/obj"], progress=lambda d, t, m: seen.append((d, t)))
    assert seen[-1] == (1, 1)
    assert storage.get_bytes("c/backups/m/obj") == b"cold data"


def test_unreachable_endpoint_and_missing_bucket_are_storage_errors(s3_server):
    closed = S3Storage(S3Settings(bucket="b", endpoint_url="http://127.0.0.1:9", force_path_style=True,
                                  region="us-east-1", max_attempts=1, connect_timeout=1, outage_tolerance_seconds=0,
                                  credentials_file=str(s3_server.credentials_file)))
    with pytest.raises(StorageError, match="unreachable"):
        closed.check()
    missing = S3Storage(S3Settings(bucket="no-such-bucket", endpoint_url=s3_server.endpoint_url, region="us-east-1",
                                   force_path_style=True, credentials_file=str(s3_server.credentials_file)))
    with pytest.raises(StorageError, match="does not exist"):
        missing.check()


def test_part_size_grows_so_10000_parts_are_never_exceeded():
    base = 16 << 20
    assert part_size_for(1, base) == base and part_size_for(2000, base) == base
    assert part_size_for(2001, base) == 2 * base
    assert max(part_size_for(n, base) for n in range(1, 10001)) == 5 << 30
    assert sum(part_size_for(n, base) for n in range(1, 10001)) > 5 * (1 << 40)


def test_small_stream_is_one_put_with_options_applied(s3_server):
    settings = S3Settings(bucket=s3_server.bucket, endpoint_url=s3_server.endpoint_url, region=s3_server.region,
                          force_path_style=True, credentials_file=str(s3_server.credentials_file), part_size_mib=5,
                          sse="AES256")
    storage = S3Storage(settings, "prefix")
    data = os.urandom(3 * 1024 * 1024)
    assert storage.put_stream("c/one", [data[:1000], data[1000:]],
                              PutOptions(tags={"tier": "daily", "cluster": "main db"})) == len(data)
    client = s3_server.client()
    head = client.head_object(Bucket=s3_server.bucket, Key="prefix/c/one")
    assert "-" not in head["ETag"]  # a plain PUT, not a one-part multipart upload
    assert head.get("StorageClass", "STANDARD") == "STANDARD"
    assert head["ServerSideEncryption"] == "AES256"
    tags = client.get_object_tagging(Bucket=s3_server.bucket, Key="prefix/c/one")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"tier": "daily", "cluster": "main db"}
    assert storage.get_bytes("c/one") == data
    assert list(storage.iter_chunks("c/one", chunk_size=1 << 20))[0] == data[:1 << 20]


def test_head_list_and_delete(storage):
    for key in ("c/b/2", "c/a/1", "c/b/1", "other/x"):
        storage.put_bytes(key, key.encode(), PutOptions(storage_class="STANDARD_IA" if key == "c/a/1" else None))
    info = storage.head("c/a/1")
    assert (info.key, info.size, info.storage_class, info.archive_state) == ("c/a/1", 5, "STANDARD_IA", None)
    assert info.modified.tzinfo is not None
    assert storage.head("c/none") is None and not storage.exists("c/none")
    listed = list(storage.list("c/"))
    assert [o.key for o in listed] == ["c/a/1", "c/b/1", "c/b/2"]
    assert [o.storage_class for o in listed] == ["STANDARD_IA", "STANDARD", "STANDARD"]
    storage.delete([o.key for o in listed])
    assert list(storage.list("c/")) == [] and storage.exists("other/x")
    storage.delete([])


def test_check_reports_the_buckets_region(s3_server):
    client = s3_server.client()
    client.create_bucket(Bucket=s3_server.bucket + "-eu",
                         CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    try:
        storage = S3Storage(S3Settings(bucket=s3_server.bucket + "-eu", endpoint_url=s3_server.endpoint_url,
                                       region="us-east-1", force_path_style=True,
                                       credentials_file=str(s3_server.credentials_file)), "")
        result = storage.check()
        assert result["reachable"] is True and result["bucket"] == s3_server.bucket + "-eu"
        assert (result["region"], result["configured_region"]) == ("eu-central-1", "us-east-1")
    finally:
        client.delete_bucket(Bucket=s3_server.bucket + "-eu")


def test_server_dying_mid_upload_is_a_storage_error_and_nothing_is_completed(s3_server):
    settings = S3Settings(bucket=s3_server.bucket, endpoint_url=s3_server.endpoint_url, region=s3_server.region,
                          force_path_style=True, credentials_file=str(s3_server.credentials_file), part_size_mib=5,
                          max_concurrency=1, max_attempts=1, connect_timeout=1, read_timeout=5,
                          outage_tolerance_seconds=0)
    storage = S3Storage(settings, "prefix")
    completed = []
    storage.client.meta.events.register("before-call.s3.CompleteMultipartUpload",
                                        lambda **kw: completed.append(kw))
    part = os.urandom(5 * 1024 * 1024)

    def chunks():
        yield part  # the first part goes up while the producer carries on
        s3_server.stop()
        yield part
        yield part

    with pytest.raises(StorageError, match="unreachable"):
        storage.put_stream("c/backups/d/obj", chunks())
    assert completed == []
    s3_server.start()  # a fresh server (moto keeps nothing): the key must be absent there too
    assert storage.head("c/backups/d/obj") is None
