"""Least privilege, end to end: the agent against an S3 endpoint that enforces IAM (moto_server with
enforcement on), with the policy documents the bucket role generates, in public-key mode.

One cluster with WAL archiving and one IAM-enforcing server serve the module. A database host's
configuration holds the writer and pruner credentials and the encryption PUBLIC key; a restore
job's configuration holds the restorer credentials and the SECRET key (what the playbooks deliver
for the job's duration). Each command succeeds with its duty's credentials: backup and WAL archiving
(writer), prune (pruner), restore (also what extract.yml runs), verify, verify --restore, pitr and
drill (restorer). Each is refused with another duty's credentials: exit 5, one line naming the
refused request, nothing else on stderr. A duty the configuration has no credentials for is exit 2.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import pytest

from conftest import AgentRunner, ClusterFactory, WorkDir, free_port, give_to_pg_user, make_pg_dir, write_config
from keys import KeyPair, make_keypair
from pgb_iam_support import IamS3, no_proxy_env
from pgb_pitr_support import enable_archiving, sql_on, stop, switch_and_wait_archived
from pgb_wal_support import segment_copy

pytestmark = pytest.mark.integration


@dataclass
class Env:
    cluster: Any
    s3: IamS3
    run: AgentRunner
    work: WorkDir
    key: KeyPair
    db_host: str      # writer + pruner credentials, public key: what the agent role installs
    restore_job: str  # restorer credentials + secret key: what the playbooks deliver for a job
    logical_id: str
    physical_id: str
    scratch: str

    def config(self, name: str, *, secret: bool = False, **duties: str) -> str:
        encryption: Dict[str, Any] = {"mode": "public-key", "public_key_file": self.key.public_file}
        if secret:
            encryption["private_key_files"] = [self.key.secret_file]
        return write_config(self.work, "iam", cluster=self.cluster, config_name=f"{name}.yml",
                            repository=dict(self.s3.repository(**duties), path=None), encryption=encryption,
                            backup={"globals": False}, physical={"checkpoint": "fast"},
                            wal={"uploader_idle_seconds": 0},
                            verify={"scratch_dir": self.scratch, "scratch_port": free_port()},
                            drill={"port": free_port()})

    def agent(self, cfg: str, *args: Any, **kwargs: Any):
        return self.run(cfg, *args, env=no_proxy_env(), **kwargs)


@pytest.fixture(scope="module")
def env(pg_test_base):
    s3 = IamS3(pg_test_base / f"iam-s3-{os.getpid()}", ["iam"]).start()
    factory = ClusterFactory(pg_test_base)
    runner = AgentRunner(make_pg_dir(pg_test_base / "agent-output", 0o700), make_pg_dir(pg_test_base / "agent-tmp", 0o700))
    make_pg_dir(pg_test_base / "work", 0o700)
    work = WorkDir(tempfile.mkdtemp(prefix="iam-", dir=pg_test_base / "work"))
    give_to_pg_user(work, 0o700)
    keydir = make_pg_dir(Path(work) / "keys", 0o700)
    key = make_keypair(str(keydir))
    for path in (key.public_file, key.secret_file):
        give_to_pg_user(path, 0o600)
    scratch = tempfile.mkdtemp(prefix="pgbi-", dir="/tmp")  # short: scratch servers' socket paths
    give_to_pg_user(scratch, 0o700)
    cluster = factory("15", archive_mode="on", archive_command="", wal_level="replica")
    e = Env(cluster, s3, runner, work, key, "", "", "", "", scratch)
    e.db_host = e.config("db-host", writer="writer", pruner="pruner")
    e.restore_job = e.config("restore-job", secret=True, restorer="restorer")
    enable_archiving(cluster, e.db_host)
    cluster.psql("CREATE DATABASE app")
    cluster.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 500) g", dbname="app")
    e.logical_id = e.agent(e.db_host, "backup", "--tier", "daily").data["backup_id"]
    e.physical_id = e.agent(e.db_host, "backup", "--physical").data["backup_id"]
    cluster.psql("INSERT INTO t SELECT g FROM generate_series(501, 600) g", dbname="app")
    switch_and_wait_archived(cluster)
    yield e
    stop(*[str(p) for p in Path(scratch).glob("*") if p.is_dir()])
    shutil.rmtree(scratch, ignore_errors=True)
    runner.cleanup()
    factory.cleanup()
    s3.stop()


def refused(result) -> str:
    """A clean refusal: exit 5 and one line on stderr (the error, naming the refused request)."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.rc == 5, result.describe()
    assert len(lines) == 1 and ("AccessDenied" in lines[0] or "403" in lines[0]), result.describe()
    assert "Traceback" not in result.stderr
    return lines[0]


def test_database_host_backs_up_and_archives_with_the_writer_credentials(env):
    listing = env.agent(env.db_host, "list").data
    assert {b["backup_id"] for b in listing["backups"]} == {env.logical_id, env.physical_id}
    failed = env.cluster.psql("SELECT failed_count FROM pg_stat_archiver")
    assert failed == "0", "wal-push failed with the writer credentials: see the cluster log\n" + env.cluster.log_tail()


def test_restore_job_restores_verifies_recovers_and_drills_with_the_restorer_credentials(env):
    # restore (what restore.yml and extract.yml run)
    env.agent(env.restore_job, "restore", env.logical_id, "--database", "app", "--target-database", "app_iam")
    assert env.cluster.psql("SELECT count(*) FROM t", dbname="app_iam") == "500"
    env.cluster.psql("DROP DATABASE app_iam")
    # verify (checksums of every object), verify --restore (scratch database)
    assert env.agent(env.restore_job, "verify", "--all", "--deep").data["failed"] == 0
    env.agent(env.restore_job, "verify", "--restore", "--kind", "logical", timeout=300)
    # pitr (base backup + WAL through wal-fetch with the same job configuration)
    data_dir = os.path.join(env.scratch, "pitr", "data")
    make_pg_dir(Path(env.scratch) / "pitr", 0o700)
    port = free_port()
    env.agent(env.restore_job, "pitr", "--latest", "--data-dir", data_dir, "--port", str(port), timeout=300)
    try:
        assert sql_on(port, "SELECT count(*) FROM t", dbname="app")[0] == 600
    finally:
        stop(data_dir)
    # drill (restores the latest state on a scratch port and writes its report to audit/drills/)
    drill = env.agent(env.restore_job, "drill", "--data-dir", os.path.join(env.scratch, "drill", "data"),
                      check=False, timeout=600)
    assert drill.rc == 0, drill.describe()


@pytest.mark.parametrize("command,args,wrong", [
    ("backup", ["--tier", "daily"], {"writer": "restorer"}),
    ("restore", ["{logical}", "--database", "app", "--target-database", "app_denied"], {"restorer": "writer"}),
    ("verify", ["--all"], {"restorer": "pruner"}),
    ("verify", ["--restore", "--kind", "logical"], {"restorer": "writer"}),
    ("pitr", ["--latest", "--data-dir", "{scratch}/denied/data", "--no-start"], {"restorer": "writer"}),
    ("drill", ["--data-dir", "{scratch}/denied-drill/data"], {"restorer": "pruner"}),
    ("prune", [], {"pruner": "writer"}),
], ids=["backup-as-restorer", "restore-as-writer", "verify-as-pruner", "verify-restore-as-writer",
        "pitr-as-writer", "drill-as-pruner", "prune-as-writer"])
def test_each_command_is_refused_with_another_duty_s_credentials(env, command, args, wrong):
    cfg = env.config(f"wrong-{command}-{'-'.join(wrong.values())}", secret=True, **wrong)
    argv = [a.format(logical=env.logical_id, scratch=env.scratch) for a in args]
    for a in argv:
        if a.endswith("/data"):
            make_pg_dir(Path(a).parent, 0o700)
    line = refused(env.agent(cfg, "--quiet", command, *argv, check=False, json=False, timeout=300))
    assert "refused by" in line and env.s3.bucket in line


def test_wal_push_is_refused_with_the_restorer_credentials(env):
    env.cluster.psql("CREATE TABLE IF NOT EXISTS wal_denied (x int); INSERT INTO wal_denied VALUES (1)")
    # The segment being written; other tests share this cluster and may switch and recycle segments
    # between the query and the copy, so take the then-current one again when it is gone.
    for attempt in range(5):
        segment = env.cluster.psql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
        try:
            copy = segment_copy(env.cluster, segment, Path(env.work) / "wal-denied")
            break
        except FileNotFoundError:
            continue
    else:
        raise AssertionError("no WAL segment of the shared cluster could be copied in 5 attempts")
    cfg = env.config("wal-denied", writer="restorer")
    refused(env.agent(cfg, "--quiet", "wal-push", str(copy), check=False, json=False))


def test_a_duty_without_credentials_is_a_usage_error_naming_the_option(env):
    result = env.agent(env.db_host, "restore", env.logical_id, "--database", "app", "--target-database", "x",
                       check=False, json=False)
    assert result.rc == 2, result.describe()
    assert "repository.s3.credentials.restorer" in result.stderr and "Traceback" not in result.stderr


def test_prune_runs_with_the_pruner_credentials_and_deletes_what_retention_allows(env):
    # A second daily backup, then a clock 40 days ahead: the first daily backup has expired (30 days),
    # the newest of the tier is kept.
    newer = env.agent(env.db_host, "backup", "--tier", "daily").data["backup_id"]
    later = {"PG_BACKUP_TEST_NOW": "2099-01-01T00:00:00Z"}
    result = env.run(env.db_host, "prune", env=dict(no_proxy_env(), **later), timeout=300)
    assert result.rc == 0, result.describe()
    left = {b["backup_id"] for b in env.agent(env.db_host, "list").data["backups"]}
    assert newer in left and env.logical_id not in left, result.describe()
