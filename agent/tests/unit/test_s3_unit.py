"""S3 backend pieces that need no server: part sizing, tag encoding, key layout, request arguments."""
from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import parse_qsl

import pytest

from pg_backup.config import S3Settings
from pg_backup.storage.base import PutOptions
from pg_backup.storage.s3 import MAX_PARTS, MIB, S3Storage, join_key, part_size_for, tagging


@pytest.mark.parametrize("base_mib", [5, 8, 16, 5120])
def test_part_sizes_never_need_more_than_10000_parts_for_a_5_tib_object(base_mib):
    base = base_mib * MIB
    sizes = [part_size_for(n, base) for n in range(1, MAX_PARTS + 1)]
    assert sizes[0] == base
    assert sizes == sorted(sizes)  # never shrinks
    assert max(sizes) <= 5 << 30  # S3's largest part
    assert min(sizes) >= 5 * MIB  # S3's smallest non-final part
    assert sum(sizes) >= 5 << 40  # S3's largest object fits


def test_part_size_stays_at_the_configured_size_for_ordinary_streams():
    base = 8 * MIB
    assert {part_size_for(n, base) for n in range(1, 2001)} == {base}
    assert part_size_for(2001, base) == 2 * base
    assert part_size_for(2501, base) == 4 * base


def test_tagging_is_a_url_query_string_that_round_trips():
    tags = {"tier": "daily", "cluster": "main db", "note": "a&b=c/ü"}
    encoded = tagging(tags)
    assert " " not in encoded and "/" not in encoded.replace("%2F", "")
    assert dict(parse_qsl(encoded, strict_parsing=True)) == tags
    assert tagging({"tier": "daily", "cluster": "x"}) in ("tier=daily&cluster=x", "cluster=x&tier=daily")


@pytest.mark.parametrize("prefix, key, full", [
    ("", "c/backups/x", "c/backups/x"),
    ("root", "c/x", "root/c/x"),
    ("root/", "c/x", "root/c/x"),
    ("a/b//", "c", "a/b/c"),
])
def test_keys_are_joined_under_the_prefix(prefix, key, full):
    assert join_key(prefix, key) == full
    storage = S3Storage(S3Settings(bucket="bkt"), prefix)
    assert storage._key(key) == full
    assert storage._rel(full) == key


def test_put_arguments_follow_options_and_settings():
    plain = S3Storage(S3Settings(bucket="bkt"), "")
    args = plain._put_args(PutOptions(storage_class="STANDARD"))
    assert args == {"ContentType": "application/octet-stream"}
    assert "StorageClass" not in plain._put_args(PutOptions())

    kms = S3Storage(S3Settings(bucket="bkt", sse="aws:kms", sse_kms_key_id="alias/backup"), "")
    args = kms._put_args(PutOptions(storage_class="DEEP_ARCHIVE", tags={"tier": "monthly"}))
    assert args["StorageClass"] == "DEEP_ARCHIVE"
    assert args["Tagging"] == "tier=monthly"
    assert args["ServerSideEncryption"] == "aws:kms" and args["SSEKMSKeyId"] == "alias/backup"
    assert S3Storage(S3Settings(bucket="bkt", sse="AES256"), "")._put_args(PutOptions())["ServerSideEncryption"] \
        == "AES256"


def test_location_names_bucket_prefix_and_endpoint(tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key = s3cr3t-from-file\n")
    storage = S3Storage(S3Settings(bucket="bkt", endpoint_url="http://127.0.0.1:9000",
                                   credentials_file=str(creds)), "backups")
    assert "s3://bkt/backups" in storage.location and "http://127.0.0.1:9000" in storage.location
    assert "AKIAFILE" not in storage.location and "s3cr3t" not in storage.location


def test_credentials_file_wins_over_the_environment(tmp_path, monkeypatch):
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key = file-secret\n"
                     "[backup]\naws_access_key_id = AKIAPROFILE\naws_secret_access_key = profile-secret\n")
    os.chmod(creds, 0o600)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for profile, expected in ((None, "AKIAFILE"), ("backup", "AKIAPROFILE")):
        settings = S3Settings(bucket="bkt", region="eu-central-1", endpoint_url="http://127.0.0.1:9",
                              credentials_file=str(creds), profile=profile)
        client = S3Storage(settings, "").client  # built offline: no request is sent
        assert client._request_signer._credentials.get_frozen_credentials().access_key == expected


def test_client_is_configured_for_non_aws_stores():
    settings = S3Settings(bucket="bkt", region="eu-central-1", endpoint_url="http://127.0.0.1:9",
                          force_path_style=True, verify_tls=False, connect_timeout=3, read_timeout=7)
    config = S3Storage(settings, "").client.meta.config
    assert config.s3["addressing_style"] == "path"
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.connect_timeout == 3 and config.read_timeout == 7
    assert config.retries["mode"] == "standard"


def test_importing_the_backend_does_not_import_boto3():
    code = "import sys, pg_backup.storage.s3; sys.exit('boto3' in sys.modules or 'botocore' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0
