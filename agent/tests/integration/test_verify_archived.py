"""``verify`` of backups in archived storage classes (issue 13): no retrieval per backup, no waiting.

A DEEP_ARCHIVE backup is verified by what the store reports (size; the store's SHA-256 where it has
one) and reported pending its content check; ``--retrieve`` requests every retrieval at once and
returns; the next run reads what was retrieved. GLACIER_IR (instant) is read as usual.
"""
from __future__ import annotations

import base64
import hashlib
import os

DUMP_ROLE = "database"


def _object_keys(client, bucket, backup_id):
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]
            if f"/backups/{backup_id}/" in o["Key"] and not o["Key"].endswith("manifest.json")]


def _by_id(data):
    return {r["backup_id"]: r for r in data["backups"]}


def test_deep_archive_is_verified_by_metadata_then_by_content_after_a_batch_retrieval(
        pg15, s3_server, workdir, write_config, run_agent):
    pg15.psql("DROP DATABASE IF EXISTS cold; CREATE DATABASE cold")
    pg15.psql("CREATE TABLE ledger AS SELECT generate_series(1, 200) AS entry", dbname="cold")
    cfg = write_config(workdir, "cold", cluster=pg15, s3=s3_server,
                       s3_overrides={"storage_class": {"monthly": "DEEP_ARCHIVE", "weekly": "GLACIER_IR"},
                                     "restore_poll_seconds": 1, "restore_timeout_hours": 1})
    monthly = run_agent(cfg, "backup", "--tier", "monthly", "--database", "cold").data["backup_id"]
    weekly = run_agent(cfg, "backup", "--tier", "weekly", "--database", "cold").data["backup_id"]
    client, bucket = s3_server.client(), s3_server.bucket
    cold_keys = _object_keys(client, bucket, monthly)

    # 1. No retrieval is requested, nothing waits (a retrieval would wait up to restore_timeout_hours).
    first = run_agent(cfg, "verify", "--all", "--deep", timeout=120).data
    reports = _by_id(first)
    assert first["pending"] == 1 and first["failed"] == 0
    archived = reports[monthly]
    assert archived["ok"] and archived["content"] == "pending retrieval" and archived["deep"] is False
    assert archived["archived"] == {"objects": len(cold_keys), "storage_classes": ["DEEP_ARCHIVE"],
                                    "compared": ["size"], "retrieval": "not requested"}
    assert {o["checked"] for o in archived["objects"]} == {"metadata"}
    assert all("Restore" not in client.head_object(Bucket=bucket, Key=k) for k in cold_keys)
    instant = reports[weekly]  # GLACIER_IR is read like STANDARD, deep check included
    assert instant["content"] == "verified" and instant["deep"] is True and instant["archived"] is None
    assert {o["checked"] for o in instant["objects"]} == {"content"}

    # 2. --retrieve: every retrieval requested in one pass, the run returns at once with "pending".
    text = run_agent(cfg, "verify", "--all", "--retrieve", json=False, timeout=120)
    assert f"{monthly}: OK" in text.stdout and "retrieval requested now" in text.stdout
    assert "1 backup(s) pending a retrieval (Standard tier" in text.stdout
    assert all("Restore" in client.head_object(Bucket=bucket, Key=k) for k in cold_keys)

    # 3. A later run reads what the store has retrieved (moto retrieves at once).
    later = _by_id(run_agent(cfg, "verify", monthly).data)
    assert later[monthly]["content"] == "verified" and {o["checked"] for o in later[monthly]["objects"]} == {"content"}


def test_an_archived_object_that_differs_from_its_manifest_fails_without_a_retrieval(
        pg15, s3_server, workdir, write_config, run_agent):
    pg15.psql("DROP DATABASE IF EXISTS cold2; CREATE DATABASE cold2")
    cfg = write_config(workdir, "cold2", cluster=pg15, s3=s3_server,
                       s3_overrides={"storage_class": {"monthly": "DEEP_ARCHIVE"}, "restore_timeout_hours": 1})
    backup_id = run_agent(cfg, "backup", "--tier", "monthly", "--database", "cold2").data["backup_id"]
    client, bucket = s3_server.client(), s3_server.bucket
    key = next(k for k in _object_keys(client, bucket, backup_id) if "cold2" in k.rsplit("/", 1)[-1])
    size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]

    # The same bytes stored with an S3 additional checksum: compared with the manifest, no retrieval.
    client.restore_object(Bucket=bucket, Key=key, RestoreRequest={"Days": 1})
    original = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=original, StorageClass="DEEP_ARCHIVE", ChecksumAlgorithm="SHA256")
    same = run_agent(cfg, "verify", backup_id, timeout=120).data["backups"][0]
    assert same["ok"] and same["archived"]["compared"] == ["sha256", "size"]

    client.put_object(Bucket=bucket, Key=key, Body=os.urandom(size + 1), StorageClass="DEEP_ARCHIVE")
    shorter = run_agent(cfg, "verify", backup_id, check=False, timeout=120)
    assert shorter.rc == 4, shorter.describe()
    assert f"the store reports {size + 1} bytes, the manifest says {size}" in shorter.stderr

    # Same size, other content: only the store's own SHA-256 (an S3 additional checksum) can tell.
    body = os.urandom(size)
    client.put_object(Bucket=bucket, Key=key, Body=body, StorageClass="DEEP_ARCHIVE", ChecksumAlgorithm="SHA256")
    stored = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")["ChecksumSHA256"]
    assert base64.b64decode(stored) == hashlib.sha256(body).digest()
    swapped = run_agent(cfg, "verify", backup_id, check=False, timeout=120)
    assert swapped.rc == 4, swapped.describe()
    assert f"the store's SHA-256 {hashlib.sha256(body).hexdigest()} differs from the manifest's" in swapped.stderr
    assert "Restore" not in client.head_object(Bucket=bucket, Key=key)
