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


# -- outages: retried by time, never by attempt count ------------------------------------------------

class _Clock:
    """A fake monotonic clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _refused():
    from botocore.exceptions import EndpointConnectionError

    return EndpointConnectionError(endpoint_url="http://127.0.0.1:9")


def _client_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def test_an_outage_shorter_than_the_window_is_ridden_out_with_capped_backoff():
    from pg_backup.storage.outage import MAX_DELAY, OutageWindow

    clock, warnings, calls = _Clock(), [], []

    def request():
        calls.append(clock.now)
        if clock.now < 1000.0 + 29:  # a 29 s outage
            raise _refused()
        return "ok"

    window = OutageWindow(30, "http://s3.test", warnings.append)
    assert window.call(request, "uploading part 2 of k", sleep=clock.sleep, clock=clock) == "ok"
    assert clock.now >= 1029 and clock.now <= 1029 + MAX_DELAY
    assert max(clock.sleeps) <= MAX_DELAY and clock.sleeps[0] < 1  # quick first retry, then at most 4 s apart
    assert len(warnings) == 1 and "http://s3.test" in warnings[0] and "30 s" in warnings[0]


def test_an_outage_longer_than_the_window_fails_after_the_window_not_before():
    from pg_backup.storage.outage import OutageExceeded, OutageWindow

    clock = _Clock()

    def request():
        raise _refused()

    with pytest.raises(OutageExceeded) as info:
        OutageWindow(20, "http://s3.test").call(request, "x", sleep=clock.sleep, clock=clock)
    assert 20 <= info.value.waited < 20.5 and clock.now - 1000 == pytest.approx(info.value.waited)


def test_refusals_and_certificate_problems_are_not_waited_out():
    import ssl

    from botocore.exceptions import SSLError

    from pg_backup.storage.outage import OutageWindow, certificate_problem, is_transient

    for exc in (_client_error("AccessDenied", 403), _client_error("NoSuchKey", 404),
                _client_error("PreconditionFailed", 412)):
        assert not is_transient(exc)
    for exc in (_refused(), _client_error("SlowDown", 503), _client_error("InternalError", 500),
                _client_error("BadDigest", 400)):
        assert is_transient(exc)
    cert = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                                           "unable to get local issuer certificate (_ssl.c:1006)")
    bad_cert = SSLError(endpoint_url="https://s3.test", error=cert)
    assert certificate_problem(bad_cert) == "unable to get local issuer certificate"
    assert not is_transient(bad_cert)
    cut = SSLError(endpoint_url="https://s3.test", error=ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    assert certificate_problem(cut) is None and is_transient(cut)   # a handshake cut by the network: an outage

    clock = _Clock()

    def request():
        raise bad_cert

    with pytest.raises(SSLError):
        OutageWindow(300, "https://s3.test").call(request, "x", sleep=clock.sleep, clock=clock)
    assert clock.sleeps == []


def test_multipart_etag_is_what_s3_gives_the_completed_object():
    import hashlib

    from pg_backup.storage.multipart import multipart_etag

    parts = [b"a" * 10, b"b" * 7]
    etags = [{"PartNumber": i + 1, "ETag": '"%s"' % hashlib.md5(p).hexdigest()} for i, p in enumerate(parts)]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    assert multipart_etag(etags) == f'"{expected}-2"'


def test_wal_push_uses_its_own_shorter_window():
    storage = S3Storage(S3Settings(bucket="bkt", outage_tolerance_seconds=300, wal_push_outage_tolerance_seconds=15))
    assert storage.window.seconds == 300
    storage.for_archive_command()
    assert storage.window.seconds == 15


def test_verify_tls_false_warns_when_the_client_is_made():
    warnings: list = []
    storage = S3Storage(S3Settings(bucket="bkt", endpoint_url="https://s3.test:9000", verify_tls=False), "",
                        warnings.append)
    storage.client  # noqa: B018 - built offline
    assert len(warnings) == 1 and "verify_tls is false" in warnings[0] and "https://s3.test:9000" in warnings[0]


def test_after_one_outage_outlasted_the_window_the_run_does_not_wait_a_second_window():
    from pg_backup.storage.outage import OutageExceeded, OutageWindow

    clock = _Clock()
    down = [True]

    def request():
        if down[0]:
            raise _refused()
        return "ok"

    window = OutageWindow(60, "http://s3.test")
    with pytest.raises(OutageExceeded):
        window.call(request, "uploading", sleep=clock.sleep, clock=clock)
    before = clock.now
    with pytest.raises(OutageExceeded):   # e.g. the audit record written after the failure
        window.call(request, "writing the audit record", sleep=clock.sleep, clock=clock)
    assert clock.now == before
    down[0] = False
    assert window.call(request, "x", sleep=clock.sleep, clock=clock) == "ok"
    down[0] = True
    with pytest.raises(OutageExceeded):   # a success re-arms the full window
        window.call(request, "y", sleep=clock.sleep, clock=clock)
    assert clock.now - before >= 60


def test_a_signal_inside_the_http_client_is_not_an_outage():
    from botocore.exceptions import HTTPClientError

    from pg_backup.errors import Interrupted
    from pg_backup.storage.outage import is_transient

    assert not is_transient(HTTPClientError(error=Interrupted("SIGTERM; nothing was acknowledged")))
    assert is_transient(HTTPClientError(error=ConnectionResetError(104, "reset")))


def test_config_validate_names_a_missing_ca_bundle_or_sslrootcert(tmp_path):
    from pg_backup import config

    s3 = {"bucket": "b", "ca_bundle": str(tmp_path / "no-ca.pem")}
    data = {"cluster": "main", "repository": {"type": "s3", "s3": s3},
            "postgres": {"host": "db.internal", "sslmode": "verify-full", "sslrootcert": str(tmp_path / "no-root.crt")},
            "encryption": {"mode": "passphrase", "passphrase_file": str(tmp_path / "p")}}
    _, problems = config.parse(data, check_files=True)
    assert any(p.startswith("repository.s3.ca_bundle: file") and "no-ca.pem" in p for p in problems), problems
    assert any(p.startswith("postgres.sslrootcert: file") and "no-root.crt" in p for p in problems), problems
    settings, _ = config.parse(dict(data, postgres={"sslmode": "verify-full", "sslrootcert": "/x/root.crt",
                                                    "passfile": "/x/pgpass"}), check_files=False)
    assert settings.postgres.libpq_security() == {"sslmode": "verify-full", "sslrootcert": "/x/root.crt",
                                                  "passfile": "/x/pgpass"}
