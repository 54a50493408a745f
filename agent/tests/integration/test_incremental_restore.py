"""Restoring incremental chains (PostgreSQL 17 and 18, real clusters, real pg_combinebackup).

One archiving cluster per major serves the module: a full backup and two incremental ones with
changes between them, then one more change whose WAL is archived (pgb_incremental_support.make_chain).
Every consumer of a physical backup takes the chain: ``pitr`` (exact content after the last
incremental), ``verify --deep`` (pg_verifybackup on the combined result), ``verify --restore``. The
faults run against a private copy of the repository, so the shared one stays intact: a tampered
middle member (exit 4), pg_combinebackup dying half-way (exit 6), a disk that fills up while
combining (exit 5, a real small tmpfs) all leave the target data directory exactly as it was; a
missing member makes the window skip the chain and fall back to an older base.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import AgentRunner, ClusterFactory, WorkDir, free_port, give_to_pg_user, make_pg_dir, run_pg, \
    write_config, write_pg_file
from pgb_incremental_support import Chain, content_digest, fill, incremental_cluster, incremental_config, make_chain
from pgb_pitr_support import scratch_dir, stop

pytestmark = pytest.mark.integration

MAJORS = ("17", "18")


@dataclass
class Env:
    major: str
    cluster: Any
    cfg: str
    run: AgentRunner
    work: WorkDir
    chain: Chain
    dirs: List[str] = field(default_factory=list)

    def scratch(self) -> str:
        path = scratch_dir("pgbi-")
        self.dirs.append(path)
        return path

    def repo_copy(self, name: str) -> str:
        """A configuration reading a private copy of the repository (same passphrase)."""
        copy = os.path.join(self.scratch(), "repo")
        run_pg(["cp", "-a", str(self.work / "repo"), copy])
        return write_config(self.work, "incr", cluster=self.cluster, config_name=f"{name}.yml",
                            repository_overrides={"path": copy}, physical={"checkpoint": "fast"})


def _repo_path(cfg: str) -> str:
    import yaml
    with open(cfg, encoding="utf-8") as fh:
        return yaml.safe_load(fh)["repository"]["path"]


@pytest.fixture(scope="module", params=MAJORS, ids=[f"pg{m}" for m in MAJORS])
def env(request, pg_test_base):
    factory = ClusterFactory(pg_test_base)
    runner = AgentRunner(make_pg_dir(pg_test_base / "agent-output", 0o700),
                         make_pg_dir(pg_test_base / "agent-tmp", 0o700))
    make_pg_dir(pg_test_base / "work", 0o700)
    work = WorkDir(tempfile.mkdtemp(prefix=f"incr-restore-{request.param}-", dir=pg_test_base / "work"))
    give_to_pg_user(work, 0o700)
    e = None
    try:
        cluster = incremental_cluster(factory, request.param)
        cfg = incremental_config(work, write_config, cluster)
        chain = make_chain(cluster, cfg, runner, 2)
        e = Env(request.param, cluster, cfg, runner, work, chain)
        yield e
    finally:
        runner.cleanup()
        factory.cleanup()
        for d in (e.dirs if e else []):
            stop(os.path.join(d, "data"))
            shutil.rmtree(d, ignore_errors=True)


def _tree_state(path: str) -> Dict[str, str]:
    """Every entry under ``path`` with a digest of its content (files) or its target (links)."""
    state: Dict[str, str] = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path)
            if os.path.islink(full):
                state[rel] = "-> " + os.readlink(full)
            elif os.path.isfile(full):
                state[rel] = hashlib.sha256(Path(full).read_bytes()).hexdigest()
            else:
                state[rel] = "dir"
    return state


def _existing_target(env: Env) -> str:
    """A data directory with content of its own, as an operator's previous cluster would be."""
    return _existing_target_in(env.scratch(), env.major)


def _assert_untouched(data_dir: str, before: Dict[str, str]) -> None:
    assert _tree_state(data_dir) == before, "the target data directory changed"
    parent = os.path.dirname(data_dir)
    assert os.listdir(parent) == [os.path.basename(data_dir)], f"left behind in {parent}: {os.listdir(parent)}"


def _pitr(env: Env, cfg: str, data_dir: str, *args: str, check: bool = True):
    return env.run(cfg, "pitr", "--data-dir", data_dir, "--port", str(free_port()), *args, check=check,
                   timeout=600)


def test_pitr_latest_restores_the_chain_with_exact_content(env):
    final_id = env.chain.backup_ids[-1]
    data_dir = _existing_target(env)
    res = _pitr(env, env.cfg, data_dir, "--latest")
    doc = res.data
    try:
        assert doc["backup_id"] == final_id
        assert content_digest(doc["port"]) == env.chain.final_digest
        assert {"download", "decrypt_decompress", "extract", "combine", "wal_replay"} <= set(doc["phases"])
        assert any("combined the chain " + " + ".join(env.chain.backup_ids) in n for n in doc["notes"]), doc["notes"]
        moved = doc["moved_aside"]
        assert moved and Path(moved, "keep-me.txt").read_text() == "the previous cluster's file\n"
        leftovers = [n for n in os.listdir(os.path.dirname(data_dir)) if "pgb-" in n]
        assert leftovers == [], leftovers
    finally:
        stop(data_dir)


def test_tampered_middle_member_is_refused_before_the_target_is_touched(env):
    cfg = env.repo_copy("tampered")
    middle = env.chain.backup_ids[1]
    [victim] = [p for p in Path(_repo_path(cfg)).rglob(f"{middle}/base.tar*")]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    data_dir = _existing_target(env)
    before = _tree_state(data_dir)
    res = _pitr(env, cfg, data_dir, "--latest", check=False)
    assert res.rc == 4, res.describe()
    assert middle in res.stderr and "SHA-256" in res.stderr and "left as it was" in res.stderr, res.stderr
    assert len([ln for ln in res.stderr.splitlines() if "error:" in ln]) == 1
    _assert_untouched(data_dir, before)
    deep = env.run(cfg, "verify", env.chain.backup_ids[-1], "--deep", check=False, timeout=600)
    assert deep.rc == 4, deep.describe()
    assert f"{middle}/base.tar" in deep.data["error"]["message"]


def test_missing_member_object_is_one_line_and_leaves_the_target_as_before(env):
    cfg = env.repo_copy("no-object")
    middle = env.chain.backup_ids[1]
    [victim] = [p for p in Path(_repo_path(cfg)).rglob(f"{middle}/backup_manifest*")]
    victim.unlink()       # pruned out of band, its manifest.json still there
    data_dir = _existing_target(env)
    before = _tree_state(data_dir)
    res = _pitr(env, cfg, data_dir, "--latest", check=False)
    assert res.rc == 7, res.describe()
    assert f"{middle}/backup_manifest" in res.stderr and "left as it was" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    _assert_untouched(data_dir, before)


def _wrapped_bin_dir(env: Env, script: str) -> str:
    """A server bin directory whose pg_combinebackup is wrapped by ``script`` (the real one is
    ``$REAL``); every other program is the real one (symlinks)."""
    real = env.cluster.bin_dir
    wrapped = os.path.join(env.scratch(), "bin")
    make_pg_dir(wrapped, 0o755)
    for name in os.listdir(real):
        if name != "pg_combinebackup":
            os.symlink(os.path.join(real, name), os.path.join(wrapped, name))
    write_pg_file(os.path.join(wrapped, "pg_combinebackup"),
                  f"#!/bin/sh\nREAL={real}/pg_combinebackup\n{script}\n", 0o755)
    return wrapped


def test_combine_dying_half_way_leaves_the_target_as_before(env):
    # The real pg_combinebackup, limited to files of 1 MiB: it writes the first files of the result,
    # then SIGXFSZ kills it in the middle of a larger one.
    wrapped = _wrapped_bin_dir(env, 'ulimit -f 2048\nexec "$REAL" "$@"')
    cfg = write_config(env.work, "incr", cluster=env.cluster, config_name="halfway.yml",
                       postgres={"server_bin_dir": wrapped}, physical={"checkpoint": "fast"})
    data_dir = _existing_target(env)
    before = _tree_state(data_dir)
    res = _pitr(env, cfg, data_dir, "--latest", check=False)
    assert res.rc == 6, res.describe()
    assert "pg_combinebackup failed combining the chain" in res.stderr and "left as it was" in res.stderr
    assert "killed by signal SIGXFSZ" in res.stderr
    _assert_untouched(data_dir, before)


def _mount_tmpfs(path: str, size: int) -> bool:
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                          capture_output=True, text=True, check=False)
    return proc.returncode == 0


def test_disk_full_while_combining_leaves_the_target_as_before(env):
    manifests = [json.loads(next(Path(_repo_path(env.cfg)).rglob(f"{b}/manifest.json")).read_text())
                 for b in env.chain.backup_ids]
    members = sum(o["raw_size"] for m in manifests for o in m["objects"] if o["role"] != "config")
    mnt = env.scratch()
    # Room for the extracted members (and the small files' page rounding), not for the combined result.
    if os.geteuid() != 0 or not _mount_tmpfs(mnt, members + 12 * 1024 * 1024):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        give_to_pg_user(mnt, 0o700)
        data_dir = _existing_target_in(mnt, env.major)
        before = _tree_state(data_dir)
        res = _pitr(env, env.cfg, data_dir, "--latest", check=False)
        assert res.rc == 5, res.describe()
        assert "disk full while combining the chain" in res.stderr and "free space on the filesystem" in res.stderr
        assert "left as it was" in res.stderr
        assert _tree_state(data_dir) == before
        assert os.listdir(mnt) == ["data"], os.listdir(mnt)
    finally:
        subprocess.run(["umount", mnt], check=False)


def _existing_target_in(parent: str, major: str) -> str:
    """``parent``/data with a PG_VERSION and a file of its own."""
    data_dir = os.path.join(parent, "data")
    make_pg_dir(data_dir, 0o700)
    write_pg_file(os.path.join(data_dir, "PG_VERSION"), f"{major}\n")
    write_pg_file(os.path.join(data_dir, "keep-me.txt"), "the previous cluster's file\n")
    return data_dir


def test_verify_deep_and_verify_restore_pass_on_the_chain(env):
    final_id = env.chain.backup_ids[-1]
    deep = env.run(env.cfg, "verify", final_id, "--deep", timeout=600).data
    [report] = deep["backups"] if "backups" in deep else [deep]
    assert report["ok"] is True, report
    assert report["pg_verifybackup"]["ran"] and report["pg_verifybackup"]["ok"], report["pg_verifybackup"]
    assert report["pg_verifybackup"]["wal"] == "parsed"
    assert report["pg_verifybackup"]["chain"] == env.chain.backup_ids
    restore = env.run(env.cfg, "verify", "--restore", final_id, timeout=600).data
    assert restore["passed"] is True, restore
    assert "combine" in restore["databases"][0]["phases"]


def test_missing_member_makes_the_window_fall_back_to_an_older_base(env):
    cfg = env.repo_copy("missing")
    full_id, middle, final_id = env.chain.backup_ids
    [mdir] = [p for p in Path(_repo_path(cfg)).rglob(middle) if p.is_dir()]
    shutil.rmtree(mdir)
    verify = env.run(cfg, "verify", final_id, check=False)
    assert verify.rc == 4 and f"member {middle} of its chain is missing" in verify.stderr, verify.describe()
    named = _pitr(env, cfg, os.path.join(env.scratch(), "data"), "--latest", "--backup-id", final_id, check=False)
    assert named.rc == 7, named.describe()
    assert f"member {middle} of its chain is missing" in named.stderr
    data_dir = os.path.join(env.scratch(), "data")
    doc = _pitr(env, cfg, data_dir, "--latest").data
    try:
        assert doc["backup_id"] == full_id
        assert any(n.startswith(f"skipped {final_id}: member {middle}") for n in doc["notes"]), doc["notes"]
        assert content_digest(doc["port"]) == env.chain.final_digest   # the WAL carries it to the end
    finally:
        stop(data_dir)


def test_drill_recovers_the_chain(env):
    data_root = env.scratch()
    cfg = write_config(env.work, "incr", cluster=env.cluster, config_name="drill.yml", physical={"checkpoint": "fast"},
                       verify={"scratch_dir": data_root, "scratch_port": free_port()},
                       drill={"port": free_port(), "rto_target_minutes": 10, "rpo_target_minutes": 5})
    d = env.run(cfg, "drill", timeout=600).data
    assert d["passed"] is True, d
    assert d["backup_id"] == env.chain.backup_ids[-1]
    assert {"combine", "wal_replay", "checks"} <= set(d["rto"]["phases"])
    assert not os.path.exists(d["data_dir"])


@pytest.mark.parametrize("major", MAJORS, ids=[f"pg{m}" for m in MAJORS])
def test_chain_with_a_tablespace_restores_to_a_mapped_location(major, make_cluster, workdir, run_agent):
    cluster = incremental_cluster(make_cluster, major)
    where = scratch_dir("pgbts-")
    try:
        ts_old = make_pg_dir(os.path.join(where, "ts-old"), 0o700)
        cluster.psql(f"CREATE TABLESPACE ts1 LOCATION '{ts_old}'")
        cfg = incremental_config(workdir, write_config, cluster)
        fill(cluster)
        cluster.psql("ALTER TABLE ticks SET TABLESPACE ts1", dbname="app")
        chain = make_chain(cluster, cfg, run_agent, 2, fresh=False)
        original = _tree_state(str(ts_old))
        data_dir, ts_new = os.path.join(where, "data"), os.path.join(where, "ts-new")
        doc = run_agent(cfg, "pitr", "--latest", "--data-dir", data_dir, "--port", str(free_port()),
                        "--tablespace-map", f"{ts_old}={ts_new}", timeout=600).data
        try:
            assert doc["backup_id"] == chain.backup_ids[-1]
            assert content_digest(doc["port"]) == chain.final_digest
            [ts] = doc["tablespaces"]
            assert ts["restored_to"] == ts_new
            link = os.path.join(data_dir, "pg_tblspc", str(ts["oid"]))
            assert os.readlink(link) == ts_new
            assert [n for n in os.listdir(ts_new) if n.startswith(f"PG_{major}_")]
            assert not [n for n in os.listdir(ts_new) if "pgb-" in n]
        finally:
            stop(data_dir)
        cluster.psql("SELECT 1")
        assert _tree_state(str(ts_old)).keys() >= original.keys()   # the live tablespace was left alone
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_chain_from_s3_is_downloaded_checked_and_combined(make_cluster, s3_server, workdir, run_agent):
    cluster = incremental_cluster(make_cluster, "18")
    cfg = incremental_config(workdir, write_config, cluster, s3=s3_server)
    chain = make_chain(cluster, cfg, run_agent, 2)
    where = scratch_dir("pgbs3-")
    data_dir = os.path.join(where, "data")
    try:
        doc = run_agent(cfg, "pitr", "--latest", "--data-dir", data_dir, "--port", str(free_port()), timeout=600).data
        try:
            assert doc["backup_id"] == chain.backup_ids[-1]
            assert content_digest(doc["port"]) == chain.final_digest
            assert doc["phases"]["combine"] > 0 and doc["phases"]["download"] > 0
            assert os.listdir(where) == ["data"]          # download and combine directories are gone
        finally:
            stop(data_dir)
    finally:
        shutil.rmtree(where, ignore_errors=True)
