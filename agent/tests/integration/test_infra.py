"""The test fixtures themselves, against real servers: if these fail, nothing else can be trusted."""
from __future__ import annotations

import os
import pwd
import stat
import subprocess
import time

import pytest
import yaml

pytestmark = pytest.mark.integration

IS_ROOT = os.geteuid() == 0
PG_OWNER = "postgres" if IS_ROOT else pwd.getpwuid(os.geteuid()).pw_name


def _owner(path) -> str:
    return pwd.getpwuid(os.stat(path).st_uid).pw_name


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_session_cluster_runs_as_postgres_and_psql_works(pg15):
    assert pg15.version == 15
    assert pg15.host == "127.0.0.1" and pg15.port > 0
    assert pg15.psql("SELECT current_setting('server_version_num')::int / 10000") == "15"
    # Several statements, one of which cannot run in a transaction block, in one call.
    pg15.psql("DROP DATABASE IF EXISTS infra_db; CREATE DATABASE infra_db")
    pg15.psql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 3)", dbname="infra_db")
    assert pg15.psql("SELECT x FROM t ORDER BY x", dbname="infra_db") == "1\n2\n3"
    assert pg15.psql("SELECT current_setting('listen_addresses')") == "127.0.0.1"
    assert pg15.psql("SELECT current_setting('unix_socket_directories')") == str(pg15.socket_dir)
    assert pg15.psql("SELECT current_setting('fsync')") == "off"
    assert pg15.psql("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'postgres'") == "UTF8"
    # The server process belongs to the postgres OS user, and so does the data directory.
    pid = int((pg15.datadir / "postmaster.pid").read_text().splitlines()[0])
    assert pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name == PG_OWNER
    assert _owner(pg15.datadir) == PG_OWNER
    assert os.path.exists(os.path.join(pg15.socket_dir, f".s.PGSQL.{pg15.port}"))


def test_psql_errors_raise_with_the_server_message(pg15):
    from conftest import PsqlError
    with pytest.raises(PsqlError, match="no_such_table"):
        pg15.psql("SELECT * FROM no_such_table")
    # Unicode identifiers survive the round trip.
    pg15.psql('DROP DATABASE IF EXISTS "Ünïcode db"; CREATE DATABASE "Ünïcode db"')
    pg15.psql('CREATE TABLE "Tåble ü" ("Côl" text); INSERT INTO "Tåble ü" VALUES (\'日本語\')', dbname="Ünïcode db")
    assert pg15.psql('SELECT "Côl" FROM "Tåble ü"', dbname="Ünïcode db") == "日本語"


def test_make_cluster_per_version_stop_start_and_settings(pg_version, make_cluster):
    cluster = make_cluster(version=pg_version, work_mem="8MB")
    assert cluster.version == int(pg_version)
    assert cluster.psql("SELECT current_setting('server_version_num')::int / 10000") == pg_version
    assert cluster.psql("SELECT current_setting('work_mem')") == "8MB"
    assert (cluster.bin_dir / "pg_dump").exists()
    cluster.psql("CREATE TABLE keep (x int); INSERT INTO keep VALUES (42)")
    cluster.stop()
    assert not cluster.is_running()
    cluster.start()
    assert cluster.psql("SELECT x FROM keep") == "42"
    assert cluster.execute_many(["SELECT 1", "SELECT 2;"]) == "1\n2"


def test_clusters_of_every_major_side_by_side(pg15, make_cluster, pg_bins):
    from conftest import SUPPORTED_VERSIONS
    clusters = {"15": pg15}
    for version in SUPPORTED_VERSIONS[1:]:
        pg_bins(version)  # skips (with the reason) where a major is missing; fails with CI=true
        clusters[version] = make_cluster(version=version)
    assert len({c.port for c in clusters.values()}) == len(SUPPORTED_VERSIONS)
    for version, cluster in clusters.items():
        assert cluster.psql("SHOW server_version_num")[:2] == version


def test_every_supported_major_has_its_own_full_tool_set(pg_version, pg_bins):
    """Each major's bin directory is one major throughout: the server, the client tools and, from 17
    on, pg_combinebackup and pg_walsummary (a newer major's refuses an older backup)."""
    tools = ["postgres", "initdb", "pg_ctl", "psql", "pg_dump", "pg_restore", "pg_basebackup", "pg_verifybackup",
             "pg_waldump"]
    if int(pg_version) >= 17:
        tools += ["pg_combinebackup", "pg_walsummary"]
    for tool in tools:
        out = subprocess.run([str(pg_bins(pg_version) / tool), "--version"], capture_output=True, text=True,
                             check=True).stdout
        assert f"(PostgreSQL) {pg_version}." in out, f"{tool}: {out!r}"


@pytest.mark.parametrize("version", ["17", "18"])
def test_wal_summaries_for_incremental_backups(version, make_cluster):
    cluster = make_cluster(version=version, summarize_wal=True, wal_level="replica")
    assert cluster.psql("SHOW summarize_wal") == "on"
    cluster.psql("CREATE TABLE s AS SELECT generate_series(1, 1000) g; CHECKPOINT")
    redo = cluster.psql("SELECT redo_lsn FROM pg_control_checkpoint()")  # summaries end at a checkpoint's redo
    deadline = time.monotonic() + 60
    while cluster.psql(f"SELECT summarized_lsn >= '{redo}' FROM pg_get_wal_summarizer_state()") != "t":
        assert time.monotonic() < deadline, "the WAL summarizer did not catch up in 60 s"
        time.sleep(0.2)
    assert int(cluster.psql("SELECT count(*) FROM pg_available_wal_summaries()")) >= 1


def test_a_missing_major_fails_in_ci_and_skips_elsewhere(monkeypatch):
    import conftest
    monkeypatch.setattr(conftest, "find_pg_bin_dir", lambda version: (None, "not installed here"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and not installed here"):
        conftest.pg_bins("17")
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="not installed here"):
        conftest.pg_bins("17")


def test_s3_server_put_get_and_restart(s3_server):
    client = s3_server.client()
    client.put_object(Bucket=s3_server.bucket, Key="a/b.txt", Body=b"hello \x00 world")
    assert client.get_object(Bucket=s3_server.bucket, Key="a/b.txt")["Body"].read() == b"hello \x00 world"
    other = s3_server.create_bucket("pgb-infra-other")
    assert other in [b["Name"] for b in client.list_buckets()["Buckets"]]

    port = s3_server.port
    s3_server.stop()
    assert not s3_server.is_running()
    with pytest.raises(Exception):
        s3_server.client(config=None).head_bucket(Bucket=s3_server.bucket)
    s3_server.start()
    assert s3_server.port == port and s3_server.endpoint_url == f"http://127.0.0.1:{port}"
    # State is gone after a restart, but the test's bucket is back (empty).
    client = s3_server.client()
    assert client.list_objects_v2(Bucket=s3_server.bucket).get("KeyCount") == 0
    client.put_object(Bucket=s3_server.bucket, Key="again", Body=b"x")
    assert client.get_object(Bucket=s3_server.bucket, Key="again")["Body"].read() == b"x"


def test_s3_buckets_are_per_test(s3_server):
    client = s3_server.client()
    assert client.list_objects_v2(Bucket=s3_server.bucket).get("KeyCount") == 0


def test_s3_credentials_file_is_private_to_postgres(s3_server):
    path = s3_server.credentials_file
    assert _owner(path) == PG_OWNER and _mode(path) == 0o600
    text = open(path).read()
    assert "[default]" in text and "aws_access_key_id" in text and "aws_secret_access_key" in text


def test_workdir_is_private_to_postgres(workdir):
    assert _owner(workdir) == PG_OWNER
    assert _mode(workdir) == 0o700
    assert os.path.isabs(workdir) and not os.listdir(workdir)
    assert (workdir / "x").parent == workdir.path
    # The postgres user can write there (the agent creates its repo/state inside).
    probe = os.path.join(workdir, "probe")
    cmd = ["touch", probe]
    subprocess.run(["runuser", "-u", "postgres", "--", *cmd] if IS_ROOT else cmd, check=True)
    assert _owner(probe) == PG_OWNER


def test_write_config_local_and_s3(pg15, s3_server, workdir, write_config):
    local = write_config(workdir, "main", cluster=pg15, backup={"row_counts": True})
    assert _owner(local) == PG_OWNER and _mode(local) == 0o600
    cfg = yaml.safe_load(open(local))
    assert cfg["cluster"] == "main"
    assert cfg["postgres"] == {"host": "127.0.0.1", "port": pg15.port, "user": "postgres",
                               "bin_dir": str(pg15.bin_dir)}
    assert cfg["repository"] == {"type": "local", "path": os.path.join(workdir, "repo")}
    assert cfg["encryption"]["mode"] == "passphrase"
    passphrase = cfg["encryption"]["passphrase_file"]
    assert _owner(passphrase) == PG_OWNER and _mode(passphrase) == 0o600 and open(passphrase).read().strip()
    assert cfg["paths"]["state_dir"] == os.path.join(workdir, "state")
    assert cfg["backup"] == {"row_counts": True}

    remote = write_config(workdir, pg15, s3=s3_server, config_name="s3.yml", s3_overrides={"max_attempts": 2},
                          encryption={"mode": "public-key", "public_key_file": "/nonexistent.asc"})
    cfg = yaml.safe_load(open(remote))
    assert cfg["repository"]["type"] == "s3"
    assert cfg["repository"]["s3"] == {"bucket": s3_server.bucket, "endpoint_url": s3_server.endpoint_url,
                                       "region": "us-east-1", "force_path_style": True,
                                       "credentials_file": s3_server.credentials_file, "max_attempts": 2}
    assert cfg["encryption"] == {"mode": "public-key", "public_key_file": "/nonexistent.asc"}

    # The agent's own schema accepts what the helper writes.
    from pg_backup import config as config_mod
    settings, problems = config_mod.parse(yaml.safe_load(open(local)))
    assert problems == []
    assert settings.postgres.port == pg15.port


def test_run_agent_runs_the_cli_as_postgres(pg15, workdir, write_config, run_agent):
    cfg = write_config(workdir, "infra", cluster=pg15)
    result = run_agent(cfg, "config", "validate", check=False)
    assert result.rc == 0, result.describe()
    assert isinstance(result.data, dict)
    with pytest.raises(AssertionError, match="exit code 2"):
        run_agent(cfg, "no-such-command")
    # A background run reports the agent's own pid, and its owner is postgres.
    proc = run_agent(cfg, "--help", json=False, background=True)
    assert proc.wait(timeout=60) == 0
    assert "usage" in proc.stdout_text().lower()
