"""The erasure register where the agent cannot apply it itself, and skips in every restoring command.

``pitr --no-start`` with recorded erasures is refused before any work (exit 9); with
``--defer-erasure`` it leaves a 0600 marker in the data directory and prints the command that applies
the register once the server runs (``erasure replay``), which removes the marker. ``verify --restore``
and ``drill`` take ``--skip-erasure ID --skip-reason TEXT`` like restore and pitr, audited.
"""
from __future__ import annotations

import json
import os
import tempfile

import pytest

from conftest import AGENT_BIN, free_port, give_to_pg_user, run_pg
from pgb_pitr_support import remove_tree, sql_on, stop, switch_and_wait_archived

pytestmark = pytest.mark.integration


@pytest.fixture
def short_scratch():
    path = tempfile.mkdtemp(prefix="pgbd-", dir="/tmp")  # Unix socket paths must stay under 108 bytes
    give_to_pg_user(path, 0o700)
    yield path
    remove_tree(path)


def test_pitr_no_start_defers_the_register_and_skips_are_audited_everywhere(
        make_cluster, workdir, write_config, run_agent, short_scratch):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    check = [{"name": "member 42 erased", "database": "app",
              "sql": "SELECT count(*) FROM members WHERE member_id = 42", "expect": "= 0"}]
    cfg = write_config(workdir, "erd", cluster=cluster, backup={"globals": False}, physical={"checkpoint": "fast"},
                       wal={"archive_timeout_seconds": 5},
                       verify={"checks": check, "scratch_dir": short_scratch, "scratch_port": free_port()},
                       drill={"port": free_port(), "rto_target_minutes": 10, "rpo_target_minutes": 5})
    cluster.psql(f"ALTER SYSTEM SET archive_command = '{AGENT_BIN} --config {cfg} --quiet wal-push %p'; "
                 "SELECT pg_reload_conf()")
    cluster.psql("DROP DATABASE IF EXISTS app; CREATE DATABASE app")
    cluster.psql("CREATE TABLE members (member_id int PRIMARY KEY); INSERT INTO members SELECT generate_series(1, 50)",
                 dbname="app")
    run_agent(cfg, "backup", "--physical")
    first = run_agent(cfg, "erasure", "add", "-d", "app",
                      "--sql", "DELETE FROM members WHERE member_id = 42").data["erasure_id"]
    switch_and_wait_archived(cluster)

    data_dir, port = os.path.join(short_scratch, "pitr"), free_port()
    refused = run_agent(cfg, "pitr", "--latest", "--data-dir", data_dir, "--port", port, "--no-start", check=False)
    assert refused.rc == 9, refused.describe()
    assert "would hand over a data directory holding the rows of 1 recorded erasure(s)" in refused.stderr
    assert "--defer-erasure" in refused.stderr and not os.path.exists(data_dir)  # refused before any work
    assert run_agent(cfg, "pitr", "--latest", "--data-dir", data_dir, "--defer-erasure", check=False).rc == 2

    deferred = run_agent(cfg, "pitr", "--latest", "--data-dir", data_dir, "--port", port, "--no-start",
                         "--defer-erasure", json=False)
    command = f"pg-backup --config {cfg} erasure replay --data-dir {data_dir}"
    assert "1 record(s) NOT applied yet (--defer-erasure" in deferred.stdout and command in deferred.stdout
    marker = os.path.join(data_dir, "pg-backup-erasure-pending.json")
    assert oct(os.stat(marker).st_mode & 0o777) == "0o600"
    assert json.loads(open(marker).read())["pending"] == [first]

    not_running = run_agent(cfg, "erasure", "replay", "--data-dir", data_dir, check=False)
    assert not_running.rc == 6 and "no server runs from" in not_running.stderr
    try:
        run_pg([str(cluster.bin_dir / "pg_ctl"), "-D", data_dir, "-l", os.path.join(data_dir, "manual.log"), "-w",
                "start"], cwd=data_dir)
        replay = run_agent(cfg, "erasure", "replay", "--data-dir", data_dir, timeout=180).data
        assert [a["erasure_id"] for a in replay["erasures"]["applied"]] == [first]
        assert sql_on(port, "SELECT count(*) FROM members WHERE member_id = 42", "app") == (0,)
        assert not os.path.exists(marker)
    finally:
        stop(data_dir)

    # verify --restore and drill: a record is skipped only by name, with a reason, and audited.
    skip = ["--skip-erasure", first, "--skip-reason", "checked by hand"]
    assert run_agent(cfg, "verify", "--all", *skip, check=False).rc == 2
    verified = run_agent(cfg, "verify", "--restore", "--kind", "physical", *skip, check=False, timeout=300)
    assert verified.rc == 4, verified.describe()  # member 42 is back: the configured check says so
    assert [s["erasure_id"] for s in verified.data["databases"][0]["erasures"]["skipped"]] == [first]
    drill = run_agent(cfg, "drill", *skip, check=False, timeout=300).data
    assert drill["recovery_error"] is None and [s["erasure_id"] for s in drill["erasures"]["skipped"]] == [first]
    audit = [json.loads(line) for line in (workdir / "state" / "audit.jsonl").read_text().splitlines()]
    assert [r["erasure_id"] for r in audit if r["operation"] == "erasure-skip"] == [first, first]
    assert "erasure-replay" in [r["operation"] for r in audit]
