"""playbooks/compliance.yml against a real PostgreSQL 15 and the real agent (local repositories): one host
with two clusters, one with two backups and an erasure, one empty. Each cluster's JSON, Markdown and PDF
report lands on the control node, and the fleet summary is assembled there from the JSON reports: its
numbers are the clusters' own. Plain pytest:

    .venv/bin/python -m pytest tests/roles/test_compliance_playbook.py
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from playbook_support import ANSIBLE_PLAYBOOK, ROOT, cluster_base, pg, playbook_env

pytestmark = pytest.mark.skipif(not pg.IS_ROOT, reason="runs PostgreSQL as the postgres user: needs root")


@pytest.fixture(scope="module")
def base():
    with cluster_base("pgb-compliance-play-") as made:
        yield made


def _agent(cfg, *args):
    done = subprocess.run(pg.as_pg_user([str(pg.AGENT_BIN), "--config", cfg, "--json", *args]),
                          capture_output=True, text=True, check=True, timeout=300)
    return json.loads(done.stdout)


def test_compliance_playbook_writes_cluster_and_fleet_documents(base, tmp_path):
    root, factory = base
    cluster = factory("15")
    cluster.psql("CREATE DATABASE crm")
    cluster.psql("CREATE TABLE members (id int PRIMARY KEY, email text);"
                 "INSERT INTO members VALUES (1, 'a@example.org'), (2, 'b@example.org')", dbname="crm")
    config_dir = Path(tempfile.mkdtemp(prefix="cfg-", dir=root))
    pg.give_to_pg_user(config_dir, 0o700)
    cfg = pg.write_config(config_dir, "books", cluster=cluster, config_name="books.yml", backup={"globals": False})
    pg.write_config(config_dir, "spare", cluster=cluster, config_name="spare.yml")
    first = _agent(cfg, "backup", "--tier", "weekly", "--database", "crm")["backup_id"]
    erased = _agent(cfg, "erasure", "add", "--database", "crm", "--sql", "DELETE FROM members WHERE id = 2")["erasure_id"]
    _agent(cfg, "backup", "--tier", "daily", "--database", "crm")

    out = tmp_path / "evidence"
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"children": {"pg_backup": {"hosts": {"db1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "agent_venv_dir": str(pg.AGENT_BIN.parent.parent), "agent_config_dir": str(config_dir),
        "agent_clusters": [{"name": "books", "os_user": pg.PG_OS_USER}, {"name": "spare", "os_user": pg.PG_OS_USER}],
    }}}}}}))
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(ROOT / "playbooks" / "compliance.yml"),
                           "-e", json.dumps({"compliance_dir": str(out), "compliance_formats": ["md", "pdf"],
                                             "compliance_period": "7d"})],
                          env=playbook_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "2 cluster(s) reported in " in log and "1 with problems" not in log

    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["fleet-compliance.json", "fleet-compliance.md"]
                           + [f"db1-{c}-compliance.{e}" for c in ("books", "spare") for e in ("json", "md", "pdf")])
    books = json.loads((out / "db1-books-compliance.json").read_text())
    assert books["schema_version"] == 1 and books["cluster"] == "books"
    assert books["period"]["label"].startswith("last 7 days to ")
    assert {t: v["count"] for t, v in books["tiers"].items()} == {"daily": 1, "weekly": 1, "monthly": 0}
    assert books["erasures"]["records"][0]["backups_holding_data"] == [first]
    assert (out / "db1-books-compliance.pdf").read_bytes().startswith(b"%PDF-")
    assert f"| {first} | logical |" in (out / "db1-books-compliance.md").read_text()

    fleet = json.loads((out / "fleet-compliance.json").read_text())
    assert fleet["schema_version"] == 1 and fleet["report"] == "compliance-fleet"
    rows = {c["cluster"]: c for c in fleet["clusters"]}
    assert set(rows) == {"books", "spare"}
    assert rows["books"]["backups"] == [1, 1, 0] and rows["books"]["backups_total"] == 2
    assert rows["books"]["erasures"] == 1
    assert rows["books"]["erasure_complete_everywhere_at"] == books["erasures"]["complete_everywhere_at"]
    assert rows["books"]["oldest_point"] == books["recoverable"]["databases"][0]["oldest_point"]
    assert "no backup stored" in rows["spare"]["problems"] and "no DR drill recorded" in rows["books"]["problems"]
    assert fleet["problems"] == sum(len(c["problems"]) for c in fleet["clusters"])
    md = (out / "fleet-compliance.md").read_text()
    assert md.startswith("# Backup compliance: fleet summary\n") and "| db1 | books | 1/1/0 | " in md
    assert "| db1 | spare | 0/0/0 | " in md and erased not in md
