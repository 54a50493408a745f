"""Storage outages ridden out by time (repository.s3.outage_tolerance_seconds), through a TCP forwarder
between the agent and the real moto_server that the tests cut and restore (pgb_forwarder)."""
from __future__ import annotations

import datetime as dt
import time

import pytest

from pgb_forwarder import TcpForwarder
from pgb_wal_support import enable_archiving, segment_copy, switch_segments, wait_archived, wait_for

PART_MIB = 5


@pytest.fixture
def forwarder(s3_server):
    fwd = TcpForwarder(s3_server.host, s3_server.port)
    yield fwd
    fwd.close()


def _fill(cluster, dbname: str, mib: int, *, reuse: bool = False) -> None:
    """Incompressible rows: the dump is about ``mib`` MiB stored, several parts. ``reuse``: keep the
    database a previous case on this (session-wide) cluster filled the same way, only read since."""
    rows = mib * 1024 * 1024 // 1000
    if reuse and cluster.psql(f"SELECT count(*) FROM pg_database WHERE datname = '{dbname}'") == "1":
        if cluster.psql("SELECT count(*) FROM blobs", dbname=dbname, check=False) == str(rows):
            return
    cluster.psql(f"DROP DATABASE IF EXISTS {dbname}")
    cluster.psql(f"CREATE DATABASE {dbname}")
    cluster.psql("CREATE TABLE blobs AS SELECT g AS id, (SELECT string_agg(md5(random()::text || i), '') "
                 "FROM generate_series(1, 31) i WHERE g > 0) AS data "
                 f"FROM generate_series(1, {rows}) g", dbname=dbname)


def _config(write_config, workdir, name, cluster, s3_server, forwarder, wal=None, **s3):
    return write_config(workdir, name, cluster=cluster, s3=s3_server, backup={"globals": False},
                        wal=wal or {"uploader_idle_seconds": 0}, physical={"checkpoint": "fast"},
                        s3_overrides=dict({"endpoint_url": forwarder.url(), "part_size_mib": PART_MIB,
                                           "connect_timeout": 2, "read_timeout": 20}, **s3))


def _uploads(s3_server, under: str = "/backups/"):
    """Incomplete multipart uploads of backup objects (not of WAL segments)."""
    uploads = s3_server.client().list_multipart_uploads(Bucket=s3_server.bucket).get("Uploads", [])
    return [u for u in uploads if under in u["Key"]]


def _manifests(s3_server):
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_server.bucket).get("Contents", [])]
    return [k for k in keys if k.endswith("manifest.json")]


def _outage_in_part_2(forwarder, seconds):
    """Arm an outage of ``seconds`` that starts inside the body of the second part of the first big object
    (parts hold 5 to 6 MiB, so 8 MiB sent is past part 1): in the middle of the backup, by construction."""
    forwarder.cut_mid_body(8 << 20, down_for=seconds)


def _outage_over(forwarder, result) -> None:
    """Wait for the armed outage to end; fail clearly if it never began."""
    assert forwarder.restorer is not None, f"the outage never began:\n{result.describe()}"
    forwarder.restorer.join()


def _ridden_out(result, seconds):
    assert result.rc == 0, result.describe()
    assert "not answering" in result.stderr and "retrying for up to" in result.stderr, result.stderr


@pytest.mark.parametrize("seconds", [4, 4, 4, 30], ids=["4s-a", "4s-b", "4s-c", "30s"])
def test_an_outage_in_the_middle_of_a_logical_backup_is_ridden_out(pg15, s3_server, forwarder, workdir,
                                                                   write_config, run_agent, seconds):
    _fill(pg15, "outlog", mib=24, reuse=True)     # the same data for every case: filled once per cluster
    cfg = _config(write_config, workdir, "outlog", pg15, s3_server, forwarder)
    _outage_in_part_2(forwarder, seconds)
    result = run_agent(cfg, "backup", "--tier", "daily", "--database", "outlog", check=False, timeout=300)
    _outage_over(forwarder, result)
    _ridden_out(result, seconds)
    assert forwarder.mid_body_cuts == 1 and forwarder.cuts == 1
    backup_id = result.data["backup_id"]
    assert _uploads(s3_server) == []                       # resumed, completed: no second upload left behind
    run_agent(cfg, "verify", backup_id, "--deep")


@pytest.mark.parametrize("seconds", [4, 4, 30], ids=["4s-a", "4s-b", "30s"])
def test_an_outage_in_the_middle_of_a_physical_backup_is_ridden_out(make_cluster, s3_server, forwarder, workdir,
                                                                    write_config, run_agent, seconds):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    # WAL archiving goes straight to the endpoint: this test is about the backup's own uploads.
    archive_cfg = write_config(workdir, "outphys", cluster=cluster, s3=s3_server, config_name="archive.yml",
                               wal={"uploader_idle_seconds": 0})
    enable_archiving(cluster, archive_cfg)
    _fill(cluster, "outphys", mib=24)
    cfg = _config(write_config, workdir, "outphys", cluster, s3_server, forwarder)
    _outage_in_part_2(forwarder, seconds)
    result = run_agent(cfg, "backup", "--physical", check=False, timeout=300)
    _outage_over(forwarder, result)
    _ridden_out(result, seconds)
    assert forwarder.mid_body_cuts == 1
    assert _uploads(s3_server) == []
    run_agent(cfg, "verify", result.data["backup_id"], "--deep")


def test_a_wal_push_rides_out_a_short_outage_in_the_middle_of_its_upload(make_cluster, s3_server, forwarder,
                                                                         workdir, write_config, run_agent):
    """The body of the segment's upload is cut half way and the endpoint stays away for 4 s: the push
    (archive_command) waits it out within wal_push_outage_tolerance_seconds and succeeds."""
    cluster = make_cluster("15", archive_mode="on", archive_command="/bin/true", wal_level="replica")
    cluster.psql("CREATE TABLE walnoise (t text)")
    names = []
    for _ in range(3):   # segments mostly made of hex text: several MiB each once compressed
        cluster.psql("INSERT INTO walnoise SELECT (SELECT string_agg(md5(random()::text || i), '') "
                     "FROM generate_series(1, 10) i WHERE g > 0) FROM generate_series(1, 30000) g")
        names.append(cluster.psql("SELECT pg_walfile_name(pg_current_wal_lsn())"))
        cluster.psql("SELECT pg_switch_wal()")
    cfg = _config(write_config, workdir, "outwal", cluster, s3_server, forwarder,
                  wal={"uploader_idle_seconds": 0, "push_parallel": 1})
    for i, name in enumerate(names):
        segment = segment_copy(cluster, name, workdir / f"w{i}")
        forwarder.cut_mid_body(1 << 20, down_for=4)
        result = run_agent(cfg, "wal-push", str(segment), json=False, check=False, timeout=120)
        assert forwarder.mid_body_cuts == i + 1, result.describe()
        _outage_over(forwarder, result)
        _ridden_out(result, 4)
        got = run_agent(cfg, "wal-fetch", name, str(workdir / f"fetched-{name}"), json=False)
        assert got.rc == 0
        assert (workdir / f"fetched-{name}").read_bytes() == segment.read_bytes()


def test_wal_archiving_catches_up_after_a_30_s_outage(make_cluster, s3_server, forwarder, workdir, write_config,
                                                      run_agent):
    """Longer than wal_push_outage_tolerance_seconds: pushes fail (exit 5) and PostgreSQL's archiver
    retries them by itself; every segment reaches the archive once the endpoint is back, none is lost."""
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    cfg = _config(write_config, workdir, "outarch", cluster, s3_server, forwarder)
    enable_archiving(cluster, cfg)
    first = switch_segments(cluster, 1)[0]
    wait_archived(cluster, first)
    restorer = forwarder.outage(30)
    during = switch_segments(cluster, 3)
    restorer.join()
    wait_archived(cluster, during[-1], timeout=150)   # the archiver retries at the latest every 60 s
    for name in during:
        got = run_agent(cfg, "wal-fetch", name, str(workdir / name), json=False)
        assert got.rc == 0
        assert (workdir / name).read_bytes() == (cluster.datadir / "pg_wal" / name).read_bytes()


def test_an_outage_longer_than_the_window_fails_cleanly(pg15, s3_server, forwarder, workdir, write_config,
                                                        run_agent):
    _fill(pg15, "outlong", mib=16)
    cfg = _config(write_config, workdir, "outlong", pg15, s3_server, forwarder, outage_tolerance_seconds=5)
    forwarder.cut_mid_body(8 << 20, down_for=3600)        # down until restored below
    t0 = time.monotonic()
    try:
        result = run_agent(cfg, "backup", "--tier", "daily", "--database", "outlong", check=False, json=False,
                           timeout=120)
        waited = time.monotonic() - t0
    finally:
        forwarder.restore()
    assert forwarder.mid_body_cuts == 1
    rc, err = result.rc, result.stderr
    assert rc == 5, err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert "storage unreachable for 5 s" in errors[0] and forwarder.url() in errors[0], errors[0]
    assert 5 <= waited < 60, waited
    assert "Traceback" not in err
    assert run_agent(cfg, "list").data["backups"] == []
    assert _manifests(s3_server) == []
    # The incomplete upload is left for prune, which aborts it after the grace period.
    assert _uploads(s3_server)
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    run_agent(cfg, "prune", env={"PG_BACKUP_TEST_NOW": later})
    assert _uploads(s3_server) == []


def test_a_connection_cut_in_the_middle_of_a_part_body_is_retried_never_stored_truncated(
        pg15, s3_server, forwarder, workdir, write_config, run_agent):
    _fill(pg15, "outcut", mib=24)
    pg15.psql("DROP DATABASE IF EXISTS outcut2")
    cfg = _config(write_config, workdir, "outcut", pg15, s3_server, forwarder, max_concurrency=1)
    # Parts go one at a time and hold 5 to 6 MiB: 8 MiB towards the endpoint is inside part 2's body.
    forwarder.cut_mid_body(8 << 20)
    result = run_agent(cfg, "backup", "--tier", "daily", "--database", "outcut", check=False, timeout=300)
    assert result.rc == 0, result.describe()
    assert forwarder.mid_body_cuts == 1
    backup_id = result.data["backup_id"]
    run_agent(cfg, "verify", backup_id, "--deep")
    run_agent(cfg, "restore", backup_id, "--database", "outcut", "--target-database", "outcut2")
    q = "SELECT count(*), md5(string_agg(data, '' ORDER BY id)) FROM blobs"
    assert pg15.psql(q, dbname="outcut2") == pg15.psql(q, dbname="outcut")


def test_a_download_cut_in_the_middle_resumes_where_it_stopped(pg15, s3_server, forwarder, workdir, write_config,
                                                               run_agent):
    """Reads ride out outages too: verify --deep and a restore whose download is cut half way (and the
    endpoint away for 4 s) carry on from the offset reached, pinned to the object's ETag."""
    _fill(pg15, "outread", mib=12)
    pg15.psql("DROP DATABASE IF EXISTS outread2")
    cfg = _config(write_config, workdir, "outread", pg15, s3_server, forwarder)
    backup_id = run_agent(cfg, "backup", "--tier", "daily", "--database", "outread").data["backup_id"]
    forwarder.cut_mid_body(4 << 20, down_for=4, towards_endpoint=False)
    verified = run_agent(cfg, "verify", backup_id, "--deep", check=False)
    _outage_over(forwarder, verified)
    assert forwarder.mid_body_cuts == 1
    _ridden_out(verified, 4)
    forwarder.cut_mid_body(6 << 20, down_for=4, towards_endpoint=False)
    restored = run_agent(cfg, "restore", backup_id, "--database", "outread", "--target-database", "outread2",
                         check=False)
    _outage_over(forwarder, restored)
    assert forwarder.mid_body_cuts == 2
    _ridden_out(restored, 4)
    q = "SELECT count(*), md5(string_agg(data, '' ORDER BY id)) FROM blobs"
    assert pg15.psql(q, dbname="outread2") == pg15.psql(q, dbname="outread")
