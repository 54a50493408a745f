"""Physical base backups against real PostgreSQL (15 and 16) and a real S3 endpoint: tablespaces,
``verify --deep`` with pg_verifybackup (and the WAL it parses), recovery with a tablespace map,
and the refusal to commit a backup whose WAL cannot reach the archive."""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from conftest import free_port, make_pg_dir, run_pg
from pgb_pitr_support import enable_archiving, ids_on, remove_tree, scratch_dir, sql_on, stop, switch_and_wait_archived

pytestmark = pytest.mark.integration


def _fill(cluster, tablespace_dir=None):
    cluster.psql("CREATE DATABASE app")
    if tablespace_dir:
        cluster.psql(f"CREATE TABLESPACE fast LOCATION '{tablespace_dir}'")
        cluster.psql("CREATE TABLE ticks (id int PRIMARY KEY, note text) TABLESPACE fast;"
                     "INSERT INTO ticks SELECT g, md5(g::text) FROM generate_series(1, 20000) g;"
                     "CREATE TABLE plain AS SELECT g AS id FROM generate_series(1, 500) g", dbname="app")
    else:
        cluster.psql("CREATE TABLE ticks (id int PRIMARY KEY, note text);"
                     "INSERT INTO ticks SELECT g, md5(g::text) FROM generate_series(1, 20000) g", dbname="app")


def test_tablespace_backup_on_s3_deep_verify_and_recovery(make_cluster, s3_server, workdir, write_config, run_agent):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    ts_dir = str(make_pg_dir(cluster.dir / "ts_fast"))
    cfg = write_config(workdir, "phys", cluster=cluster, s3=s3_server, physical={"checkpoint": "fast"},
                       verify={"scratch_dir": str(make_pg_dir(workdir / "scratch"))})
    enable_archiving(cluster, cfg)
    _fill(cluster, ts_dir)
    done = run_agent(cfg, "backup", "--physical", "--tier", "weekly")
    b = done.data["backup"]
    assert b["kind"] == "physical" and b["tier"] == "weekly" and b["tablespaces"] == ["fast"]
    manifest = json.loads(s3_server.client().get_object(
        Bucket=s3_server.bucket, Key=f"phys/backups/{b['backup_id']}/manifest.json")["Body"].read())
    [ts] = manifest["tablespaces"]
    assert ts["location"] == ts_dir and ts["name"] == "fast" and ts["object"] == f"tablespace-{ts['oid']}.tar.zst.gpg"
    assert {o["role"] for o in manifest["objects"]} == {"base", "tablespace", "backup_manifest"}
    assert manifest["stop_time"] and manifest["next_xid"] > 0 and manifest["wal_segment_size"] == 16 << 20
    tags = s3_server.client().get_object_tagging(Bucket=s3_server.bucket,
                                                 Key=f"phys/backups/{b['backup_id']}/{ts['object']}")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"tier": "weekly", "cluster": "phys", "kind": "physical"}
    cluster.psql("INSERT INTO ticks SELECT g, 'after' FROM generate_series(20001, 20100) g", dbname="app")
    switch_and_wait_archived(cluster)

    deep = run_agent(cfg, "verify", b["backup_id"], "--deep").data
    report = deep["backups"][0]
    assert report["ok"] and report["pg_verifybackup"] == {"ran": True, "wal": "parsed", "ok": True, "detail": []}
    assert os.listdir(workdir / "scratch") == []  # the extracted copy is gone

    scratch = scratch_dir()
    try:
        new_ts = os.path.join(scratch, "ts")
        port = free_port()
        res = run_agent(cfg, "pitr", "--latest", "--data-dir", os.path.join(scratch, "data"), "--port", str(port),
                        "--tablespace-map", f"{ts_dir}={new_ts}", timeout=300).data
        assert res["tablespaces"][0]["restored_to"] == new_ts
        assert ids_on(port) == set(range(1, 20101))
        assert sql_on(port, "SELECT count(*) FROM plain", "app")[0] == 500
        assert sql_on(port, "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'fast'")[0] == new_ts
        assert any(p.name.startswith("PG_15_") for p in Path(new_ts).iterdir())
        assert cluster.psql("SELECT count(*) FROM ticks", dbname="app") == "20100"  # the original is untouched

        # Without a map the original location is in use (by the running cluster): restored inside the data dir.
        before = {p.name: p.stat().st_mtime_ns for p in Path(ts_dir).iterdir()}
        other = run_agent(cfg, "pitr", "--latest", "--no-start", "--data-dir", os.path.join(scratch, "d2"),
                          "--port", str(free_port())).data
        assert other["tablespaces"][0]["restored_to"] == os.path.join(scratch, "d2", "pg_tblspc_restored", str(ts["oid"]))
        assert any("is in use" in n for n in other["notes"])
        assert {p.name: p.stat().st_mtime_ns for p in Path(ts_dir).iterdir()} == before  # nothing written there
    finally:
        stop(os.path.join(scratch, "data"))
        remove_tree(scratch)


def _gpg(args, data, passphrase_file):
    """Stock gpg, as in the README's disaster recipe, in a throw-away home directory."""
    home = tempfile.mkdtemp(prefix="pgbt-gpg-")
    try:
        proc = subprocess.run(["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase-file",
                               str(passphrase_file), *args], input=data, capture_output=True, check=True,
                              env={"PATH": "/usr/bin:/bin", "GNUPGHOME": home})
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)
    return proc.stdout


def test_deep_verify_runs_pg_verifybackup_and_catches_a_changed_file(make_cluster, workdir, write_config, run_agent):
    """A base archive that decrypts, decompresses and matches its SHA-256 but holds a data file that
    differs from PostgreSQL's backup_manifest (as a bug in the pipeline would make it) fails --deep."""
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(workdir, "tamper", cluster=cluster, physical={"checkpoint": "fast", "archive_part_mib": 0})
    enable_archiving(cluster, cfg)
    _fill(cluster)
    backup_id = run_agent(cfg, "backup", "--physical").data["backup_id"]
    assert run_agent(cfg, "verify", "--all", "--deep").data["backups"][0]["pg_verifybackup"]["ok"] is True

    backup_dir = workdir / "repo" / "tamper" / "backups" / backup_id
    obj = backup_dir / "base.tar.zst.gpg"
    import zstandard

    plain = zstandard.ZstdDecompressor().decompressobj().decompress(_gpg(["--decrypt"], obj.read_bytes(),
                                                                           workdir / "passphrase"))
    src, out = tarfile.open(fileobj=io.BytesIO(plain)), io.BytesIO()
    changed = None
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if data and changed is None and member.name.startswith("base/") and member.size > 8192:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
                changed = member.name
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    assert changed
    cipher = _gpg(["--symmetric", "--cipher-algo", "AES256", "--compress-algo", "none"],
                  zstandard.ZstdCompressor().compress(out.getvalue()), workdir / "passphrase")
    obj.write_bytes(cipher)
    manifest_path = backup_dir / "manifest.json"
    m = json.loads(manifest_path.read_text())
    for o in m["objects"]:
        if o["name"] == "base.tar.zst.gpg":
            o.update(size=len(cipher), sha256=hashlib.sha256(cipher).hexdigest(), raw_size=len(out.getvalue()))
    manifest_path.write_text(json.dumps(m))

    shallow = run_agent(cfg, "verify", backup_id)
    assert shallow.rc == 0  # the stored bytes match the (rewritten) manifest
    deep = run_agent(cfg, "verify", backup_id, "--deep", check=False)
    assert deep.rc == 4, deep.describe()
    assert "pg_verifybackup found problems" in deep.stderr and changed.split("/")[-1] in deep.stderr


def test_backup_is_not_committed_without_archived_wal(make_cluster, workdir, write_config, run_agent):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(workdir, "noarch", cluster=cluster, physical={"checkpoint": "fast", "wal_wait_seconds": 3})
    _fill(cluster)
    res = run_agent(cfg, "backup", "--physical", check=False)
    assert res.rc == 6 and "archive_command is empty" in res.stderr, res.describe()
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("pg-backup: error:")] == res.stderr.splitlines()[-1:]
    assert not (workdir / "repo" / "noarch" / "backups").exists()  # refused before any data was read

    cluster.psql("ALTER SYSTEM SET archive_command = '/bin/false'; SELECT pg_reload_conf()")
    res = run_agent(cfg, "backup", "--physical", check=False)
    assert res.rc == 6, res.describe()
    assert "did not reach the archive within 3 s" in res.stderr and "archive_command last failed on" in res.stderr
    assert "the backup was not committed" in res.stderr
    assert run_agent(cfg, "list").data["backups"] == []  # nothing that looks complete
    leftovers = list((workdir / "repo" / "noarch" / "backups").iterdir())
    assert len(leftovers) == 1 and not (leftovers[0] / "manifest.json").exists()


def test_postgresql_16_backup_verify_and_recovery(make_cluster, workdir, write_config, run_agent):
    cluster = make_cluster("16", archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(workdir, "pg16", cluster=cluster, physical={"checkpoint": "fast"})
    enable_archiving(cluster, cfg)
    _fill(cluster)
    b = run_agent(cfg, "backup", "--physical").data["backup"]
    assert b["server_version"].startswith("16")
    cluster.psql("DELETE FROM ticks WHERE id > 15000", dbname="app")
    switch_and_wait_archived(cluster)
    assert run_agent(cfg, "verify", "--all", "--deep").data["backups"][0]["pg_verifybackup"]["wal"] == "parsed"
    scratch = scratch_dir()
    try:
        port = free_port()
        res = run_agent(cfg, "pitr", "--latest", "--data-dir", os.path.join(scratch, "data"), "--port", str(port),
                        timeout=300).data
        assert res["reached"]["timeline"] == 2
        assert ids_on(port) == set(range(1, 15001))
        assert sql_on(port, "SELECT current_setting('server_version_num')::int / 10000")[0] == 16
    finally:
        stop(os.path.join(scratch, "data"))
        remove_tree(scratch)


def test_configuration_outside_the_data_directory_is_kept_and_used(make_cluster, workdir, write_config, run_agent):
    """Debian's layout: postgresql.conf (with include_dir 'conf.d'), pg_hba.conf and pg_ident.conf live in
    another directory. The backup keeps them; the recovered data directory starts with them, its own paths."""
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(workdir, "etc", cluster=cluster, physical={"checkpoint": "fast"})
    enable_archiving(cluster, cfg)
    _fill(cluster)
    cluster.stop()
    etc = make_pg_dir(cluster.dir / "etc")
    make_pg_dir(etc / "conf.d")
    for name in ("postgresql.conf", "pgb_test.conf", "pg_hba.conf", "pg_ident.conf"):
        shutil.move(str(cluster.datadir / name), str(etc / name))
    with open(etc / "postgresql.conf", "a", encoding="utf-8") as fh:
        fh.write(f"data_directory = '{cluster.datadir}'\nhba_file = '{etc}/pg_hba.conf'\n"
                 f"ident_file = '{etc}/pg_ident.conf'\ninclude_dir = 'conf.d'\n")
    (etc / "conf.d" / "tuning.conf").write_text("work_mem = '7MB'\n")
    run_pg([cluster.bin("pg_ctl"), "-D", str(etc), "-l", str(cluster.log_file), "-w", "start"], cwd=cluster.dir)
    assert cluster.psql("SHOW config_file") == f"{etc}/postgresql.conf"

    b = run_agent(cfg, "backup", "--physical").data
    manifest = json.loads((workdir / "repo" / "etc" / "backups" / b["backup_id"] / "manifest.json").read_text())
    assert manifest["extra"]["config_files"]["pg_hba.conf"] == f"{etc}/pg_hba.conf"
    assert "conf.d/tuning.conf" in manifest["extra"]["config_files"]
    assert any(o["role"] == "config" for o in manifest["objects"])
    switch_and_wait_archived(cluster)
    deep = run_agent(cfg, "verify", "--all", "--deep").data["backups"][0]
    assert deep["ok"] and deep["pg_verifybackup"]["ok"] and "config.tar.zst.gpg" in [o["object"] for o in deep["objects"]]

    scratch = scratch_dir()
    try:
        data, port = os.path.join(scratch, "data"), free_port()
        res = run_agent(cfg, "pitr", "--latest", "--data-dir", data, "--port", str(port), timeout=300).data
        assert any("came from" in n and "commented out" in n for n in res["notes"]), res["notes"]
        assert sql_on(port, "SELECT current_setting('work_mem'), current_setting('data_directory'), "
                            "current_setting('hba_file')") == ("7MB", data, os.path.join(data, "pg_hba.conf"))
        assert ids_on(port) == set(range(1, 20001))
        assert f"#pg-backup pitr: data_directory = '{cluster.datadir}'" in Path(data, "postgresql.conf").read_text()
    finally:
        stop(os.path.join(scratch, "data"))
        remove_tree(scratch)
