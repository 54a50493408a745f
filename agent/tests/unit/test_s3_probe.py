"""How the S3 backend proves the bucket reachable, and which version ids it records (no server: botocore's
Stubber answers exactly the requests expected, and fails on any other)."""
from __future__ import annotations

import pytest
from botocore.stub import Stubber

from pg_backup.config import S3Settings
from pg_backup.storage.s3 import S3Storage, version_of


@pytest.fixture
def stubbed(tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = AKIATEST\naws_secret_access_key = test\n")
    storage = S3Storage(S3Settings(bucket="bkt", endpoint_url="http://127.0.0.1:9", region="eu-west-1",
                                   credentials_file=str(creds), max_attempts=1), "prod")
    with Stubber(storage.client) as stub:
        yield storage, stub
        stub.assert_no_pending_responses()


def test_the_bucket_is_reached_with_get_bucket_location_not_head_bucket(stubbed):
    # HeadBucket is authorised as s3:ListBucket without s3:prefix, which the per-cluster policies refuse.
    storage, stub = stubbed
    stub.add_response("get_bucket_location", {"LocationConstraint": "EU"}, {"Bucket": "bkt"})
    assert storage.check()["region"] == "eu-west-1"


def test_a_store_without_get_bucket_location_is_reached_with_head_bucket(stubbed):
    storage, stub = stubbed
    stub.add_client_error("get_bucket_location", "NotImplemented", http_status_code=501)
    stub.add_response("head_bucket", {}, {"Bucket": "bkt"})
    assert storage.check(wait=False)["region"] is None


def test_a_refused_probe_is_not_mistaken_for_a_store_without_it(stubbed):
    storage, stub = stubbed
    stub.add_client_error("get_bucket_location", "AccessDenied", http_status_code=403)
    with pytest.raises(Exception, match="reaching bucket s3://bkt/ refused by http://127.0.0.1:9: AccessDenied"):
        storage.check()


@pytest.mark.parametrize("answer, version", [({"VersionId": "3sL4kqtJlcpXroDTDmJ"}, "3sL4kqtJlcpXroDTDmJ"),
                                             ({"VersionId": "null"}, None), ({}, None), (None, None)])
def test_only_real_version_ids_are_recorded(answer, version):
    assert version_of(answer) == version
