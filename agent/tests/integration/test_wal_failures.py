"""WAL archiving when things go wrong, and the parts that depend on sizes and time: an S3 endpoint that
stops answering under write load, pushes killed mid-upload, other WAL segment sizes, prefetched files
that no longer match, and WAL retention next to real physical base backups."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time

import pytest

from conftest import pg_bins
from pgb_wal_support import (SegsizeCluster, enable_archiving, ready_count, segment_copy, switch_segments,
                             wait_archived, wait_for)
from test_wal_archiving import open_archive

pytestmark = pytest.mark.integration


def _connected_to(pid: int, port: int) -> bool:
    """True once process ``pid`` has an established TCP connection to 127.0.0.1:``port``."""
    try:
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
        with open("/proc/net/tcp") as fh:
            rows = [line.split() for line in fh.readlines()[1:]]
    except OSError:
        return False
    return any(r[2].endswith(f":{port:04X}") and r[3] == "01" and r[9] in inodes for r in rows)


def test_s3_down_under_write_load_keeps_the_wal_and_the_backlog_drains(make_cluster, s3_server, workdir,
                                                                       write_config, run_agent):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    # No outage tolerance: each push fails within seconds (riding outages out is test_s3_outage.py's
    # subject), so the archiver's failures and its backlog come without waiting out a 15 s window each.
    cfg = write_config(workdir, "outage", cluster=cluster, s3=s3_server,
                       s3_overrides={"max_attempts": 1, "read_timeout": 2, "connect_timeout": 2,
                                     "wal_push_outage_tolerance_seconds": 0})
    enable_archiving(cluster, cfg)
    first = switch_segments(cluster, 1)[0]
    wait_archived(cluster, first)
    failed_before = int(cluster.psql("SELECT failed_count FROM pg_stat_archiver"))
    os.kill(s3_server.pid, signal.SIGSTOP)
    try:
        during = switch_segments(cluster, 4)
        wait_for(lambda: int(cluster.psql("SELECT failed_count FROM pg_stat_archiver")) > failed_before, 60,
                 what="archive_command to fail while the endpoint is frozen")
        assert ready_count(cluster) >= 3                  # PostgreSQL keeps every unarchived segment
        for name in during:
            assert (cluster.datadir / "pg_wal" / name).exists()
    finally:
        os.kill(s3_server.pid, signal.SIGCONT)
    log = cluster.log_file.read_text(errors="replace")
    assert "pg-backup: error:" in log and "failed with exit code 5" in log
    assert "terminated by signal" not in log and "exit code 13" not in log
    after = switch_segments(cluster, 1)                   # also wakes the archiver from its retry pause
    wait_archived(cluster, after[-1], timeout=120)
    archive = open_archive(cfg)
    assert archive.gaps(first) == []
    for name in during[:2]:
        got = run_agent(cfg, "wal-fetch", name, str(workdir / name), json=False, check=False)
        assert got.rc == 0, got.describe()
        assert (workdir / name).read_bytes() == (cluster.datadir / "pg_wal" / name).read_bytes()


def test_a_push_killed_mid_upload_leaves_nothing_and_the_retry_succeeds(make_cluster, s3_server, workdir,
                                                                        write_config, run_agent):
    cluster = make_cluster("15", archive_mode="on", archive_command="/bin/true", wal_level="replica")
    names = switch_segments(cluster, 3, rows=60000)
    cfg = write_config(workdir, "killed", cluster=cluster, s3=s3_server,
                       wal={"uploader_idle_seconds": 0, "push_parallel": 1},
                       s3_overrides={"max_attempts": 1, "read_timeout": 60})
    assert run_agent(cfg, "wal-push", str(segment_copy(cluster, names[0], workdir / "a"))).rc == 0
    archive = open_archive(cfg)
    client = s3_server.client()
    victim = segment_copy(cluster, names[1], workdir / "b")

    for how in ("SIGTERM", "SIGKILL"):
        os.kill(s3_server.pid, signal.SIGSTOP)
        try:
            proc = run_agent(cfg, "wal-push", str(victim), background=True, json=False)
            wait_for(lambda: _connected_to(proc.pid, s3_server.port) or proc.poll() is not None, 60,
                     what="the push to reach the (frozen) endpoint")
            assert proc.poll() is None, proc.stderr_text()
            time.sleep(0.5)                                # the request body is on its way
            if how == "SIGTERM":                           # e.g. PostgreSQL shutting down
                proc.send_signal(signal.SIGTERM)
                rc = proc.wait(timeout=30)
                assert rc == 5, (rc, proc.stderr_text())       # not >= 128: PostgreSQL just retries
                assert "SIGTERM; nothing was acknowledged" in proc.stderr_text(), proc.stderr_text()
            else:
                assert proc.kill9() == -signal.SIGKILL
        finally:
            os.kill(s3_server.pid, signal.SIGCONT)
        time.sleep(0.5)
        assert not archive.has(names[1]), how
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_server.bucket).get("Contents", [])]
        assert not [k for k in keys if names[1] in k], keys

    retry = run_agent(cfg, "wal-push", str(victim))
    assert retry.data["outcome"] == "stored"
    got = run_agent(cfg, "wal-fetch", names[1], str(workdir / "back"), json=False)
    assert (workdir / "back").read_bytes() == victim.read_bytes() and got.rc == 0


@pytest.mark.parametrize("version,segsize,backend", [("16", 1, "local"), ("15", 64, "s3")])
def test_other_wal_segment_sizes(version, segsize, backend, s3_server, workdir, write_config, run_agent):
    cluster = SegsizeCluster(version, pg_bins(version), segsize, {
        "archive_mode": "on", "archive_command": "", "wal_level": "replica",
        "max_wal_size": f"{max(segsize * 4, 32)}MB", "min_wal_size": f"{max(segsize * 2, 16)}MB"})
    try:
        cluster.init().start()
        cfg = write_config(workdir, f"seg{segsize}", cluster=cluster, s3=s3_server if backend == "s3" else None)
        enable_archiving(cluster, cfg)
        names = switch_segments(cluster, 4, rows=2000)
        wait_archived(cluster, names[-1])
        archive = open_archive(cfg)
        assert archive.identity()["wal_segment_size"] == segsize << 20
        assert archive.segment_size() == segsize << 20
        segments = [e for e in archive.entries() if e.kind == "segment"]
        assert [e.segno for e in segments] == list(range(segments[0].segno, segments[-1].segno + 1))
        assert archive.gaps() == []
        got = run_agent(cfg, "wal-fetch", names[1], str(workdir / "seg"), json=False, check=False)
        assert got.rc == 0, got.describe()
        assert (workdir / "seg").read_bytes() == (cluster.datadir / "pg_wal" / names[1]).read_bytes()
        assert len((workdir / "seg").read_bytes()) == segsize << 20
    finally:
        cluster.destroy()


def test_prefetched_segments_are_checked_before_they_are_served(make_cluster, workdir, write_config, run_agent):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(workdir, "prefetch", cluster=cluster, wal={"fetch_prefetch": 3})
    enable_archiving(cluster, cfg)
    names = switch_segments(cluster, 5, rows=30000)
    wait_archived(cluster, names[-1])
    original = {n: (cluster.datadir / "pg_wal" / n).read_bytes() for n in names}
    assert run_agent(cfg, "wal-fetch", names[0], str(workdir / "0")).data["source"] == "archive"
    spool = workdir / "state" / "wal-spool"
    prefetch = spool / os.listdir(spool)[0] / "prefetch"
    wait_for(lambda: all((prefetch / n).exists() and (prefetch / f"{n}.json").exists() for n in names[1:4]), 60,
             what="the next three segments in the prefetch spool")
    with open(prefetch / names[1], "r+b") as fh:          # damaged on disk after it was checked
        fh.seek(1000)
        fh.write(b"\x00\xff")
    first = run_agent(cfg, "wal-fetch", names[1], str(workdir / "1")).data
    assert first["source"] == "archive" and (workdir / "1").read_bytes() == original[names[1]]
    second = run_agent(cfg, "wal-fetch", names[2], str(workdir / "2")).data
    assert second["source"] == "prefetched" and (workdir / "2").read_bytes() == original[names[2]]
    assert not (prefetch / names[2]).exists()             # served by rename
    # The archive's object changed meanwhile (deleted and stored again): the prefetched copy is dropped.
    wait_for(lambda: (prefetch / names[3]).exists(), 30, what=f"{names[3]} prefetched")
    record = json.loads((prefetch / f"{names[3]}.json").read_text())
    record["object_size"] += 1
    (prefetch / f"{names[3]}.json").write_text(json.dumps(record))
    third = run_agent(cfg, "wal-fetch", names[3], str(workdir / "3")).data
    assert third["source"] == "archive" and (workdir / "3").read_bytes() == original[names[3]]
    # PostgreSQL's own calls (no --json) are served from the spool by the fast path.
    wait_for(lambda: (prefetch / names[4]).exists(), 30, what=f"{names[4]} prefetched")
    fast = run_agent(cfg, "--quiet", "wal-fetch", names[4], str(workdir / "4"), json=False)
    assert fast.rc == 0 and fast.stdout == "" and (workdir / "4").read_bytes() == original[names[4]]
    assert not (prefetch / names[4]).exists()


def test_prune_keeps_the_wal_that_retained_base_backups_need(make_cluster, workdir, write_config, run_agent):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(workdir, "walret", cluster=cluster, physical={"checkpoint": "fast"},
                       retention={"wal_hours": 1, "daily_days": 2})
    enable_archiving(cluster, cfg)
    wait_archived(cluster, switch_segments(cluster, 2)[-1])
    nothing = run_agent(cfg, "prune", "--dry-run").data["wal"]
    assert nothing["deleted"] == 0 and "no physical backup" in nothing["reason"]

    b1 = run_agent(cfg, "backup", "--physical", "--tier", "daily").data["backup_id"]
    switch_segments(cluster, 3)
    b2 = run_agent(cfg, "backup", "--physical", "--tier", "daily").data["backup_id"]
    last = switch_segments(cluster, 2)[-1]
    wait_archived(cluster, last)
    m1, m2 = (run_agent(cfg, "show", b).data["manifest"] for b in (b1, b2))
    archive = open_archive(cfg)
    before = [e.name for e in archive.entries() if e.kind == "segment"]
    needed_b1 = [n for n in before if m1["start_wal"] <= n <= m1["stop_wal"]]
    assert needed_b1 and m2["start_wal"] > m1["stop_wal"]

    # Two hours later both backups started before the 1 h window: the newer one anchors it.
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    dry = run_agent(cfg, "prune", "--dry-run", env={"PG_BACKUP_TEST_NOW": later}).data["wal"]
    assert dry["anchor"] == b2 and dry["deleted"] > 0
    assert [e.name for e in archive.entries() if e.kind == "segment"] == before   # dry run deletes nothing
    done = run_agent(cfg, "prune", env={"PG_BACKUP_TEST_NOW": later}).data
    assert {k["backup_id"] for k in done["kept"]} >= {b1, b2} and done["wal"]["deleted"] == dry["deleted"]
    after = [e.name for e in archive.entries() if e.kind == "segment"]
    assert all(n in after for n in needed_b1)                         # b1 stays restorable
    assert all(n in after for n in before if n >= m2["start_wal"])    # and the window after b2
    assert not [n for n in after if n < m1["start_wal"]]
    assert not [n for n in after if m1["stop_wal"] < n < m2["start_wal"]]
    assert archive.gaps(m2["start_wal"]) == []
    assert any(e.kind == "backup" for e in archive.entries())           # .backup files of kept ranges stay

    # Three days later b1 is past the daily retention: it goes, and with it the WAL only it needed.
    much_later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    gone = run_agent(cfg, "prune", env={"PG_BACKUP_TEST_NOW": much_later}).data
    assert [d["backup_id"] for d in gone["deleted"]] == [b1]
    final = [e.name for e in archive.entries() if e.kind == "segment"]
    assert final and min(final) == m2["start_wal"] and archive.gaps(m2["start_wal"]) == []


def test_the_resident_uploader_leaves_when_postgresql_stops_calling(make_cluster, workdir, write_config):
    from pg_backup import config as config_mod
    from pg_backup.wal.spool import Spool, is_locked, spool_namespace, uploader_lock_path

    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(workdir, "leave", cluster=cluster, wal={"uploader_idle_seconds": 3})
    enable_archiving(cluster, cfg)
    wait_archived(cluster, switch_segments(cluster, 2)[-1])
    settings = config_mod.load(cfg, check_files=False)
    spool = Spool(os.path.join(settings.wal_spool_path, spool_namespace(settings)))   # (we are root here)
    lock = uploader_lock_path(spool, str(cluster.datadir / "pg_wal"))
    assert is_locked(lock)                                  # started by the first push, still there
    # archive_command now points elsewhere while WAL keeps coming: the uploader must not go on
    # storing into this archive behind PostgreSQL's back.
    cluster.psql("ALTER SYSTEM SET archive_command = '/bin/true'; SELECT pg_reload_conf()")
    deadline = time.monotonic() + 20
    while is_locked(lock) and time.monotonic() < deadline:
        switch_segments(cluster, 1, rows=2000)
    assert not is_locked(lock), "the uploader kept running without wal-push calls"
    # And it goes with its postmaster.
    enable_archiving(cluster, cfg)
    wait_archived(cluster, switch_segments(cluster, 1)[-1])
    assert is_locked(lock)
    cluster.stop()
    wait_for(lambda: not is_locked(lock), 10, what="the uploader to exit after the postmaster")
