"""The restore-side playbooks in public-key mode against an S3 endpoint that enforces IAM (moto_server with
the bucket role's policy documents, agent/tests/integration/pgb_iam_support.py), with the real agent and a real
PostgreSQL 15 cluster.

The host holds what the agent role installs on a database host: the writer and pruner credentials and the
encryption PUBLIC key. restore.yml, verify.yml, pitr.yml and dr_drill.yml get the restorer
credentials and the SECRET key from Ansible variables (agent_restore_s3_credentials, agent_restore_private_key,
here from a 0600 vars file) for the job only: each succeeds, leaves nothing under agent_job_secrets_dir and never
prints a secret; a job given the wrong duty's credentials fails with the store's refusal and removes its secrets
all the same. (extract.yml includes the same tasks; the default Molecule scenario runs it in public-key mode.)
Plain pytest:

    .venv/bin/python -m pytest tests/roles/test_job_secrets_playbooks.py
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from playbook_support import ANSIBLE_PLAYBOOK, ROOT, pg, playbook_env

sys.path[:0] = [str(ROOT / "agent" / "tests"), str(ROOT / "agent" / "tests" / "integration")]
from keys import make_keypair  # noqa: E402
from pgb_iam_support import IamS3, no_proxy_env  # noqa: E402

pytestmark = pytest.mark.skipif(not pg.IS_ROOT, reason="runs PostgreSQL as the postgres user: needs root")

CLUSTER = "jobs"


def _ini_keys(path: str) -> dict:
    lines = dict(ln.split(" = ", 1) for ln in Path(path).read_text().splitlines() if " = " in ln)
    return {"access_key_id": lines["aws_access_key_id"], "secret_access_key": lines["aws_secret_access_key"]}


@pytest.fixture(scope="module")
def env():
    root = Path(tempfile.mkdtemp(prefix="pgb-jobs-play-"))
    pg.give_to_pg_user(root, 0o711)
    s3 = IamS3(root / "s3", [CLUSTER]).start()
    factory = pg.ClusterFactory(root)
    cluster = factory("15", archive_mode="on", archive_command="", wal_level="replica")
    config_dir = pg.make_pg_dir(root / "etc", 0o755)
    key = make_keypair(str(pg.make_pg_dir(root / "keys", 0o700)))
    pg.give_to_pg_user(key.public_file, 0o644)
    scratch = tempfile.mkdtemp(prefix="pgbj-", dir="/tmp")  # scratch servers: short socket paths
    pg.give_to_pg_user(scratch, 0o700)
    cfg = pg.write_config(config_dir, CLUSTER, cluster=cluster, config_name=f"{CLUSTER}.yml",
                          repository=dict(s3.repository(writer="writer", pruner="pruner"), path=None),
                          encryption={"mode": "public-key", "public_key_file": key.public_file},
                          backup={"globals": False}, physical={"checkpoint": "fast"}, wal={"uploader_idle_seconds": 0},
                          verify={"scratch_dir": scratch, "scratch_port": pg.free_port()},
                          drill={"port": pg.free_port()})
    cluster.psql(f"ALTER SYSTEM SET archive_command = '{pg.AGENT_BIN} --config {cfg} --quiet wal-push %p'; "
                 "SELECT pg_reload_conf()")
    cluster.psql("CREATE DATABASE app")
    cluster.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 300) g", dbname="app")
    agent = [str(pg.AGENT_BIN), "--config", cfg, "--json"]
    run_env = dict(os.environ, **no_proxy_env())
    ids = [json.loads(subprocess.run(pg.as_pg_user(agent + args), capture_output=True, text=True, check=True,
                                     timeout=300, env=run_env).stdout)["backup_id"]
           for args in (["backup", "--tier", "daily"], ["backup", "--physical"])]
    secret_key = Path(key.secret_file).read_text()
    yield {"root": root, "s3": s3, "cluster": cluster, "config_dir": config_dir, "secret_key": secret_key,
           "scratch": scratch, "logical": ids[0]}
    for data in Path(scratch).glob("*/data"):
        subprocess.run(pg.as_pg_user([str(cluster.bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True, check=False)
    factory.cleanup()
    s3.stop()
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


def _play(env, tmp_path, playbook, extra, restorer="restorer"):
    jobs = env["root"] / "jobs"
    secrets = tmp_path / "secrets.json"
    fd = os.open(secrets, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"agent_restore_s3_credentials": _ini_keys(env["s3"].credentials[restorer]),
                   "agent_restore_private_key": env["secret_key"]}, fh)
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"db1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "agent_venv_dir": str(pg.AGENT_BIN.parent.parent), "agent_config_dir": str(env["config_dir"]),
        "agent_job_secrets_dir": str(jobs), "agent_clusters": [{"name": CLUSTER, "os_user": pg.PG_OS_USER}],
    }}}}))
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(ROOT / "playbooks" / playbook),
                           "-e", f"@{secrets}", "-e", json.dumps(dict({"pg_backup_hosts_group": "all"}, **extra))],
                          env=dict(playbook_env(tmp_path), **no_proxy_env()), cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, check=False)
    out = proc.stdout + proc.stderr
    assert "PRIVATE KEY" not in out and _ini_keys(env["s3"].credentials[restorer])["secret_access_key"] not in out
    assert jobs.is_dir() and list(jobs.iterdir()) == [], f"the job left its secrets on the host: {list(jobs.iterdir())}"
    return proc, out


def test_a_restore_with_the_writer_credentials_is_refused_and_its_secrets_removed(env, tmp_path):
    proc, out = _play(env, tmp_path, "restore.yml", {"restore_host": "db1", "restore_backup_id": env["logical"],
                                                     "restore_database": "app", "restore_target_database": "app_no"},
                      restorer="writer")
    assert proc.returncode != 0 and "refused by" in out and ("AccessDenied" in out or ": 403" in out), out


def test_restore_with_the_restorer_credentials_and_the_secret_key_for_the_job(env, tmp_path):
    proc, out = _play(env, tmp_path, "restore.yml", {"restore_host": "db1", "restore_backup_id": env["logical"],
                                                     "restore_database": "app", "restore_target_database": "app_job"})
    assert proc.returncode == 0, out
    assert env["cluster"].psql("SELECT count(*) FROM t", dbname="app_job") == "300"


def test_latest_is_the_newest_logical_backup_holding_the_database(env, tmp_path):
    """The newest backup is physical (the fixture takes it last): restore.yml and extract.yml with "latest"
    take the newest logical backup (a physical one is restored with pitr.yml); none holding the database is
    one clear failure before anything is restored."""
    proc, out = _play(env, tmp_path, "restore.yml", {"restore_host": "db1", "restore_backup_id": "latest",
                                                     "restore_database": "app", "restore_target_database": "app_latest"})
    assert proc.returncode == 0, out
    assert f"{env['logical']}: database app restored into app_latest" in " ".join(out.split()), out
    assert env["cluster"].psql("SELECT count(*) FROM t", dbname="app_latest") == "300"
    dest = tmp_path / "latest.csv"
    proc, out = _play(env, tmp_path, "extract.yml", {"extract_host": "db1", "extract_backup_id": "latest",
                                                     "extract_database": "app", "extract_dest": str(dest),
                                                     "extract_query": "SELECT count(*) AS n FROM t"})
    assert proc.returncode == 0, out
    assert dest.read_text().splitlines() == ["n", "300"] and env["logical"] in out, out
    proc, out = _play(env, tmp_path, "restore.yml", {"restore_host": "db1", "restore_backup_id": "latest",
                                                     "restore_database": "nosuch"})
    assert proc.returncode != 0 and "no logical backup of jobs holds the database nosuch" in out, out


def test_verify_pitr_and_drill_with_the_secrets_for_the_job(env, tmp_path):
    proc, out = _play(env, tmp_path, "verify.yml", {"verify_restore_kind": "logical"})
    assert proc.returncode == 0, out
    assert "PASSED" in out, out
    data_dir = os.path.join(env["scratch"], "pitr", "data")
    proc, out = _play(env, tmp_path, "pitr.yml", {"pitr_host": "db1", "pitr_latest": True, "pitr_data_dir": data_dir,
                                                  "pitr_port": pg.free_port()})
    assert proc.returncode == 0, out
    proc, out = _play(env, tmp_path, "dr_drill.yml", {"dr_drill_data_dir": os.path.join(env["scratch"], "drill")})
    assert proc.returncode == 0, out
