"""The agent needs nothing but ``pip install ./agent`` in a venv made from Debian's Python, run as
the postgres user (the way the agent role installs it, and the way PostgreSQL will call it)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import give_to_pg_user, run_pg

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="needs Debian's /usr/bin/python3")
def test_pip_install_into_a_system_python_venv_then_backup_as_postgres(pg15, workdir, write_config):
    venv = os.path.join(workdir, "venv")
    src = os.path.join(workdir, "agent-src")
    shutil.copytree(REPO / "agent", src, ignore=shutil.ignore_patterns("tests", "*.egg-info", "__pycache__", "build"))
    give_to_pg_user(src, 0o755)
    subprocess.run(["chown", "-R", "postgres", src], check=False)
    run_pg(["/usr/bin/python3", "-m", "venv", venv])
    # The pinned versions, as the agent role installs them; pip's cache keeps this quick.
    run_pg([f"{venv}/bin/pip", "install", "-q", "--disable-pip-version-check", "-c",
            str(REPO / "requirements" / "agent.txt"), src], timeout=900)
    agent = f"{venv}/bin/pg-backup"
    version = run_pg([agent, "--version"]).stdout
    assert version.startswith("pg-backup ")
    pg15.psql("DROP DATABASE IF EXISTS plain_install; CREATE DATABASE plain_install")
    cfg = write_config(workdir, "plain", cluster=pg15)
    out = run_pg([agent, "--config", cfg, "--json", "backup", "--tier", "daily", "--database", "plain_install"]).stdout
    assert '"ok": true' in out
    assert '"ok": true' in run_pg([agent, "--config", cfg, "--json", "verify", "--all", "--deep"]).stdout
    assert sys.executable != f"{venv}/bin/python"
