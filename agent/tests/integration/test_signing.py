"""Authenticity (issue 12, docs/signing.md): every object is signed by the writing cluster's signing key
and verified by every reader, with real gpg and a real PostgreSQL 15.

One module-scoped environment: restore operators' encryption key pair, signing keys of cluster
``main`` (A), of a forger (F) and of cluster ``other`` (C), a writer and a reader configuration over
one local repository. Forgeries are made the way an attacker with the public encryption key and
write access to the bucket would: a second agent configuration signing with a foreign key writes
into ``main``'s prefix.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import AGENT_BIN, AgentRunner, ClusterFactory, WorkDir, free_port, give_to_pg_user, make_pg_dir, \
    write_config
from keys import make_keypair
from pgb_pitr_support import enable_archiving, remove_tree, scratch_dir, stop, switch_and_wait_archived

pytestmark = pytest.mark.integration


def signing_key(directory: str, name: str) -> SimpleNamespace:
    """A signing key made by 'pg-backup keys create --purpose signing', handed to the postgres user."""
    sec, pub = os.path.join(directory, f"{name}.sign.sec"), os.path.join(directory, f"{name}.sign.pub")
    proc = subprocess.run([str(AGENT_BIN), "--json", "keys", "create", "--purpose", "signing", "--name",
                           f"pg-backup signing {name}", "--secret-out", sec, "--public-out", pub],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    give_to_pg_user(sec, 0o600)
    give_to_pg_user(pub, 0o644)
    return SimpleNamespace(secret=sec, public=pub, fingerprint=json.loads(proc.stdout)["key"]["fingerprint"])


def signing_workdir(pg_test_base, prefix: str):
    """(cluster factory, agent runner, postgres-owned work directory, the operators' encryption key pair)."""
    factory = ClusterFactory(pg_test_base)
    run = AgentRunner(make_pg_dir(pg_test_base / "agent-output", 0o700), make_pg_dir(pg_test_base / "agent-tmp", 0o700))
    make_pg_dir(pg_test_base / "work", 0o700)
    work = WorkDir(tempfile.mkdtemp(prefix=prefix, dir=pg_test_base / "work"))
    give_to_pg_user(work, 0o700)
    enc = make_keypair(str(work), "operators")
    give_to_pg_user(enc.public_file, 0o644)
    give_to_pg_user(enc.secret_file, 0o600)
    return factory, run, work, enc


@pytest.fixture(scope="module")
def env(pg_test_base):
    factory, run, work, enc = signing_workdir(pg_test_base, "signing-")
    a, f, c = signing_key(work, "main"), signing_key(work, "forger"), signing_key(work, "other")
    r = signing_key(work, "restore1")      # the restore host's own key for the records it writes
    cluster = factory("15", archive_mode="on", archive_command="", wal_level="replica")
    cluster.psql("CREATE DATABASE app")
    cluster.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 500) g", dbname="app")
    writes = {"mode": "public-key", "public_key_file": enc.public_file}
    reads = {"mode": "public-key", "private_key_files": [enc.secret_file]}
    common = dict(cluster=cluster, backup={"globals": False}, physical={"checkpoint": "fast"})

    def cfg(name: str, config_name: str, encryption, **signing):
        state = str(make_pg_dir(Path(work) / f"state-{config_name[:-4]}")) if "reader" not in config_name else None
        paths = {"state_dir": state} if state else {}
        return write_config(work, name, config_name=config_name, encryption=encryption, signing=signing,
                            paths=paths, **common)

    e = SimpleNamespace(
        work=work, run=run, cluster=cluster, a=a, f=f, c=c, r=r,
        writer=cfg("main", "writer.yml", writes, secret_key_file=a.secret),
        reader=cfg("main", "reader.yml", reads, trusted_public_key_files=[a.public], record_secret_key_file=r.secret),
        # The forger trusts the genuine key too: its wal-push accepts the archive's signed identity.
        forger=cfg("main", "forger.yml", writes, secret_key_file=f.secret, trusted_public_key_files=[a.public]),
        unsigned=cfg("main", "old-agent.yml", writes),
        other_reader=cfg("other", "other-reader.yml", reads, trusted_public_key_files=[c.public],
                         record_secret_key_file=r.secret),
        other_trusting_a=cfg("other", "other-trusting-a.yml", reads, trusted_public_key_files=[c.public, a.public],
                             record_secret_key_file=r.secret),
    )
    return e


def _backup(env, cfg: str, *args: str) -> str:
    return env.run(cfg, "backup", "--tier", "daily", *args, timeout=300).data["backup_id"]


def _refused(res, *words: str) -> None:
    assert res.rc == 4, res.describe()
    line = res.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in line, res.describe()


def test_signed_logical_backup_round_trip_and_refusals(env):
    good = _backup(env, env.writer, "--database", "app")
    repo = Path(env.work) / "repo" / "main" / "backups" / good
    assert (repo / "manifest.json.sig").read_bytes().startswith(b"-----BEGIN PGP SIGNATURE-----")
    listed = {b["backup_id"]: b for b in env.run(env.reader, "list").data["backups"]}
    assert listed[good]["signer"] == env.a.fingerprint
    assert env.a.fingerprint in env.run(env.reader, "show", good, json=False).stdout
    env.run(env.reader, "verify", good, "--deep")
    env.run(env.reader, "restore", good, "--database", "app", "--target-database", "app_signed")
    assert env.cluster.psql("SELECT count(*) FROM t", dbname="app_signed") == "500"

    # Stock tools: gpg --decrypt shows the good signature of the cluster's key.
    dump = next(p for p in repo.iterdir() if p.name.endswith(".gpg"))
    home = tempfile.mkdtemp(prefix="pgb-stock-")
    try:
        gpg = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        subprocess.run(gpg + ["--import", str(Path(env.work) / "operators.sec.asc"), env.a.public], check=True,
                       capture_output=True)
        out = subprocess.run(gpg + ["--status-fd", "2", "--output", "/dev/null", "--decrypt", str(dump)],
                             capture_output=True, text=True)
        assert out.returncode == 0 and f"VALIDSIG {env.a.fingerprint}" in out.stderr, out.stderr
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)

    # A forgery: the public encryption key and a foreign signing key, written into main's prefix.
    forged = _backup(env, env.forger, "--database", "app")
    for args in (("verify", forged), ("restore", forged, "--database", "app", "--target-database", "app_forged"),
                 ("show", forged)):
        _refused(env.run(env.reader, *args, check=False, json=False), forged, env.f.fingerprint, "not trusted")
    _refused(env.run(env.reader, "verify", forged, "--allow-unsigned", check=False, json=False), env.f.fingerprint)
    assert env.cluster.psql("SELECT count(*) FROM pg_database WHERE datname = 'app_forged'") == "0"
    catalog = env.run(env.reader, "list").data      # a forged backup is left out of the catalog, and named
    assert forged in catalog["refused"] and forged not in {b["backup_id"] for b in catalog["backups"]}

    # An unsigned backup (an agent from before signing): refused, then admitted with --allow-unsigned (audited).
    old = _backup(env, env.unsigned, "--database", "app")
    _refused(env.run(env.reader, "restore", old, "--database", "app", "--target-database", "app_old",
                     check=False, json=False), "not signed", "--allow-unsigned")
    env.run(env.reader, "restore", old, "--database", "app", "--target-database", "app_old", "--allow-unsigned")
    assert old in env.run(env.reader, "list").data["refused"]
    lenient = env.run(env.reader, "list", "--allow-unsigned").data
    assert old in {b["backup_id"]: b for b in lenient["backups"]} and forged in lenient["refused"]
    assert env.cluster.psql("SELECT count(*) FROM t", dbname="app_old") == "500"
    audit = (Path(env.work) / "state" / "audit.jsonl").read_text().splitlines()
    restores = [json.loads(line) for line in audit if '"restore"' in line]
    assert "--allow-unsigned" in json.dumps(restores[-1]), restores[-1]

    # Cluster A's genuine backup copied under cluster B's prefix.
    other = Path(env.work) / "repo" / "other" / "backups"
    other.mkdir(parents=True, exist_ok=True)
    shutil.copytree(repo, other / good)
    subprocess.run(["chown", "-R", "postgres", str(Path(env.work) / "repo" / "other")], check=True)
    _refused(env.run(env.other_reader, "verify", good, check=False, json=False), env.a.fingerprint, "not trusted")
    _refused(env.run(env.other_trusting_a, "verify", good, check=False, json=False), "cluster 'main'", "not 'other'")

    # The verdict cache (state_dir, 0600) holds the accepted manifests only; a manifest changed after it was
    # cached is judged by gpg again and refused (the key is a hash of the bytes).
    cache = Path(env.work) / "state" / "signature-verdicts.json"
    assert oct(cache.stat().st_mode & 0o777) == "0o600"
    assert set(json.loads(cache.read_text())["verdicts"].values()) == {env.a.fingerprint}
    manifest = repo / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"app"', b'"app" ', 1))
    assert good in env.run(env.reader, "list").data["refused"]


def test_forged_wal_segment_stops_recovery(env):
    """A genuine physical backup; one WAL segment after it replaced by a copy signed with a foreign key:
    wal-fetch refuses it (exit 4 naming the segment and the signer) and recovery stops before it."""
    enable_archiving(env.cluster, env.writer)
    backup = env.run(env.writer, "backup", "--physical", timeout=300).data["backup_id"]
    env.cluster.psql("CREATE TABLE wal_probe AS SELECT 1 AS x", dbname="app")
    segment = switch_and_wait_archived(env.cluster)
    lsn = env.cluster.psql("SELECT pg_current_wal_lsn()")
    switch_and_wait_archived(env.cluster)
    env.cluster.psql("ALTER SYSTEM SET archive_command = ''; SELECT pg_reload_conf()")
    wal = Path(env.work) / "repo" / "main" / "wal"
    obj = next(wal.rglob(segment + "*.gpg"))
    plain = Path(scratch_dir()) / segment
    env.run(env.reader, "wal-fetch", segment, str(plain), json=False)
    give_to_pg_user(plain, 0o600)
    obj.unlink()
    env.run(env.forger, "wal-push", str(plain), json=False)
    assert obj.exists()
    fetched = Path(scratch_dir()) / "x"
    _refused(env.run(env.reader, "wal-fetch", segment, str(fetched), check=False, json=False),
             segment, env.f.fingerprint)
    assert not fetched.exists()

    data_dir = os.path.join(scratch_dir(), "data")
    latest = data_dir
    try:
        res = env.run(env.reader, "pitr", "--backup-id", backup, "--target-lsn", lsn, "--data-dir", data_dir,
                      "--port", str(free_port()), check=False, json=False, timeout=300)
        _refused(res, "recovery stopped before a WAL file it refused", segment, env.f.fingerprint, "not trusted")
        # --latest: PostgreSQL would take the refused file for the end of the archive and promote.
        latest = os.path.join(scratch_dir(), "data")
        res = env.run(env.reader, "pitr", "--backup-id", backup, "--latest", "--data-dir", latest,
                      "--port", str(free_port()), check=False, json=False, timeout=300)
        _refused(res, "recovery stopped before a WAL file it refused", "the server was stopped", segment,
                 env.f.fingerprint)
    finally:
        stop(data_dir, latest)
        remove_tree(os.path.dirname(data_dir))
        remove_tree(os.path.dirname(latest))


def test_rotation_keeps_old_signatures_verifiable_and_a_readable_key_is_refused(env):
    old = _backup(env, env.writer, "--database", "app")
    a2 = signing_key(env.work, "main-2026")
    rotated = write_config(env.work, "main", config_name="writer-rotated.yml", cluster=env.cluster,
                           encryption={"mode": "public-key", "public_key_file": str(Path(env.work) / "operators.pub.asc")},
                           signing={"secret_key_file": a2.secret}, backup={"globals": False})
    new = _backup(env, rotated, "--database", "app")
    reads = {"mode": "public-key", "private_key_files": [str(Path(env.work) / "operators.sec.asc")]}
    both = write_config(env.work, "main", config_name="reader-both.yml", cluster=env.cluster, encryption=reads,
                        signing={"trusted_public_key_files": [env.a.public, a2.public],
                                 "record_secret_key_file": env.r.secret})
    only_new = write_config(env.work, "main", config_name="reader-new.yml", cluster=env.cluster, encryption=reads,
                            signing={"trusted_public_key_files": [a2.public], "record_secret_key_file": env.r.secret})
    signers = {b["backup_id"]: b["signer"] for b in env.run(both, "list").data["backups"]}
    assert signers[old] == env.a.fingerprint and signers[new] == a2.fingerprint
    env.run(both, "verify", old, "--deep")
    env.run(both, "verify", new, "--deep")
    _refused(env.run(only_new, "verify", old, check=False, json=False), old, env.a.fingerprint, "not trusted")

    os.chmod(a2.secret, 0o640)
    try:
        res = env.run(rotated, "backup", "--tier", "daily", "--database", "app", check=False, json=False)
        assert res.rc == 8 and "signing.secret_key_file" in res.stderr and "chmod 600" in res.stderr, res.describe()
        assert len(res.stderr.strip().splitlines()) <= 2, res.describe()
    finally:
        os.chmod(a2.secret, 0o600)


def test_signed_backup_over_s3_and_a_copy_moved_to_another_prefix(env, s3_server):
    """The same checks against the S3 endpoint: the signature object is stored create-only beside the
    manifest, and a genuine backup copied server-side under another cluster's prefix is refused."""
    enc_pub, enc_sec = str(Path(env.work) / "operators.pub.asc"), str(Path(env.work) / "operators.sec.asc")
    writer = write_config(env.work, "main", s3=s3_server, config_name="s3-writer.yml", cluster=env.cluster,
                          encryption={"mode": "public-key", "public_key_file": enc_pub},
                          signing={"secret_key_file": env.a.secret}, backup={"globals": False})
    reads = {"mode": "public-key", "private_key_files": [enc_sec]}
    reader = write_config(env.work, "main", s3=s3_server, config_name="s3-reader.yml", cluster=env.cluster,
                          encryption=reads, signing={"trusted_public_key_files": [env.a.public],
                                                     "record_secret_key_file": env.r.secret})
    other = write_config(env.work, "other", s3=s3_server, config_name="s3-other.yml", cluster=env.cluster,
                         encryption=reads, signing={"trusted_public_key_files": [env.c.public],
                                                    "record_secret_key_file": env.r.secret})
    good = _backup(env, writer, "--database", "app")
    client = s3_server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"main/backups/{good}/")["Contents"]]
    assert f"main/backups/{good}/manifest.json.sig" in keys
    env.run(reader, "verify", good, "--deep")
    assert {b["backup_id"]: b["signer"] for b in env.run(reader, "list").data["backups"]}[good] == env.a.fingerprint
    for key in keys:
        client.copy_object(Bucket=s3_server.bucket, Key=key.replace("main/", "other/", 1),
                           CopySource={"Bucket": s3_server.bucket, "Key": key})
    _refused(env.run(other, "restore", good, "--database", "app", "--target-database", "app_moved",
                     check=False, json=False), good, env.a.fingerprint, "not trusted")
    assert env.run(other, "list").data["refused"].keys() == {good}


def test_keys_check_and_config_validate_cover_the_signing_keys(env):
    held = env.run(env.writer, "keys", "check").data["files"]
    rows = {h["setting"]: h for h in held}
    assert rows["signing.secret_key_file"]["keys"][0]["fingerprint"] == env.a.fingerprint
    assert rows["signing.secret_key_file"]["mode"] == "0600" and rows["signing.secret_key_file"]["owner"] == "postgres"
    held = [h["setting"] for h in env.run(env.reader, "keys", "check").data["files"]]
    assert held[-2:] == ["signing.trusted_public_key_files", "signing.record_secret_key_file"], held
    assert not any("signing" in w for w in env.run(env.writer, "config", "validate").data["warnings"])
    warned = env.run(env.unsigned, "config", "validate").data["warnings"]
    assert any("no signing key configured" in w for w in warned), warned
