"""playbooks/dr_drill.yml -e dr_drill_chart_dir=DIR against a real PostgreSQL 15 and the real agent (local
repository holding two earlier drills' reports): the drill of a cluster without a base backup fails (and
fails the play, as it must), and still each cluster's history chart is drawn on the host by
``pg-backup drill-chart``, fetched to the control node as <host>-<cluster>-drills.png, and its path
printed; the host's temporary file is removed. Plain pytest:

    .venv/bin/python -m pytest tests/roles/test_dr_drill_chart.py
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


@pytest.fixture
def base():
    path = Path(tempfile.mkdtemp(prefix="pgb-drill-chart-"))
    pg.give_to_pg_user(path, 0o700)
    factory = pg.ClusterFactory(path)
    yield path, factory
    factory.cleanup()
    shutil.rmtree(path, ignore_errors=True)


def _earlier_drill(repo: Path, drill_id: str, started_at: str, rto: float) -> None:
    d = pg.make_pg_dir(repo / "main" / "audit" / "drills" / drill_id)
    prefix = f"main/audit/drills/{drill_id}/"
    (d / "report.json").write_text(json.dumps({
        "drill_id": drill_id, "cluster": "main", "started_at": started_at, "passed": True,
        "rto": {"seconds": rto, "met": True}, "rpo": {"seconds": 1.0, "met": True},
        "targets": {"rto_minutes": 240, "rpo_minutes": 60},
        "reports": {"json": prefix + "report.json", "markdown": prefix + "report.md"}}))
    pg.give_to_pg_user(d / "report.json", 0o600)


def test_dr_drill_fetches_each_clusters_chart_to_the_control_node(base, tmp_path):
    root, factory = base
    cluster = factory("15")
    config_dir = Path(tempfile.mkdtemp(prefix="cfg-", dir=root))
    pg.give_to_pg_user(config_dir, 0o700)
    pg.write_config(config_dir, "main", cluster=cluster, config_name="main.yml")
    _earlier_drill(config_dir / "repo", "20260301T100000Z", "2026-03-01T10:00:00.000000Z", 300.0)
    _earlier_drill(config_dir / "repo", "20260601T100000Z", "2026-06-01T10:00:00.000000Z", 280.0)

    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"all": {"children": {"pg_backup": {"hosts": {"db1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "agent_venv_dir": str(pg.AGENT_BIN.parent.parent), "agent_config_dir": str(config_dir),
        "agent_clusters": [{"name": "main", "os_user": pg.PG_OS_USER}]}}}}}}))
    before = set(Path(tempfile.gettempdir()).glob("ansible.*-drills.png"))
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(ROOT / "playbooks" / "dr_drill.yml"),
                           "-e", json.dumps({"dr_drill_chart_dir": "charts", "dr_drill_port": pg.free_port()})],
                          env=playbook_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "DR drill failed on db1" in out, out   # no base backup: the drill fails

    chart = tmp_path / "charts" / "db1-main-drills.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 10_000, out
    assert f"main: {chart} (2 drill(s), drawn on the host)" in out, out   # this drill wrote no report
    assert set(Path(tempfile.gettempdir()).glob("ansible.*-drills.png")) <= before, "a temporary chart was left"
