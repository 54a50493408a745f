"""Helpers of the health, verify-restore and drill integration tests (not fixtures: plain functions)."""
from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import time
from typing import Any, Dict, List, Optional

NAGIOS = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
RANK = {"ok": 0, "unknown": 1, "warning": 2, "critical": 3}


def clock(delta: dt.timedelta) -> str:
    """A PG_BACKUP_TEST_NOW value ``delta`` away from the real clock."""
    return (dt.datetime.now(dt.timezone.utc) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the Debian package prometheus (scripts/install-deps.sh)"
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"promtool check metrics failed:\n{proc.stdout}{proc.stderr}\n--- input ---\n{text}"


def health_in_all_formats(run_agent, cfg: str, check: str, status: str, *, env: Optional[Dict[str, str]] = None,
                          message: Optional[str] = None) -> Dict[str, Any]:
    """Run ``health`` in the four formats and assert that ``check`` has ``status`` (and its message
    contains ``message``) in each; returns the JSON document."""
    doc = run_agent(cfg, "health", env=env, check=False).data
    assert doc is not None and doc["command"] == "health", doc
    checks = {c["name"]: c for c in doc["checks"]}
    assert check in checks, f"no check {check} in {sorted(checks)}"
    found = checks[check]
    assert found["status"] == status, found
    if message:
        assert message in found["message"], found
    overall = doc["status"]
    assert RANK[overall] >= RANK[status]

    text = run_agent(cfg, "health", "--format", "text", json=False, env=env, check=False)
    assert text.rc == 0, text.describe()
    line = [ln for ln in text.stdout.splitlines() if re.match(rf"^\s+{status.upper()}\s+{re.escape(check)}:", ln)]
    assert line, text.stdout
    assert text.stdout.startswith(f"cluster {doc['cluster']}: {overall.upper()}")

    nagios = run_agent(cfg, "health", "--format", "nagios", json=False, env=env, check=False)
    assert nagios.rc == NAGIOS[overall], nagios.describe()
    first = nagios.stdout.splitlines()[0]
    assert first.startswith(f"PG-BACKUP {overall.upper()} - {doc['cluster']}:")
    if status != "ok":  # every problem is in the summary (its stable part: counters may move between runs)
        assert (message or found["message"]) in first, first
    if found.get("value") is not None:
        assert f"'{check}'=" in first.split(" | ", 1)[1]

    prom = run_agent(cfg, "health", "--format", "prometheus", json=False, env=env, check=False)
    assert prom.rc == 0, prom.describe()
    promtool_check(prom.stdout)
    sample = f'pg_backup_check_status{{cluster="{doc["cluster"]}",check="{check}"}} {NAGIOS[status]}'
    assert sample in prom.stdout.splitlines(), prom.stdout
    return doc


def check_status(run_agent, cfg: str, name: str, env: Optional[Dict[str, str]] = None) -> str:
    """One check's status from ``health --json`` (for states already shown in every format elsewhere)."""
    doc = run_agent(cfg, "health", env=env, check=False).data
    return {c["name"]: c["status"] for c in doc["checks"]}[name]


def prom_value(text: str, name: str, **labels: str) -> Optional[float]:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for(predicate, timeout: float = 60, interval: float = 0.25, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def agent_archive_command(agent_bin: str, cfg: str) -> str:
    """archive_command running the real agent as PostgreSQL would."""
    return f"{agent_bin} --config {cfg} --quiet wal-push %p"


def json_lines(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
