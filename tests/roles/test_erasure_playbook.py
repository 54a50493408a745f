"""playbooks/erasure.yml against a real PostgreSQL 15 and the real agent (local repository): one host with
two clusters, one holding the database; the erasure runs and is recorded there, the other is reported as
skipped, and the statements never appear in Ansible's output. Then playbooks/extract.yml on a backup taken
before the erasure: the erased person is not in the CSV. Plain pytest:

    .venv/bin/python -m pytest tests/roles/test_erasure_playbook.py
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from playbook_support import ANSIBLE_PLAYBOOK, ROOT, pg, playbook_env

pytestmark = pytest.mark.skipif(not pg.IS_ROOT, reason="runs PostgreSQL as the postgres user: needs root")

SECRET_STATEMENT = "DELETE FROM members WHERE email = 'jane.doe@example.org'"


@pytest.fixture(scope="module")
def base():
    path = Path(tempfile.mkdtemp(prefix="pgb-erasure-play-"))
    pg.give_to_pg_user(path, 0o700)
    factory = pg.ClusterFactory(path)
    yield path, factory
    factory.cleanup()
    shutil.rmtree(path, ignore_errors=True)


def _play(tmp_path, config_dir, extra, playbook="erasure.yml"):
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"hosts": {"db1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "agent_venv_dir": str(pg.AGENT_BIN.parent.parent), "agent_config_dir": str(config_dir),
        "agent_clusters": [{"name": "holds", "os_user": pg.PG_OS_USER}, {"name": "other", "os_user": pg.PG_OS_USER}],
    }}}}))
    return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(ROOT / "playbooks" / playbook),
                           "-e", json.dumps(dict({"erasure_hosts": "db1"}, **extra))],
                          env=playbook_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)


def test_erasure_playbook_records_where_the_database_is_and_hides_the_statements(base, tmp_path):
    root, factory = base
    cluster = factory("15")
    other = factory("15")
    cluster.psql("CREATE DATABASE crm")
    cluster.psql("CREATE TABLE members (id int PRIMARY KEY, email text);"
                 "INSERT INTO members VALUES (1, 'jane.doe@example.org'), (2, 'john@example.org')", dbname="crm")
    config_dir = Path(tempfile.mkdtemp(prefix="cfg-", dir=root))
    pg.give_to_pg_user(config_dir, 0o700)
    cfg = pg.write_config(config_dir, "holds", cluster=cluster, config_name="holds.yml")
    pg.write_config(config_dir, "other", cluster=other, config_name="other.yml")
    backup = subprocess.run(pg.as_pg_user([str(pg.AGENT_BIN), "--config", cfg, "--json", "backup", "--tier", "daily"]),
                            capture_output=True, text=True, check=True, timeout=300)
    old = json.loads(backup.stdout)["backup_id"]

    proc = _play(tmp_path, config_dir, {"erasure_database": "crm", "erasure_sql": [SECRET_STATEMENT],
                                        "erasure_request_id": "GDPR-17", "erasure_reason": "Jane Doe asked"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert cluster.psql("SELECT count(*) FROM members", dbname="crm") == "1"
    assert "jane.doe" not in out and "Jane Doe" not in out               # no_log where the statements travel
    assert "holds on db1: recorded erasure " in out and "1 row(s) changed, request GDPR-17" in out
    assert "other on db1: skipped: the database is not on this cluster" in out

    listed = subprocess.run(pg.as_pg_user([str(pg.AGENT_BIN), "--config", cfg, "--json", "erasure", "list"]),
                            capture_output=True, text=True, check=True, timeout=120)
    [record] = json.loads(listed.stdout)["erasures"]
    assert record["statements"][0]["sql"] == SECRET_STATEMENT and record["request_id"] == "GDPR-17"

    # The compliance extract of the backup from before the erasure does not bring Jane back.
    csv = tmp_path / "extract.csv"
    extract = _play(tmp_path, config_dir, {"extract_host": "db1", "extract_cluster": "holds", "extract_backup_id": old,
                                           "extract_database": "crm", "extract_dest": str(csv),
                                           "extract_query": "SELECT id, email FROM members ORDER BY id"}, "extract.yml")
    out = extract.stdout + extract.stderr
    assert extract.returncode == 0, out
    assert csv.read_text().splitlines() == ["id,email", "2,john@example.org"]
    assert f"erasure records re-applied: {record['erasure_id']}" in out

    # A refused statement fails the play with the agent's message, which names no data subject.
    refused = _play(tmp_path, config_dir, {"erasure_database": "crm",
                                           "erasure_sql": "DROP TABLE members -- jane.doe@example.org"})
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "refused statement 1: DROP is not a data-changing" in out, out
    assert "jane.doe" not in out
