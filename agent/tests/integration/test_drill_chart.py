"""``pg-backup drill-chart``: the history chart of every drill in a real (local) repository, through the
real CLI as the postgres user. Drawn where the charts extra is installed; where it is not (a database
host: matplotlib is hidden from the agent's interpreter here), the chart the newest drill stored is
fetched, and without one the command says what to install."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import give_to_pg_user, make_pg_dir

pytestmark = pytest.mark.integration


def _report(i: int, rto: float, rpo: float, chart: bool) -> dict:
    drill_id = f"2026{3 + 3 * i:02d}01T1000{i:02d}Z"
    prefix = f"main/audit/drills/{drill_id}/"
    return {"drill_id": drill_id, "cluster": "main", "started_at": f"2026-{3 + 3 * i:02d}-01T10:00:{i:02d}.000000Z",
            "passed": rto < 600, "rto": {"seconds": rto, "met": rto < 600}, "rpo": {"seconds": rpo, "met": True},
            "targets": {"rto_minutes": 10, "rpo_minutes": 1},
            "reports": {"json": prefix + "report.json", "markdown": prefix + "report.md",
                        **({"chart": prefix + "history.png"} if chart else {})}}


def _store(repo: Path, report: dict, png: bytes = b"") -> None:
    d = make_pg_dir(repo / "main" / "audit" / "drills" / report["drill_id"])
    (d / "report.json").write_text(json.dumps(report))
    give_to_pg_user(d / "report.json", 0o600)
    if png:
        (d / "history.png").write_bytes(png)
        give_to_pg_user(d / "history.png", 0o600)


@pytest.fixture
def no_matplotlib(workdir):
    """A PYTHONPATH entry whose matplotlib cannot be imported: the agent as on a host without the extra."""
    stub = make_pg_dir(Path(workdir) / "no-mpl" / "matplotlib", 0o755)
    (stub / "__init__.py").write_text("raise ImportError('No module named matplotlib (hidden by the test)')\n")
    give_to_pg_user(stub / "__init__.py", 0o644)
    return {"PYTHONPATH": str(stub.parent)}


def test_drill_chart_draws_fetches_or_explains(workdir, write_config, run_agent, no_matplotlib):
    cfg = write_config(workdir, "main")
    repo = Path(workdir) / "repo"
    out = Path(workdir) / "chart.png"

    none = run_agent(cfg, "drill-chart", "--output", str(out), check=False)
    assert none.rc == 7 and "run 'pg-backup drill' first" in none.stderr, none.describe()

    stored_png = b"\x89PNG\r\n\x1a\n stored by the second drill"
    _store(repo, _report(0, 250.0, 3.0, chart=False))
    _store(repo, _report(1, 700.0, 5.0, chart=True), stored_png)
    _store(repo, _report(2, 300.0, 0.0, chart=False))

    drawn = run_agent(cfg, "drill-chart", "--output", str(out)).data
    assert drawn["source"] == "drawn" and drawn["drills"] == 3
    assert drawn["newest_drill"]["drill_id"] == "20260901T100002Z" and drawn["newest_drill"]["passed"] is True
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000 and drawn["bytes"] == len(png)

    text = run_agent(cfg, "drill-chart", "--output", str(out), json=False).stdout
    assert "3 drill(s)" in text and "RTO 5.0 min (300 s) (target 10 min)" in text, text

    fetched = run_agent(cfg, "drill-chart", "--output", str(out), env=no_matplotlib).data
    assert fetched["source"] == "main/audit/drills/20260601T100001Z/history.png"
    assert out.read_bytes() == stored_png

    (repo / "main" / "audit" / "drills" / "20260601T100001Z" / "history.png").unlink()
    _store(repo, _report(1, 700.0, 5.0, chart=False))
    missing = run_agent(cfg, "drill-chart", "--output", str(out), env=no_matplotlib, check=False)
    assert missing.rc == 2, missing.describe()
    assert "pip install 'pg-backup[charts]'" in missing.stderr and "no drill stored one" in missing.stderr
