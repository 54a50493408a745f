"""Incremental physical backups (PostgreSQL 17+) against real servers: a chain of a full backup and
incremental ones, what the catalog, prune and health show of it, and every way the parent can be
unusable (``auto`` takes a full backup and says why; ``always`` refuses with exit 2 and one line,
committing nothing)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import write_pg_file
from keys import make_keypair
from pgb_incremental_support import change, fill, incremental_cluster, incremental_config, make_chain
from pgb_pitr_support import enable_archiving, wait_until
from pgb_wal_support import base_backup_into

pytestmark = pytest.mark.integration

MAJORS = ("17", "18")


def _manifest(workdir, name, backup_id):
    return json.loads((workdir / "repo" / name / "backups" / backup_id / "manifest.json").read_text())


def _backup_ids(workdir, name):
    root = workdir / "repo" / name / "backups"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _refused(res, *words):
    """Exit 2 with exactly one error line holding ``words``."""
    assert res.rc == 2, res.describe()
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("pg-backup: error:")]
    assert len(errors) == 1 and errors == res.stderr.splitlines()[-1:], res.describe()
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


def _always(workdir, write_config, cluster, name="incr"):
    """A second configuration of the same repository with physical.incremental: always."""
    return write_config(workdir, name, cluster=cluster, config_name="always.yml",
                        physical={"checkpoint": "fast", "incremental": "always", "wal_wait_seconds": 20})


@pytest.mark.parametrize("major", MAJORS, ids=[f"pg{v}" for v in MAJORS])
def test_chain_of_a_full_and_two_incrementals(major, make_cluster, workdir, write_config, run_agent):
    cluster = incremental_cluster(make_cluster, major)
    cfg = incremental_config(workdir, write_config, cluster)
    chain = make_chain(cluster, cfg, run_agent, 2)
    full, first, second = chain.backups
    assert full["incremental"] is None
    assert first["incremental"]["parent"] == full["backup_id"] and first["incremental"]["depth"] == 1
    assert second["incremental"]["members"] == [full["backup_id"], first["backup_id"]]
    assert second["incremental"]["root"] == full["backup_id"] and second["incremental"]["depth"] == 2
    for inc in (first, second):  # ~2 % of the pages changed: a small fraction of the full backup is stored
        assert inc["stored_bytes"] * 5 < full["stored_bytes"], (inc["stored_bytes"], full["stored_bytes"])
        assert inc["raw_bytes"] * 3 < full["raw_bytes"], (inc["raw_bytes"], full["raw_bytes"])
    m = _manifest(workdir, "incr", second["backup_id"])
    assert m["schema_version"] == 2 and m["incremental"]["parent_stop_lsn"] == first["stop_lsn"]
    assert any("incremental to " + first["backup_id"] in n for n in m["notes"])
    full_m = _manifest(workdir, "incr", full["backup_id"])
    assert full_m["schema_version"] == (3 if full_m.get("parts") else 1) and len(full_m["extra"]["backup_manifest_sha256"]) == 64

    # The newest backup's plaintext backup_manifest is kept, private, for the next incremental backup.
    kept = workdir / "state" / "backup-manifests" / "incr"
    assert sorted(os.listdir(kept)) == [f"{second['backup_id']}.backup_manifest"]
    assert (kept / f"{second['backup_id']}.backup_manifest").stat().st_mode & 0o077 == 0
    assert kept.stat().st_mode & 0o077 == 0

    listing = run_agent(cfg, "list").data
    [c] = listing["chains"]
    assert c["root"] == full["backup_id"] and c["backups"] == chain.backup_ids and c["incremental"] == 2
    assert c["missing"] == [] and c["stored_bytes"] == sum(b["stored_bytes"] for b in chain.backups)
    assert all(b["duration_seconds"] >= 0 and b["chain_root"] == full["backup_id"] for b in listing["backups"])
    text = run_agent(cfg, "list", json=False).stdout
    assert f"incremental to {first['backup_id']} (chain of {full['backup_id']})" in text
    assert f"chain of {full['backup_id']}: 3 backup(s), 2 incremental" in text
    assert "TOOK" in text and "ORIGINAL" in text and f"LSN {second['start_lsn']} .. {second['stop_lsn']}" in text
    shown = run_agent(cfg, "show", second["backup_id"], json=False).stdout
    assert f"incremental to {first['backup_id']}, depth 2" in shown
    assert " + ".join(chain.backup_ids) in shown
    assert run_agent(cfg, "show", second["backup_id"]).data["manifest"]["incremental"]["depth"] == 2

    dry = run_agent(cfg, "prune", "--dry-run")
    kept_ids = {k["backup_id"]: k for k in dry.data["kept"]}
    assert kept_ids[second["backup_id"]]["depth"] == 2 and kept_ids[full["backup_id"]]["depth"] == 0
    assert " <- ".join(chain.backup_ids) in run_agent(cfg, "prune", "--dry-run", json=False).stdout

    health = {c["name"]: c for c in run_agent(cfg, "health", check=False).data["checks"]}
    assert health["wal_summarizer"]["status"] == "ok", health["wal_summarizer"]


def test_max_chain_starts_a_new_chain_and_local_copy_is_checked(make_cluster, workdir, write_config, run_agent):
    cluster = incremental_cluster(make_cluster, "18")
    cfg = incremental_config(workdir, write_config, cluster, physical={"max_chain": 1})
    fill(cluster, 20_000)
    ids = []
    for step in range(3):
        change(cluster, step + 1)
        ids.append(run_agent(cfg, "backup", "--physical").data)
    assert [b["incremental"] for b in ids] == [False, True, False]
    assert "physical.max_chain (1 incremental backup(s))" in ids[2]["full_reason"]

    # A local copy that does not match what the repository recorded is never sent.
    newest = ids[2]["backup_id"]
    copy = workdir / "state" / "backup-manifests" / "incr" / f"{newest}.backup_manifest"
    copy.write_bytes(copy.read_bytes().replace(b'"Files"', b'"Files" ', 1))
    res = run_agent(_always(workdir, write_config, cluster), "backup", "--physical", check=False)
    _refused(res, "does not match the SHA-256", newest)
    assert len(_backup_ids(workdir, "incr")) == 3  # nothing was started
    # Without a local copy, passphrase mode fetches and checks the parent's from the repository.
    copy.unlink()
    again = run_agent(_always(workdir, write_config, cluster), "backup", "--physical").data
    assert again["backup"]["incremental"]["parent"] == newest


def test_public_key_host_without_a_local_copy_takes_a_full_backup(make_cluster, workdir, write_config, run_agent):
    cluster = incremental_cluster(make_cluster, "18")
    pair = make_keypair(workdir, "operator")
    subprocess.run(["chown", "postgres", pair.public_file, pair.secret_file], check=False)
    cfg = incremental_config(workdir, write_config, cluster,
                             encryption={"mode": "public-key", "public_key_file": pair.public_file})
    fill(cluster, 20_000)
    full = run_agent(cfg, "backup", "--physical").data
    shutil.rmtree(workdir / "state" / "backup-manifests")
    res = run_agent(cfg, "backup", "--physical", "--incremental").data
    assert res["incremental"] is False and "cannot decrypt it from the repository" in res["full_reason"]
    assert full["backup_id"] in res["full_reason"]
    third = run_agent(cfg, "backup", "--physical", "--incremental").data  # the copy is back
    assert third["backup"]["incremental"]["parent"] == res["backup_id"]


def test_missing_object_and_member_pruned_out_of_band(make_cluster, workdir, write_config, run_agent):
    cluster = incremental_cluster(make_cluster, "18")
    cfg = incremental_config(workdir, write_config, cluster)
    always = _always(workdir, write_config, cluster)
    chain = make_chain(cluster, cfg, run_agent, 1)
    full_id, inc_id = chain.backup_ids
    repo = workdir / "repo" / "incr" / "backups"

    # A missing object of the parent: always refuses, auto takes a full backup and says why.
    base = repo / inc_id / "base.tar.zst.gpg"
    saved = base.read_bytes()
    base.unlink()
    _refused(run_agent(always, "backup", "--physical", check=False), f"{inc_id}/base.tar.zst.gpg", "missing")
    assert _backup_ids(workdir, "incr") == chain.backup_ids
    write_pg_file(base, saved, 0o600)

    # A member removed out of band (not by prune): the chain is broken.
    shutil.rmtree(repo / full_id)
    _refused(run_agent(always, "backup", "--physical", check=False), "chain of", "is broken", full_id)
    listing = run_agent(cfg, "list")
    assert listing.data["chains"][0]["missing"] == [full_id]
    assert "BROKEN" in run_agent(cfg, "list", json=False).stdout
    assert "BROKEN chain" in run_agent(cfg, "show", inc_id, json=False).stdout
    assert run_agent(cfg, "prune", "--dry-run").data["broken_chains"] == [{"backup_id": inc_id, "missing": [full_id]}]
    auto = run_agent(cfg, "backup", "--physical", "--incremental")
    assert auto.data["incremental"] is False and "is broken" in auto.data["full_reason"]
    notes = _manifest(workdir, "incr", auto.data["backup_id"])["notes"]
    assert any(n.startswith("full backup although an incremental one was asked for (auto)") for n in notes), notes


def test_summarize_wal_off_and_a_summary_gap(make_cluster, workdir, write_config, run_agent):
    cluster = incremental_cluster(make_cluster, "18", summarize_wal=False)
    cfg = incremental_config(workdir, write_config, cluster)
    always = _always(workdir, write_config, cluster)
    fill(cluster, 20_000)
    first = run_agent(cfg, "backup", "--physical", "--incremental")
    assert first.data["incremental"] is False
    assert first.data["full_reason"].startswith("summarize_wal is off on the server")
    assert "full, not incremental:" in run_agent(cfg, "backup", "--physical", "--incremental", json=False).stdout
    _refused(run_agent(always, "backup", "--physical", check=False), "summarize_wal is off")
    health = {c["name"]: c for c in run_agent(always, "health", check=False).data["checks"]}
    assert health["wal_summarizer"]["status"] == "critical" and "summarize_wal is off" in health["wal_summarizer"][
        "message"]

    cluster.psql("ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf()")
    full = run_agent(cfg, "backup", "--physical", "--full").data
    start = full["backup"]["start_lsn"]
    change(cluster, 1)
    cluster.psql("SELECT pg_switch_wal(); CHECKPOINT")
    wait_until(lambda: cluster.psql(f"SELECT summarized_lsn > '{start}' FROM pg_get_wal_summarizer_state()") == "t",
               60, "the summarizer to pass the full backup's start")
    summaries = cluster.datadir / "pg_wal" / "summaries"
    assert any(summaries.iterdir())
    for f in summaries.iterdir():  # an operator's cleanup script, or a too-short wal_summary_keep_time
        f.unlink()
    _refused(run_agent(always, "backup", "--physical", check=False), "no WAL summaries for", start)
    auto = run_agent(cfg, "backup", "--physical", "--incremental").data
    assert auto["incremental"] is False and "no WAL summaries for" in auto["full_reason"]
    assert len(_backup_ids(workdir, "incr")) == 4


def test_parent_of_another_timeline_or_cluster(make_cluster, workdir, write_config, run_agent):
    cluster = incremental_cluster(make_cluster, "18")
    cfg = incremental_config(workdir, write_config, cluster)
    fill(cluster, 20_000)
    run_agent(cfg, "backup", "--physical")

    # A copy of the cluster promoted to timeline 2 (same system identifier), backing up into the same repository.
    promoted = base_backup_into(cluster, {"archive_mode": "on", "archive_command": "/bin/true", "wal_level": "replica",
                                          "summarize_wal": True}, wal="stream")
    try:
        write_pg_file(promoted.datadir / "standby.signal", "", 0o600)
        promoted.start()
        promoted.psql("SELECT pg_promote()")
        wait_until(lambda: promoted.psql("SELECT timeline_id FROM pg_control_checkpoint()") == "2", 60,
                   "the copy's checkpoint on timeline 2")
        other_tl = write_config(workdir, "incr", cluster=promoted, config_name="tl2.yml",
                                physical={"checkpoint": "fast", "incremental": "always"})
        _refused(run_agent(other_tl, "backup", "--physical", check=False), "on timeline 1", "timeline 2")
    finally:
        promoted.destroy()

    stranger = incremental_cluster(make_cluster, "18", archive_command="/bin/true")
    other = write_config(workdir, "incr", cluster=stranger, config_name="other.yml",
                         physical={"checkpoint": "fast", "incremental": "always"})
    _refused(run_agent(other, "backup", "--physical", check=False), "another database cluster", "system identifier")
    assert len(_backup_ids(workdir, "incr")) == 1


def test_auto_on_postgresql_15_takes_a_full_backup_and_always_refuses(make_cluster, workdir, write_config,
                                                                      run_agent):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(workdir, "old", cluster=cluster, physical={"checkpoint": "fast", "incremental": "auto"})
    enable_archiving(cluster, cfg)
    fill(cluster, 20_000)
    res = run_agent(cfg, "backup", "--physical", json=False)
    assert "full, not incremental: PostgreSQL 15" in res.stdout and "(they need 17 or newer)" in res.stdout
    [m] = [_manifest(workdir, "old", b) for b in _backup_ids(workdir, "old")]
    assert m["incremental"] is None and m["schema_version"] == (3 if m.get("parts") else 1)
    assert "PostgreSQL 15" in m["extra"]["full_reason"]
    assert not (workdir / "state" / "backup-manifests").exists()  # nothing to keep below 17
    always = write_config(workdir, "old", cluster=cluster, config_name="always.yml",
                          physical={"checkpoint": "fast", "incremental": "always"})
    _refused(run_agent(always, "backup", "--physical", check=False), "PostgreSQL 15", "no incremental base backups")
    health = {c["name"]: c for c in run_agent(always, "health", check=False).data["checks"]}
    assert health["wal_summarizer"]["status"] == "critical"
    assert len(_backup_ids(workdir, "old")) == 1
    _refused(run_agent(cfg, "backup", "--physical", "--incremental", "--full", check=False), "contradict")
    _refused(run_agent(cfg, "backup", "--tier", "daily", "--incremental", check=False), "add --physical")


def test_prune_removes_an_expired_chain_newest_first_and_keeps_the_live_one(make_cluster, workdir, write_config,
                                                                            run_agent):
    import datetime as dt

    cluster = incremental_cluster(make_cluster, "18")
    cfg = incremental_config(workdir, write_config, cluster, retention={"daily_days": 30, "weekly_weeks": 1})
    old = make_chain(cluster, cfg, run_agent, 2, tier="weekly")      # full (weekly) + 2 incrementals
    change(cluster, 4)
    live_full = run_agent(cfg, "backup", "--physical", "--full", "--tier", "weekly").data["backup_id"]
    change(cluster, 5)
    live_inc = run_agent(cfg, "backup", "--physical", "--incremental").data["backup"]
    assert live_inc["incremental"]["root"] == live_full
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%SZ")
    env = {"PG_BACKUP_TEST_NOW": later}
    # The old chain's incremental backups are weekly here too (make_chain's tier): all of it expired.
    dry = run_agent(cfg, "prune", "--dry-run", env=env).data
    assert [d["backup_id"] for d in dry["deleted"]] == list(reversed(old.backup_ids))  # newest first
    assert [d["depth"] for d in dry["deleted"]] == [2, 1, 0]
    assert {k["backup_id"] for k in dry["kept"]} == {live_full, live_inc["backup_id"]}
    text = run_agent(cfg, "prune", "--dry-run", json=False, env=env).stdout
    assert f"would delete {old.backup_ids[2]} (incremental 2 of the chain of {old.backup_ids[0]})" in text
    assert f"kept chain of {live_full}: {live_full} <- {live_inc['backup_id']}" in text
    assert _backup_ids(workdir, "incr") == sorted(old.backup_ids + [live_full, live_inc["backup_id"]])
    done = run_agent(cfg, "prune", env=env)
    assert done.stderr.index(f"deleting {old.backup_ids[2]}") < done.stderr.index(f"deleting {old.backup_ids[0]}")
    assert _backup_ids(workdir, "incr") == sorted([live_full, live_inc["backup_id"]])
    [chain] = run_agent(cfg, "list").data["chains"]
    assert (chain["root"], chain["backups"], chain["missing"]) == (live_full, [live_full, live_inc["backup_id"]], [])


def test_server_refusal_after_the_agents_check(make_cluster, workdir, write_config, run_agent):
    """The summaries go away between the agent's check and BASE_BACKUP (a race the agent cannot close):
    the server refuses the incremental backup itself. Simulated by summaries removed and a parent manifest
    whose start_lsn says the agent need not look that far back. auto: a full backup, in a new replication
    connection, with the server's own reason; always: exit 2, nothing committed."""
    cluster = incremental_cluster(make_cluster, "18")
    cfg = incremental_config(workdir, write_config, cluster)
    always = _always(workdir, write_config, cluster)
    fill(cluster, 20_000)
    full = run_agent(cfg, "backup", "--physical").data
    start = full["backup"]["start_lsn"]
    change(cluster, 1)
    cluster.psql("SELECT pg_switch_wal(); CHECKPOINT")
    wait_until(lambda: cluster.psql(f"SELECT summarized_lsn > '{start}' FROM pg_get_wal_summarizer_state()") == "t",
               60, "the summarizer to pass the full backup's start")
    for f in (cluster.datadir / "pg_wal" / "summaries").iterdir():
        f.unlink()
    path = workdir / "repo" / "incr" / "backups" / full["backup_id"] / "manifest.json"
    doc = json.loads(path.read_text())
    doc["start_lsn"] = cluster.psql("SELECT summarized_lsn FROM pg_get_wal_summarizer_state()")
    path.write_text(json.dumps(doc))
    _refused(run_agent(always, "backup", "--physical", check=False), "the server refused it", "WAL summar")
    assert len(_backup_ids(workdir, "incr")) == 1
    auto = run_agent(cfg, "backup", "--physical")
    assert auto.data["incremental"] is False, auto.describe()
    assert f"the server refused an incremental backup to {full['backup_id']}" in auto.data["full_reason"]
    assert "taking a full backup instead" in auto.stderr
    assert len(_backup_ids(workdir, "incr")) == 2


def test_chain_on_s3(make_cluster, s3_server, workdir, write_config, run_agent):
    """The same chain on an S3 repository: the parent's objects are checked by listing, the incremental
    backup's objects carry its tier's tags."""
    cluster = incremental_cluster(make_cluster, "18")
    cfg = incremental_config(workdir, write_config, cluster, s3=s3_server)
    chain = make_chain(cluster, cfg, run_agent, 1)
    full, inc = chain.backups
    assert inc["incremental"]["parent"] == full["backup_id"]
    assert inc["stored_bytes"] * 5 < full["stored_bytes"]
    client = s3_server.client()
    tags = client.get_object_tagging(Bucket=s3_server.bucket,
                                     Key=f"incr/backups/{inc['backup_id']}/base.tar.zst.gpg")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"tier": "daily", "cluster": "incr", "kind": "physical"}
    client.delete_object(Bucket=s3_server.bucket, Key=f"incr/backups/{full['backup_id']}/backup_manifest.zst.gpg")
    res = run_agent(cfg, "backup", "--physical", "--incremental").data
    assert res["incremental"] is False and f"{full['backup_id']}/backup_manifest.zst.gpg" in res["full_reason"]


def test_incremental_backup_of_a_tablespace(make_cluster, workdir, write_config, run_agent):
    """Each tablespace's archive of an incremental backup holds only its changed blocks too."""
    from conftest import make_pg_dir

    cluster = incremental_cluster(make_cluster, "18")
    ts_dir = str(make_pg_dir(cluster.dir / "ts_fast"))
    cfg = incremental_config(workdir, write_config, cluster)
    cluster.psql("CREATE DATABASE app")
    cluster.psql(f"CREATE TABLESPACE fast LOCATION '{ts_dir}'")
    cluster.psql("CREATE TABLE ticks (id int PRIMARY KEY, note text) TABLESPACE fast;"
                 "INSERT INTO ticks SELECT g, md5(g::text) FROM generate_series(1, 200000) g", dbname="app")
    first = run_agent(cfg, "backup", "--physical")
    assert "waiting for the server's fast checkpoint" in first.stderr  # said before the wait, not after
    full = first.data["backup_id"]
    change(cluster, 1)
    inc = run_agent(cfg, "backup", "--physical", "--incremental").data["backup_id"]
    sizes = [{o["role"]: o["size"] for o in _manifest(workdir, "incr", b)["objects"]} for b in (full, inc)]
    assert _manifest(workdir, "incr", inc)["tablespaces"][0]["name"] == "fast"
    assert sizes[1]["tablespace"] * 5 < sizes[0]["tablespace"], sizes


def test_backup_stores_its_own_wal_when_the_archiver_is_slow(make_cluster, workdir, write_config, run_agent):
    """A backup's last WAL segment, still waiting for a slow archive_command, is stored by the backup
    itself (the wal-push service, same spool lock and marker): the backup does not wait for the
    archiver, and the archiver's own push of that segment later is acknowledged, with no conflict."""
    from conftest import AGENT_BIN

    cluster = incremental_cluster(make_cluster, "17")
    # No resident uploader (it would store the segment ahead of archive_command), a short wait.
    cfg = incremental_config(workdir, write_config, cluster, physical={"wal_wait_seconds": 1},
                             wal={"uploader_idle_seconds": 0})
    fill(cluster, 5_000)
    full = run_agent(cfg, "backup", "--physical").data["backup"]
    cluster.psql(f"ALTER SYSTEM SET archive_command = 'sleep 2 && {AGENT_BIN} --config {cfg} --quiet wal-push %p';"
                 " SELECT pg_reload_conf()")
    change(cluster, 1)
    res = run_agent(cfg, "backup", "--physical", "--incremental")
    inc = res.data["backup"]
    stop = inc["stop_wal"]
    assert inc["incremental"]["parent"] == full["backup_id"], res.describe()
    assert f"WAL segment {stop} stored by this backup" in res.stderr, res.describe()
    assert (workdir / "repo" / "incr" / "wal" / stop[:8] / f"{stop}.zst.gpg").exists()
    # The archiver gets to the segment later: its push finds it stored and is acknowledged.
    wait_until(lambda: cluster.psql(f"SELECT coalesce(last_archived_wal, '') >= '{stop}' FROM pg_stat_archiver")
               == "t", 30, f"{stop} to be archived by PostgreSQL")
    assert cluster.psql("SELECT failed_count FROM pg_stat_archiver") == "0"
    assert not (workdir / "repo" / "incr" / "wal" / "conflicts").exists()
