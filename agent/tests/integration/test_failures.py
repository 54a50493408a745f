"""What happens when things go wrong: every case ends with nothing lost and nothing half-committed."""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import signal
import subprocess
import time

import pytest

from keys import make_keypair

pytestmark = pytest.mark.integration


def _big_database(cluster, dbname="big", mib=48):
    """Incompressible rows, so a backup takes long enough to be interrupted."""
    cluster.psql(f"CREATE DATABASE {dbname}")
    rows = mib * 1024 * 1024 // 1000
    cluster.psql("CREATE TABLE blobs AS SELECT g AS id, (SELECT string_agg(md5(random()::text || i), '') "
                 "FROM generate_series(1, 31) i WHERE g > 0) AS data "
                 f"FROM generate_series(1, {rows}) g", dbname=dbname)


def _objects(workdir):
    return sorted(p for p in glob.glob(os.path.join(workdir, "repo", "**", "*"), recursive=True) if os.path.isfile(p))


def test_flipped_byte_makes_verify_and_restore_refuse(pg15, workdir, write_config, run_agent):
    pg15.psql("DROP DATABASE IF EXISTS flip; CREATE DATABASE flip")
    pg15.psql("CREATE TABLE t AS SELECT generate_series(1, 20000) AS x", dbname="flip")
    cfg = write_config(workdir, "flip", cluster=pg15)
    backup_id = run_agent(cfg, "backup", "--tier", "daily", "--database", "flip").data["backup_id"]
    dump = [p for p in _objects(workdir) if p.endswith(".dump.zst.gpg")][0]
    with open(dump, "r+b") as fh:
        fh.seek(os.path.getsize(dump) // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))

    verify = run_agent(cfg, "verify", backup_id, check=False)
    assert verify.rc == 4
    assert os.path.basename(dump) in verify.stderr and "SHA-256" in verify.stderr
    assert verify.data["backups"][0]["objects"][1]["ok"] is False

    restore = run_agent(cfg, "restore", backup_id, "--database", "flip", "--target-database", "flip_copy", check=False)
    assert restore.rc == 4
    assert pg15.psql("SELECT count(*) FROM pg_database WHERE datname = 'flip_copy'") == "0"

    audit = [json.loads(line) for line in open(os.path.join(workdir, "state", "audit.jsonl"))]
    assert [a["operation"] for a in audit] == ["backup", "verify", "restore"]
    assert audit[-1]["result"] == "failure" and audit[-1]["exit_code"] == 4


def test_wrong_or_missing_key(pg15, workdir, write_config, run_agent):
    pg15.psql("DROP DATABASE IF EXISTS keys; CREATE DATABASE keys")
    pair = make_keypair(workdir, "operator")
    subprocess.run(["chown", "postgres", pair.public_file, pair.secret_file], check=False)
    writer = write_config(workdir, "keys", cluster=pg15,
                          encryption={"mode": "public-key", "public_key_file": pair.public_file})
    backup_id = run_agent(writer, "backup", "--tier", "daily", "--database", "keys").data["backup_id"]
    listed = run_agent(writer, "list").data["backups"][0]
    assert listed["key_fingerprint"] == pair.fingerprint

    # The database host holds only the public key: it cannot read its own backups.
    denied = run_agent(writer, "restore", backup_id, "--database", "keys", "--target-database", "k2", check=False)
    assert denied.rc == 8 and pair.fingerprint in denied.stderr
    assert pg15.psql("SELECT count(*) FROM pg_database WHERE datname = 'k2'") == "0"

    other = make_keypair(workdir, "stranger")
    subprocess.run(["chown", "postgres", other.secret_file], check=False)
    wrong = write_config(workdir, "keys", cluster=pg15, config_name="wrong.yml",
                         encryption={"mode": "public-key", "private_key_files": [other.secret_file]})
    assert run_agent(wrong, "verify", backup_id, "--deep", check=False).rc == 8

    operator = write_config(workdir, "keys", cluster=pg15, config_name="operator.yml",
                            encryption={"mode": "public-key", "private_key_files": [pair.secret_file]})
    run_agent(operator, "verify", backup_id, "--deep")
    run_agent(operator, "restore", backup_id, "--database", "keys", "--target-database", "k2")


def test_s3_endpoint_frozen_mid_upload_leaves_no_backup(pg15, s3_server, workdir, write_config, run_agent):
    _big_database(pg15, "s3stall", mib=24)
    cfg = write_config(workdir, "stall", cluster=pg15, s3=s3_server, backup={"globals": False},
                       s3_overrides={"part_size_mib": 5, "max_attempts": 2, "read_timeout": 3, "connect_timeout": 2,
                                     "outage_tolerance_seconds": 0})
    client = s3_server.client()
    proc = run_agent(cfg, "backup", "--tier", "daily", "--database", "s3stall", background=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            uploads = client.list_multipart_uploads(Bucket=s3_server.bucket).get("Uploads", [])
            if uploads:
                break
            time.sleep(0.1)
        assert uploads, "the backup never started a multipart upload"
        os.kill(s3_server.pid, signal.SIGSTOP)
        rc = proc.wait(timeout=120)
    finally:
        os.kill(s3_server.pid, signal.SIGCONT)
    assert rc == 5, proc.stderr_text()
    assert "pg-backup: error:" in proc.stderr_text()
    assert run_agent(cfg, "list").data["backups"] == []
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_server.bucket).get("Contents", [])]
    assert not [k for k in keys if k.endswith("manifest.json")]
    # Later, prune removes the abandoned upload once the grace period is over.
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    run_agent(cfg, "prune", env={"PG_BACKUP_TEST_NOW": later})
    assert client.list_multipart_uploads(Bucket=s3_server.bucket).get("Uploads", []) == []


def test_kill_9_mid_backup_then_prune_cleans_the_leftovers(pg15, workdir, write_config, run_agent):
    _big_database(pg15, "killme", mib=48)
    cfg = write_config(workdir, "kill", cluster=pg15, compression={"level": 19})
    proc = run_agent(cfg, "backup", "--tier", "daily", "--database", "killme", background=True)
    deadline = time.time() + 60
    while time.time() < deadline and not any(".tmp-" in p for p in _objects(workdir)):
        time.sleep(0.05)
    assert any(".tmp-" in p for p in _objects(workdir)), "backup never started writing"
    proc.kill9()
    assert run_agent(cfg, "list").data["backups"] == []
    assert not [p for p in _objects(workdir) if p.endswith("manifest.json")]

    # Within the grace period prune leaves the debris alone (it could be a running backup) ...
    assert run_agent(cfg, "prune").data["incomplete_removed"] == []
    # ... after it, everything under backups/ goes.
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = run_agent(cfg, "prune", env={"PG_BACKUP_TEST_NOW": later}).data
    # A killed local write leaves a temp file (an unfinished upload); finished objects of the
    # same backup, if any, form a backup without a manifest. Either way prune must remove them.
    assert result["incomplete_removed"] or result["uploads_aborted"], result
    assert [p for p in _objects(workdir) if "/backups/" in p] == []
    # And the next backup works.
    run_agent(cfg, "backup", "--tier", "daily", "--database", "postgres")


def test_sigterm_mid_stream_at_level_19_ends_the_run_in_seconds(pg15, workdir, write_config, run_agent):
    """systemd stops a unit with SIGTERM and kills it 90 s later: an interrupted backup must end at once,
    not after its abandoned level-19 zstd jobs (interpreter shutdown used to wait ~40 s for them)."""
    _big_database(pg15, "sigterm", mib=24)
    cfg = write_config(workdir, "sigterm", cluster=pg15, compression={"level": 19})
    first = run_agent(cfg, "backup", "--tier", "daily", "--database", "sigterm", background=True)
    time.sleep(3)  # well inside the dump: it needs tens of seconds at level 19
    t0 = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 130, first.stderr_text()
    assert time.monotonic() - t0 < 5
    assert "nothing was committed" in first.stderr_text()
    assert run_agent(cfg, "list").data["backups"] == []


def test_concurrent_runs_second_exits_at_once_with_code_3(pg15, workdir, write_config, run_agent):
    import psycopg

    pg15.psql("DROP DATABASE IF EXISTS busy; CREATE DATABASE busy")
    pg15.psql("CREATE TABLE held AS SELECT generate_series(1, 1000) AS x", dbname="busy")
    cfg = write_config(workdir, "busy", cluster=pg15)
    # The first run holds the agent's lock while its pg_dump waits for a table lock held here: it stays
    # in the middle of its backup for as long as the test needs, using no CPU (a big level-19 dump did
    # the same at the cost of a CPU-bound minute on a loaded CI machine).
    holder = psycopg.connect(host=pg15.host, port=pg15.port, user=pg15.superuser, dbname="busy", connect_timeout=10)
    first = None
    try:
        holder.execute("BEGIN; LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
        first = run_agent(cfg, "backup", "--tier", "daily", "--database", "busy", background=True)
        lock = os.path.join(workdir, "state", "busy.lock")
        deadline = time.time() + 60
        while time.time() < deadline and not (os.path.exists(lock) and os.path.getsize(lock)):
            assert first.poll() is None, first.stderr_text()
            time.sleep(0.05)
        assert os.path.exists(lock) and os.path.getsize(lock), "the first run never took its lock"
        t0 = time.monotonic()
        second = run_agent(cfg, "backup", "--tier", "daily", check=False)
        assert second.rc == 3
        assert time.monotonic() - t0 < 10
        assert "busy" in second.stderr and "pid" in second.stderr
        assert first.poll() is None, "the first run must still hold the lock: " + first.stderr_text()
        # Interrupted mid-backup, the first run exits 130 and commits nothing.
        first.send_signal(signal.SIGTERM)
        holder.rollback()
        assert first.wait(timeout=120) == 130, first.stderr_text()
    finally:
        holder.close()
        if first is not None and first.poll() is None:
            first.kill9(group=True)
    assert run_agent(cfg, "list").data["backups"] == []


def test_invalid_config_values_are_all_reported(workdir, write_config, run_agent, pg15):
    cfg = write_config(workdir, "bad", cluster=pg15, postgres={"port": 99999},
                       retention={"daily_days": 0}, repository_overrides={"type": "tape"})
    result = run_agent(cfg, "config", "validate", check=False)
    assert result.rc == 2
    problems = result.data["error"]["problems"]
    assert any(p.startswith("postgres.port:") for p in problems)
    assert any(p.startswith("retention.daily_days:") for p in problems)
    assert any(p.startswith("repository.type:") for p in problems)
    backup = run_agent(cfg, "backup", "--tier", "daily", check=False, json=False)
    assert backup.rc == 2 and backup.stderr.count("\n") == 1


def test_storage_unreachable_is_exit_5_with_one_line(pg15, workdir, write_config, run_agent, s3_server):
    cfg = write_config(workdir, "down", cluster=pg15, s3=s3_server,
                       s3_overrides={"endpoint_url": "http://127.0.0.1:9", "max_attempts": 1, "connect_timeout": 1,
                                     "outage_tolerance_seconds": 0})
    result = run_agent(cfg, "backup", "--tier", "daily", "--database", "postgres", check=False, json=False)
    assert result.rc == 5
    assert result.stderr.strip().count("\n") == 0 or "Traceback" not in result.stderr


def test_retention_by_manifest_dates_via_test_clock(pg15, workdir, write_config, run_agent):
    cfg = write_config(workdir, "gfs", cluster=pg15, retention={"daily_days": 2})
    now = dt.datetime.now(dt.timezone.utc)
    ids = []
    for days_ago in (5, 4, 1, 0):
        when = (now - dt.timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        ids.append(run_agent(cfg, "backup", "--tier", "daily", "--database", "postgres",
                             env={"PG_BACKUP_TEST_NOW": when}).data["backup_id"])
    dry = run_agent(cfg, "prune", "--dry-run").data
    assert sorted(d["backup_id"] for d in dry["deleted"]) == sorted(ids[:2])
    assert len(run_agent(cfg, "list").data["backups"]) == 4
    run_agent(cfg, "prune")
    assert [b["backup_id"] for b in run_agent(cfg, "list").data["backups"]] == ids[2:]
