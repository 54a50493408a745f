"""Signed plain-JSON records (docs/signing.md): the WAL archive identity (and its migration from an
archive written before signing), WAL conflict records, audit records and chain entries, verification
records and drill reports. PostgreSQL 15, a local repository and one case over the S3 endpoint."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import free_port, give_to_pg_user, make_pg_dir, write_config
from pgb_pitr_support import enable_archiving, remove_tree, scratch_dir, stop, switch_and_wait_archived
from test_signing import signing_key, signing_workdir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def env(pg_test_base):
    factory, run, work, enc = signing_workdir(pg_test_base, "signed-records-")
    a = signing_key(work, "main")
    r = signing_key(work, "restore1")          # the restore host's own key, trusted for records only
    cluster = factory("15", archive_mode="on", archive_command="", wal_level="replica")
    writes = {"mode": "public-key", "public_key_file": enc.public_file}
    reads = {"mode": "public-key", "private_key_files": [enc.secret_file]}

    def cfg(config_name: str, encryption, s3=None, name="main", **signing):
        state = str(make_pg_dir(Path(work) / f"state-{config_name[:-4]}"))
        return write_config(work, name, s3=s3, config_name=config_name, encryption=encryption, signing=signing,
                            paths={"state_dir": state}, cluster=cluster, backup={"globals": False},
                            wal={"fetch_prefetch": 0})

    return SimpleNamespace(work=work, run=run, cluster=cluster, a=a, r=r, cfg=cfg, writes=writes, reads=reads,
                           repo=Path(work) / "repo" / "main",
                           old_agent=cfg("old-agent.yml", writes),
                           writer=cfg("writer.yml", writes, secret_key_file=a.secret,
                                      record_trusted_public_key_files=[r.public]),
                           fresh_writer=cfg("fresh-writer.yml", writes, secret_key_file=a.secret),
                           reader=cfg("reader.yml", reads, trusted_public_key_files=[a.public],
                                      record_secret_key_file=r.secret))


def _refused(res, *words: str) -> None:
    assert res.rc == 4, res.describe()
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), res.describe()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    give_to_pg_user(path, 0o600)


def test_archive_identity_is_migrated_then_a_forged_one_is_refused(env):
    """An archive started by an agent without signing keeps its archive.json; the first push of a host
    with the signing key adds archive.json.sig beside it and archiving goes on. An edited identity is
    refused by wal-push (of a host that has not cached it), pitr and health."""
    identity = env.repo / "wal" / "archive.json"
    enable_archiving(env.cluster, env.old_agent)
    switch_and_wait_archived(env.cluster)
    original = identity.read_bytes()
    assert not Path(f"{identity}.sig").exists()
    env.cluster.psql("CREATE TABLE t AS SELECT 1 AS x")
    enable_archiving(env.cluster, env.writer)
    switch_and_wait_archived(env.cluster)                       # archiving continues across the migration
    assert identity.read_bytes() == original and Path(f"{identity}.sig").exists()
    assert "archive.json" not in _wal_age(env)                   # a restore host trusts the migrated identity

    env.cluster.psql("ALTER SYSTEM SET archive_command = ''; SELECT pg_reload_conf()")
    doc = json.loads(original)
    doc["system_identifier"] = "1" + str(doc["system_identifier"])[1:]
    identity.write_bytes((json.dumps(doc, indent=1) + "\n").encode())
    current = env.cluster.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    wal_file = os.path.join(str(env.cluster.datadir), "pg_wal", current)
    _refused(env.run(env.fresh_writer, "wal-push", wal_file, check=False, json=False),
             "WAL archive identity", "archive.json", "bad signature")
    data_dir = os.path.join(scratch_dir(), "data")
    _refused(env.run(env.reader, "pitr", "--latest", "--data-dir", data_dir, "--port", "1", check=False, json=False),
             "archive.json", "bad signature")
    assert not os.path.exists(os.path.join(data_dir, "PG_VERSION"))
    assert "archive.json" in _wal_age(env) and "bad signature" in _wal_age(env)
    identity.write_bytes(original)                               # the genuine identity is accepted again
    assert "archive.json" not in _wal_age(env)


def _wal_age(env) -> str:
    """health's WAL check on the restore host: it reads the archive's identity."""
    checks = {c["name"]: c for c in env.run(env.reader, "health", check=False).data["checks"]}
    return checks["wal_newest_age"]["message"]


def _head(chain: Path) -> int:
    return max(int(p.name[:12]) for p in chain.glob("*.json"))


def test_forged_records_are_ignored_by_health_and_compliance_and_flagged_by_audit_verify(env):
    # Self-contained (pytest-xdist may run it on a worker where the migration test did not run): WAL
    # archiving in use, so health reads the conflict records.
    enable_archiving(env.cluster, env.writer)
    switch_and_wait_archived(env.cluster)
    env.run(env.writer, "backup", "--tier", "daily", "--database", "postgres", timeout=300)
    audit = env.repo / "audit"
    chain = audit / "chain"
    head = _head(chain)
    assert Path(chain / f"{head:012d}.json.sig").exists()        # the backup's audit entry is signed
    env.run(env.reader, "audit", "verify")

    # A few seconds back: a report's period ends at its start, to the second, exclusive.
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=3)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    verification = audit / "verifications" / f"{stamp}-forged-abcdef-passed.json"
    _write(verification, b'{"backup_id": "forged", "passed": true}\n')
    drill = audit / "drills" / stamp / "report.json"
    _write(drill, json.dumps({"drill_id": stamp, "passed": True, "started_at": now.isoformat()}).encode())
    conflict = env.repo / "wal" / "conflicts" / f"{stamp}-000000010000000000000009-abcdef.json"
    _write(conflict, b'{"name": "000000010000000000000009", "reason": "forged"}\n')
    record = audit / now.strftime("%Y") / now.strftime("%m") / f"{stamp}-backup-abcdef.json"
    entry = json.loads((chain / f"{head:012d}.json").read_bytes())
    body = (json.dumps({"operation": "backup", "started_at": now.isoformat(), "result": "success",
                        "chain": {"seq": head + 1, "prev_sha256": entry["sha256"]}}) + "\n").encode()
    _write(record, body)
    _write(chain / f"{head + 1:012d}.json", json.dumps({
        "seq": head + 1, "record": str(record.relative_to(env.repo.parent)), "sha256": hashlib.sha256(body).hexdigest(),
        "prev_sha256": entry["sha256"]}).encode())

    res = env.run(env.reader, "audit", "verify", check=False)
    assert res.rc == 4 and res.data["audit_chain"]["breaks"][0]["kind"] == "forged", res.describe()
    assert f"audit/chain/{head + 1:012d}.json is not signed" in res.data["audit_chain"]["breaks"][0]["message"]

    checks = {c["name"]: c for c in env.run(env.writer, "health", check=False).data["checks"]}
    untrusted = checks["untrusted_records"]
    assert untrusted["status"] == "warning", untrusted
    for path in (verification, drill, conflict):
        assert str(path.relative_to(env.repo.parent)) in untrusted["message"], untrusted
    assert checks["wal_conflicts"]["status"] == "ok"                       # the forged conflict is not acted on
    assert "no successful restore verification" in checks["restore_verification"]["message"]
    assert checks["audit_chain"]["status"] == "warning" and "forged" in checks["audit_chain"]["message"]

    out = Path(scratch_dir()) / "report.json"
    env.run(env.reader, "compliance", "report", "--format", "json", "--output", str(out))
    report = json.loads(out.read_text())
    assert report["drill"]["count"] == 0 and report["verification"]["last"] is None, report
    notes = " ".join(report["notes"])
    assert str(drill.relative_to(env.repo.parent)) in notes and str(record.relative_to(env.repo.parent)) in notes


def test_list_on_a_forged_archive_identity_still_lists_the_backups(env):
    """A forged wal/archive.json must not hide the backups: list shows them, flags the recoverable window
    as untrusted (text and --json), says so on stderr and exits 4 (DESIGN §10, session 8)."""
    identity = env.repo / "wal" / "archive.json"
    enable_archiving(env.cluster, env.writer)
    switch_and_wait_archived(env.cluster)
    backup_id = env.run(env.writer, "backup", "--physical", "--tier", "daily", timeout=300).data["backup_id"]
    trusted = env.run(env.reader, "list").data
    assert trusted["wal_archive_untrusted"] is None and trusted["recoverable_window"] is not None
    original = identity.read_bytes()
    doc = json.loads(original)
    doc["system_identifier"] = "1" + str(doc["system_identifier"])[1:]
    identity.write_bytes((json.dumps(doc, indent=1) + "\n").encode())
    try:
        listed = env.run(env.reader, "list", check=False)
        assert listed.rc == 4, listed.describe()
        assert backup_id in [b["backup_id"] for b in listed.data["backups"]], listed.describe()
        assert listed.data["recoverable_window"] is None and "bad signature" in listed.data["wal_archive_untrusted"]
        text = env.run(env.reader, "list", check=False, json=False)
        assert text.rc == 4 and backup_id in text.stdout and "window: UNTRUSTED" in text.stdout, text.describe()
        assert "WAL archive untrusted" in text.stderr and "archive.json" in text.stderr, text.describe()
    finally:
        identity.write_bytes(original)


def test_signed_records_over_s3(env, s3_server):
    """Over the S3 endpoint: the audit record and chain entry are stored with their signatures, and an
    entry put by someone with only write access to the bucket is flagged."""
    writer = env.cfg("s3-writer.yml", env.writes, s3=s3_server, secret_key_file=env.a.secret)
    reader = env.cfg("s3-reader.yml", env.reads, s3=s3_server, trusted_public_key_files=[env.a.public])
    env.run(writer, "backup", "--tier", "daily", "--database", "postgres", timeout=300)
    client = s3_server.client()
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_server.bucket, Prefix="main/audit/")["Contents"]}
    entries = sorted(k for k in keys if k.startswith("main/audit/chain/") and k.endswith(".json"))
    assert entries and all(f"{k}.sig" in keys for k in keys if k.endswith(".json")), keys
    env.run(reader, "audit", "verify")
    seq = int(entries[-1].rsplit("/", 1)[1][:12]) + 1
    client.put_object(Bucket=s3_server.bucket, Key=f"main/audit/chain/{seq:012d}.json",
                      Body=json.dumps({"seq": seq, "record": "audit/x.json", "sha256": "0" * 64}).encode())
    res = env.run(reader, "audit", "verify", check=False)
    assert res.rc == 4 and [b["kind"] for b in res.data["audit_chain"]["breaks"]][:1] == ["forged"], res.describe()


def test_a_restore_hosts_records_are_signed_with_its_own_key_and_trusted_for_records_only(env):
    """DESIGN §10 (session 8). A restore host without a key for its records refuses to run (exit 8) rather
    than chain an entry that reads as forged. With its own key (signing.record_secret_key_file) its verify
    and pitr entries are signed with it, and the database host, trusting it for records only
    (signing.record_trusted_public_key_files), finds the chain intact. A backup or WAL segment signed with
    that key (what anyone holding it could forge) is refused with exit 4 naming it, even by its holder."""
    name = "records"                                            # a prefix of its own: a chain without forgeries
    db = env.cfg("records-db.yml", env.writes, name=name, secret_key_file=env.a.secret,
                 record_trusted_public_key_files=[env.r.public])
    restore = env.cfg("records-restore.yml", env.reads, name=name, trusted_public_key_files=[env.a.public],
                      record_secret_key_file=env.r.secret)
    keyless = env.cfg("records-keyless.yml", env.reads, name=name, trusted_public_key_files=[env.a.public])
    strict = env.cfg("records-strict.yml", env.writes, name=name, secret_key_file=env.a.secret)
    forger = env.cfg("records-forger.yml", env.writes, name=name, secret_key_file=env.r.secret,
                     trusted_public_key_files=[env.a.public])
    chain = Path(env.work) / "repo" / name / "audit" / "chain"
    enable_archiving(env.cluster, db)
    backup = env.run(db, "backup", "--physical", "--tier", "daily", timeout=300).data["backup_id"]
    switch_and_wait_archived(env.cluster)

    before = sorted(chain.iterdir())
    data_dir = os.path.join(scratch_dir(), "data")
    for args in (("pitr", "--latest", "--data-dir", data_dir, "--port", "1"), ("verify", backup)):
        res = env.run(keyless, *args, check=False, json=False)
        lines = res.stderr.strip().splitlines()
        assert res.rc == 8 and len(lines) == 1 and "signing.record_secret_key_file" in lines[0], res.describe()
    assert sorted(chain.iterdir()) == before and not os.path.exists(os.path.join(data_dir, "PG_VERSION"))
    assert any("no signing key for the records" in w
               for w in env.run(keyless, "config", "validate").data["warnings"])

    env.run(restore, "verify", backup)
    try:
        env.run(restore, "pitr", "--backup-id", backup, "--latest", "--data-dir", data_dir,
                "--port", str(free_port()), timeout=300)
    finally:
        stop(data_dir)
        remove_tree(os.path.dirname(data_dir))
    entries = [json.loads(p.read_bytes()) for p in sorted(chain.glob("*.json"))]
    assert [e["operation"] for e in entries] == ["backup", "verify", "pitr"], entries
    for cfg in (db, restore):
        assert env.run(cfg, "audit", "verify").data["audit_chain"]["breaks"] == []
    res = env.run(strict, "audit", "verify", check=False)         # a host not told about the restore host's key
    breaks = res.data["audit_chain"]["breaks"]
    assert res.rc == 4 and [(b["kind"], b["seq"]) for b in breaks] == [("forged", 2), ("forged", 3)], res.describe()
    assert env.r.fingerprint in breaks[0]["message"]

    forged = env.run(forger, "backup", "--tier", "daily", "--database", "postgres", timeout=300).data["backup_id"]
    for cfg in (db, restore):
        _refused(env.run(cfg, "verify", forged, check=False, json=False),
                 forged, env.r.fingerprint, "operational records only")
        assert forged in env.run(cfg, "list").data["refused"]
    segment = switch_and_wait_archived(env.cluster)
    obj = next(p for p in (Path(env.work) / "repo" / name / "wal").rglob(segment + "*.gpg") if ".backup" not in p.name)
    plain = Path(scratch_dir()) / segment
    env.run(restore, "wal-fetch", segment, str(plain), json=False)
    give_to_pg_user(plain, 0o600)
    obj.unlink()
    env.run(forger, "wal-push", str(plain), json=False)
    assert obj.exists()
    fetched = Path(scratch_dir()) / "x"
    _refused(env.run(restore, "wal-fetch", segment, str(fetched), check=False, json=False),
             segment, env.r.fingerprint[-16:], "operational records only")
    assert not fetched.exists()
