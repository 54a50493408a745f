"""Point-in-time recovery fidelity against a real archiving PostgreSQL 15 (local repository; the
S3 path of backup, archive and recovery is in test_physical.py).

One cluster serves the module: its archive_command is the real ``pg-backup wal-push``.
A workload commits numbered rows (one transaction each, ``clock_timestamp()``) while the test takes
a physical base backup and records checkpoints between two commits: the server time, the WAL insert
position, a transaction id and a named restore point. Every recovery must hold exactly the set of
row ids committed at its target. Then the timeline case: a recovery that replaces production keeps
archiving, writes on its new timeline, and a second recovery reaches a point on that timeline.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import AgentRunner, ClusterFactory, WorkDir, free_port, give_to_pg_user, make_pg_dir, \
    run_pg, write_config
from pgb_pitr_support import (Checkpoint, Workload, connect, enable_archiving, ids_on, remove_tree, scratch_dir,
                              sql_on, stop, switch_and_wait_archived, wait_until)

pytestmark = pytest.mark.integration


@dataclass
class Env:
    cluster: Any
    cfg: str
    run: AgentRunner
    work: WorkDir
    backup: Dict[str, Any]
    logical_id: str
    cps: Dict[str, Checkpoint]
    all_ids: set
    dirs: List[str] = field(default_factory=list)

    def pitr(self, *args: Any, data_dir: str = "", port: int = 0, check: bool = True, json_out: bool = True):
        data_dir = data_dir or os.path.join(self.scratch(), "data")
        extra = ["--port", str(port or free_port())] if port is not None else []
        res = self.run(self.cfg, "pitr", "--data-dir", data_dir, *extra, *args, check=check, json=json_out,
                       timeout=300)
        return res, data_dir

    def scratch(self) -> str:
        path = scratch_dir()
        self.dirs.append(path)
        return path


@pytest.fixture(scope="module")
def env(pg_test_base):
    factory = ClusterFactory(pg_test_base)
    runner = AgentRunner(make_pg_dir(pg_test_base / "agent-output", 0o700), make_pg_dir(pg_test_base / "agent-tmp", 0o700))
    make_pg_dir(pg_test_base / "work", 0o700)
    work = WorkDir(tempfile.mkdtemp(prefix="pitr-", dir=pg_test_base / "work"))
    give_to_pg_user(work, 0o700)
    cluster = factory("15", archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(work, "pitr", cluster=cluster, backup={"globals": False},
                       physical={"checkpoint": "fast"})
    enable_archiving(cluster, cfg)
    cluster.psql("CREATE DATABASE app")
    workload = Workload(cluster.port).start()
    e = None
    try:
        workload.run_for(0.5)
        cps = {"before_backup": workload.checkpoint()}
        logical = runner(cfg, "backup", "--tier", "daily").data["backup_id"]
        backup = runner(cfg, "backup", "--physical").data
        for name, kwargs in (("t1", {}), ("t2", {"xid": True}), ("t3", {"restore_point": "before-cleanup"}),
                             ("t4", {})):
            workload.run_for(0.7)
            cps[name] = workload.checkpoint(**kwargs)
        workload.run_for(0.3)
    finally:
        workload.stop()
    switch_and_wait_archived(cluster)
    e = Env(cluster, cfg, runner, work, backup, logical, cps, set(workload.committed))
    yield e
    stop(*[str(sub) for d in e.dirs for sub in Path(d).iterdir()])
    for d in e.dirs:
        remove_tree(d)
    runner.cleanup()
    factory.cleanup()


def test_backup_manifest_and_list_show_the_window(env):
    b = env.backup["backup"]
    assert b["kind"] == "physical" and b["tier"] == "daily"
    assert b["start_wal"] <= b["stop_wal"] and b["timeline"] == 1
    listing = env.run(env.cfg, "list").data
    kinds = {x["backup_id"]: x["kind"] for x in listing["backups"]}
    assert kinds == {env.logical_id: "logical", env.backup["backup_id"]: "physical"}
    w = listing["recoverable_window"]
    assert w["start_backup_id"] == env.backup["backup_id"] and w["start_lsn"] == b["stop_lsn"]
    assert w["timelines"] == [1] and w["gaps"] == []
    assert w["end_time"] > env.cps["t4"].time  # the last checkpoint is inside the window
    text = env.run(env.cfg, "list", json=False).stdout
    assert "point-in-time recovery window:" in text and env.backup["backup_id"] in text
    backup_dir = env.work / "repo" / "pitr" / "backups" / env.backup["backup_id"]
    assert sorted(n for n in os.listdir(backup_dir) if ".tar.part-" not in n) == \
        ["backup_manifest.zst.gpg", "base.tar.zst.gpg", "manifest.json"]
    assert Path(backup_dir, "base.tar.zst.gpg").read_bytes()[:1] != b"\x1f"  # OpenPGP, not a plain tar or gzip


def _in_parallel(env, cases):
    """Start one pitr per case at once (each its own scratch server), then wait for all."""
    started = []
    for args in cases:
        port = free_port()
        data_dir = os.path.join(env.scratch(), "data")
        proc = env.run(env.cfg, "pitr", "--data-dir", data_dir, "--port", str(port), *args, background=True)
        started.append((proc, port))
    results = []
    for proc, port in started:
        res = proc.result(timeout=300)
        assert res.rc == 0, res.describe()
        results.append((res.data, port))
    return results


def test_time_targets_hold_exactly_the_rows_committed_before(env):
    names = ["t1", "t2", "t4"]
    results = _in_parallel(env, [["--target-time", env.cps[n].time] for n in names])
    for name, (doc, port) in zip(names, results):
        cp = env.cps[name]
        assert doc["backup_id"] == env.backup["backup_id"] and doc["started"] is True
        assert ids_on(port) == cp.ids, f"state at {name} ({cp.time}) differs"
        assert doc["reached"]["time"] <= cp.time and doc["reached"]["timeline"] >= 2
        assert doc["target"]["kind"] == "time" and "stopping before commit" in doc["stop_record"]
        assert set(doc["phases"]) == {"download", "decrypt_decompress", "extract", "sync", "startup", "wal_replay"}
        assert sql_on(port, "SELECT pg_is_in_recovery(), current_setting('archive_mode'), "
                            "current_setting('listen_addresses')") == (False, "off", "127.0.0.1")


def test_lsn_and_xid_targets(env):
    cp1, cp2 = env.cps["t1"], env.cps["t2"]
    (by_lsn, p1), (by_xid, p2), (_, p3) = _in_parallel(env, [
        ["--target-lsn", cp1.lsn], ["--target-xid", str(cp2.xid)], ["--target-xid", str(cp2.xid), "--exclusive"]])
    assert ids_on(p1) == cp1.ids and by_lsn["target"]["value"] == cp1.lsn.upper()
    assert ids_on(p2) == cp2.ids and "stopping after commit of transaction" in by_xid["stop_record"]
    assert ids_on(p3) == cp2.ids - {max(cp2.ids)}  # the target transaction itself is left out


def test_named_restore_point_with_no_start_then_started_by_hand(env):
    cp3 = env.cps["t3"]
    port = free_port()
    res, data_dir = env.pitr("--target-name", "before-cleanup", "--no-start", port=port)
    assert res.data["started"] is False and res.data["reached"] is None
    assert os.path.exists(os.path.join(data_dir, "recovery.signal"))
    conf = Path(data_dir, "postgresql.auto.conf").read_text()
    targets = [ln for ln in conf.splitlines() if ln.startswith("recovery_target") and "=" in ln]
    assert [t.split(" = ")[0] for t in targets] == ["recovery_target_name", "recovery_target_timeline",
                                                    "recovery_target_action"]
    assert "recovery_target_name = 'before-cleanup'" in conf and "archive_mode = 'off'" in conf
    assert "wal-fetch %f %p" in conf and f"port = '{port}'" in conf
    assert oct(os.stat(data_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(os.path.join(data_dir, "pg-backup.recovery.yml")).st_mode & 0o777) == "0o600"
    run_pg([str(env.cluster.bin_dir / "pg_ctl"), "-D", data_dir, "-l", os.path.join(data_dir, "manual.log"), "-w",
            "start"], cwd=data_dir)
    wait_until(lambda: _promoted(port), 120, "the recovered server to be promoted")
    assert ids_on(port) == cp3.ids


def _promoted(port: int) -> bool:
    try:
        return sql_on(port, "SELECT NOT pg_is_in_recovery()")[0]
    except Exception:  # noqa: BLE001 - still starting
        return False


def test_targets_outside_the_window_print_it_and_change_nothing(env):
    stop_lsn = env.backup["backup"]["stop_lsn"]
    for args, words in ((["--target-time", env.cps["before_backup"].time], "before the end of"),
                        (["--target-time", "2099-01-01T00:00:00Z"], "after the newest archived WAL"),
                        (["--target-lsn", "FF/0"], "after the newest archived WAL")):
        res, data_dir = env.pitr(*args, check=False)
        assert res.rc == 7, res.describe()
        assert words in res.stderr and "outside the recoverable window" in res.stderr, res.stderr
        assert stop_lsn in res.stderr and env.backup["backup_id"] in res.stderr  # the window is printed
        assert res.data["window"]["start_lsn"] == stop_lsn and res.data["error"]["exit_code"] == 7
        assert not os.path.exists(data_dir)
    bad = env.run(env.cfg, "pitr", "--target-time", "2026-11-25 10:00:00", "--data-dir", "/tmp/x", check=False)
    assert bad.rc == 2 and "no time zone" in bad.stderr


def test_kinds_are_refused_across_restore_and_pitr(env):
    res, _ = env.pitr("--latest", "--backup-id", env.logical_id, check=False)
    assert res.rc == 2 and "is a logical backup" in res.stderr and "pg-backup restore" in res.stderr
    res = env.run(env.cfg, "restore", env.backup["backup_id"], "--database", "app", "--target-database", "x",
                  check=False)
    assert res.rc == 2 and "is a physical base backup" in res.stderr and "pitr" in res.stderr


def test_existing_data_dir_is_moved_aside_and_a_running_one_refused(env):
    data_dir = os.path.join(env.scratch(), "data")
    port = free_port()
    first, _ = env.pitr("--latest", data_dir=data_dir, port=port)
    assert first.data["moved_aside"] is None and ids_on(port) == env.all_ids

    busy, _ = env.pitr("--latest", data_dir=data_dir, port=free_port(), check=False)
    assert busy.rc == 9 and "is running in" in busy.stderr, busy.describe()
    assert ids_on(port) == env.all_ids  # untouched, still serving

    stop(data_dir)
    marker = Path(data_dir, "operator-notes.txt")
    marker.write_text("keep me\n")
    second, _ = env.pitr("--target-time", env.cps["t1"].time, data_dir=data_dir, port=port)
    aside = second.data["moved_aside"]
    assert aside and aside.startswith(data_dir + ".pitr-") and os.path.isdir(aside)
    assert Path(aside, "operator-notes.txt").read_text() == "keep me\n" and Path(aside, "PG_VERSION").exists()
    assert any("moved aside" in n for n in second.data["notes"])
    assert ids_on(port) == env.cps["t1"].ids


def test_new_timeline_keeps_archiving_and_is_recoverable(env):
    """The production-replacement case: recover to t2 with --keep-archiving, write on the new
    timeline (archived by the recovered server itself), then recover to a point on that timeline."""
    cp2 = env.cps["t2"]
    port = free_port()
    res, data_dir = env.pitr("--target-time", cp2.time, "--keep-archiving", port=port)
    tli = res.data["reached"]["timeline"]
    assert tli >= 2 and res.data["archiving"] is True
    mode, command = sql_on(port, "SELECT current_setting('archive_mode'), current_setting('archive_command')")
    assert mode == "on" and "wal-push" in command
    conf = Path(data_dir, "postgresql.auto.conf").read_text()
    assert "restore_command" not in conf and "recovery_target" not in conf  # recovery settings removed
    assert not os.path.exists(os.path.join(data_dir, "pg-backup.recovery.yml"))

    workload = Workload(port, start_id=100001).start()
    try:
        workload.run_for(0.7)
        on_new = workload.checkpoint()
        workload.run_for(0.5)
    finally:
        workload.stop()
    assert on_new.ids > cp2.ids and max(on_new.ids) > 100000
    with connect(port) as conn:
        segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
        wait_until(lambda: conn.execute("SELECT coalesce(last_archived_wal, '') >= %s FROM pg_stat_archiver",
                                        (segment,)).fetchone()[0], 60, f"{segment} archived by the new primary")
    assert (env.work / "repo" / "pitr" / "wal" / f"{tli:08X}" / f"{tli:08X}.history.zst.gpg").exists()

    window = env.run(env.cfg, "list").data["recoverable_window"]
    assert tli in window["timelines"] and window["end_segment"].startswith(f"{tli:08X}")

    port2 = free_port()
    again, _ = env.pitr("--target-time", on_new.time, port=port2)
    assert again.data["backup_id"] == env.backup["backup_id"]  # from the base backup on timeline 1
    assert ids_on(port2) == on_new.ids  # replayed timeline 1 up to the switch, then the new timeline
    assert again.data["reached"]["timeline"] == tli + 1
    stop(data_dir)
    json.dumps(again.data)  # plain JSON
