"""Nothing can be overwritten, and restores read the versions the backup wrote (issue 12).

Against moto_server (a real S3 protocol endpoint), which honours ``If-None-Match: *`` on PutObject and
CompleteMultipartUpload (412 PreconditionFailed) and keeps object versions:
- every PutObject and CompleteMultipartUpload the agent's storage code sends carries If-None-Match: *
  (what the bucket role's writer policy requires), and an overwrite attempt through those code paths
  fails cleanly (ObjectExists, exit 4), the stored object untouched and no multipart upload left;
- on a versioned bucket each write returns its version id, manifests record them, and a restore or
  verify of a backup whose dump was then overwritten by someone bypassing the agent (more than writer
  rights) reads the original version and warns, naming the object.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from pg_backup.config import S3Settings, StorageClassSettings
from pg_backup.errors import EXIT_INTEGRITY
from pg_backup.manifest import Manifest
from pg_backup.storage.base import ObjectExists, PutOptions
from pg_backup.storage.s3 import S3Storage

pytestmark = pytest.mark.integration

SOURCES = Path(__file__).resolve().parents[2] / "src" / "pg_backup"


def make_storage(s3_server, warnings=None):
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    settings = S3Settings(bucket=s3_server.bucket, endpoint_url=s3_server.endpoint_url, region=s3_server.region,
                          force_path_style=True, credentials_file=str(s3_server.credentials_file), part_size_mib=5,
                          max_concurrency=2, storage_class=StorageClassSettings())
    return S3Storage(settings, "prefix/", warn=None if warnings is None else warnings.append)


def record_conditional_headers(storage):
    """[(operation, If-None-Match header or None)] of every object-writing request the client sends."""
    sent = []
    for operation in ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"):
        storage.client.meta.events.register(
            f"request-created.s3.{operation}",
            lambda request, operation=operation, **_: sent.append((operation, request.headers.get("If-None-Match"))))
    return sent


def versioned(s3_server):
    s3_server.client().put_bucket_versioning(Bucket=s3_server.bucket,
                                             VersioningConfiguration={"Status": "Enabled"})


def test_every_create_sends_if_none_match_and_an_overwrite_fails_cleanly(s3_server):
    storage = make_storage(s3_server)
    sent = record_conditional_headers(storage)
    small, big = b"original", os.urandom(11 * 1024 * 1024)
    storage.put_bytes("c/backups/b/manifest.json", small)
    storage.put_stream("c/backups/b/db.dump.zst.gpg", (big[i:i + (1 << 20)] for i in range(0, len(big), 1 << 20)))
    assert [(op, h) for op, h in sent if op in ("PutObject", "CompleteMultipartUpload")] == [
        ("PutObject", "*"), ("CompleteMultipartUpload", "*")]
    assert {op for op, h in sent if h is None} == {"CreateMultipartUpload", "UploadPart"}  # S3 takes no condition there

    # The same keys again, through the same code paths: refused, nothing replaced, nothing left over.
    with pytest.raises(ObjectExists) as small_clash:
        storage.put_bytes("c/backups/b/manifest.json", b"forged")
    with pytest.raises(ObjectExists) as big_clash:
        storage.put_stream("c/backups/b/db.dump.zst.gpg", iter([os.urandom(6 * 1024 * 1024), b"forged"]))
    for clash in (small_clash.value, big_clash.value):
        assert clash.exit_code == EXIT_INTEGRITY and isinstance(clash, FileExistsError)
        assert "already exists; nothing was overwritten" in str(clash)
    assert "s3://%s/prefix/c/backups/b/db.dump.zst.gpg" % s3_server.bucket in str(big_clash.value)
    assert storage.get_bytes("c/backups/b/manifest.json") == small
    assert storage.get_bytes("c/backups/b/db.dump.zst.gpg") == big
    assert list(storage.list_incomplete("c/")) == []  # the refused multipart upload was aborted


def test_no_agent_code_asks_for_an_unconditional_write():
    """Create-if-absent is the default; no call passes ``overwrite=`` anything but False."""
    offenders = []
    for path in SOURCES.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                offenders += [f"{path.relative_to(SOURCES)}:{node.lineno}" for k in node.keywords
                              if k.arg == "overwrite" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                              and not (isinstance(k.value, ast.Name) and k.value.id == "overwrite")]
    assert offenders == []


def test_writes_return_version_ids_and_pinned_reads_ignore_a_later_overwrite(s3_server):
    unversioned = make_storage(s3_server)
    assert unversioned.put_bytes("c/plain", b"x").version_id is None
    # A "null" VersionId (moto answers one for a multipart upload into an unversioned bucket) is no version.
    assert unversioned.put_stream("c/plain-big", iter([os.urandom(6 << 20), b"x"])).version_id is None

    versioned(s3_server)
    warnings = []
    storage = make_storage(s3_server, warnings)
    original = os.urandom(7 * 1024 * 1024)
    small = storage.put_bytes("c/backups/b/globals.sql.zst.gpg", b"globals")
    big = storage.put_stream("c/backups/b/db.dump.zst.gpg", iter([original[:6 << 20], original[6 << 20:]]))
    assert small == 7 and big == len(original)
    assert small.version_id and big.version_id and small.version_id != big.version_id
    client = s3_server.client()
    heads = {k: client.head_object(Bucket=s3_server.bucket, Key="prefix/c/backups/b/" + k)["VersionId"]
             for k in ("globals.sql.zst.gpg", "db.dump.zst.gpg")}
    assert heads == {"globals.sql.zst.gpg": small.version_id, "db.dump.zst.gpg": big.version_id}

    # Someone with more than writer rights replaces the dump (a plain PUT, no condition).
    client.put_object(Bucket=s3_server.bucket, Key="prefix/c/backups/b/db.dump.zst.gpg", Body=b"forged")
    reader = make_storage(s3_server, warnings)
    assert reader.get_bytes("c/backups/b/db.dump.zst.gpg") == b"forged"  # not pinned: the current version
    reader.pin_version("c/backups/b/db.dump.zst.gpg", big.version_id)
    assert reader.head("c/backups/b/db.dump.zst.gpg").size == len(original)
    assert reader.get_bytes("c/backups/b/db.dump.zst.gpg") == original
    assert reader.get_bytes("c/backups/b/db.dump.zst.gpg") == original
    replaced = [w for w in warnings if "db.dump.zst.gpg was replaced by version" in w]
    assert len(replaced) == 1 and big.version_id in replaced[0]  # once per key, naming the recorded version


def _dump_key(client, bucket):
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    return next(k for k in keys if "/backups/" in k and k.endswith(".dump.zst.gpg"))


def test_restore_and_verify_read_the_recorded_version_after_an_overwrite(pg15, s3_server, workdir, write_config,
                                                                        run_agent):
    versioned(s3_server)
    pg15.psql("DROP DATABASE IF EXISTS vault; CREATE DATABASE vault")
    pg15.psql("CREATE TABLE ledger AS SELECT generate_series(1, 300) AS entry", dbname="vault")
    cfg = write_config(workdir, "versions", cluster=pg15, s3=s3_server)
    backup_id = run_agent(cfg, "backup", "--tier", "daily", "--database", "vault").data["backup_id"]
    client = s3_server.client()
    key = _dump_key(client, s3_server.bucket)
    recorded = client.head_object(Bucket=s3_server.bucket, Key=key)["VersionId"]
    manifest_key = key.rsplit("/", 1)[0] + "/manifest.json"
    manifest = Manifest.from_json(client.get_object(Bucket=s3_server.bucket, Key=manifest_key)["Body"].read())
    dump = next(o for o in manifest.objects if o.role == "database")
    assert dump.version_id == recorded
    assert manifest.extra["object_versions"][dump.name] == recorded

    # An overwrite by someone holding more than writer rights (the writer policy refuses it).
    client.put_object(Bucket=s3_server.bucket, Key=key, Body=b"-----BEGIN PGP MESSAGE----- forged")

    verified = run_agent(cfg, "verify", backup_id)
    assert "was replaced by version" in verified.stderr and key in verified.stderr
    restored = run_agent(cfg, "restore", backup_id, "--database", "vault", "--target-database", "vault_copy")
    assert "was replaced by version" in restored.stderr
    assert pg15.psql("SELECT count(*) FROM ledger", dbname="vault_copy") == "300"


def test_manifests_without_version_ids_keep_working():
    """Manifests written before version ids (and local repositories) carry none: reads use the current version."""
    doc = Manifest.from_json(b'{"schema_version": 1, "backup_id": "b", "kind": "logical", "tier": "daily", '
                             b'"cluster": "c", "hostname": "h", "agent_version": "0", "server_version": "15", '
                             b'"server_version_num": 150000, "system_identifier": null, '
                             b'"started_at": "2026-12-04T00:00:00.000000Z", "finished_at": "2026-12-04T00:00:01.000000Z", '
                             b'"encryption": {"format": "openpgp", "mode": "passphrase", "cipher": "AES256", '
                             b'"fingerprint": "f"}, "compression": {}, "objects": [{"name": "d", "role": "database", '
                             b'"size": 1, "sha256": "00", "raw_size": 1, "database": "app"}]}')
    assert doc.objects[0].version_id is None
    assert b"object_versions" not in doc.to_json() and b"version_id" not in doc.to_json()
    assert Manifest.from_json(doc.to_json()).objects[0].version_id is None
