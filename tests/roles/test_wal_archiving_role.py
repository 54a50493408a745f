"""The wal_archiving role against real PostgreSQL clusters (15, 17, 18): the settings it enforces with
community.postgresql.postgresql_set, the restart, summarize_wal on 17+ (read back from the live server),
and that a second run and a check-mode run change nothing. The role runs through ansible-playbook
(local connection, become postgres); the end-to-end wal-check needs the agent and moto and is the
Molecule scenarios' job (wal_archiving_check: false here, archive_command runs /bin/true). Plain pytest:

    .venv/bin/python -m pytest tests/roles/test_wal_archiving_role.py
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = VENV_BIN / "ansible-playbook"
DEPENDENCIES = Path(sys.prefix) / "collections"

# The agent's test fixtures (clusters run as the postgres user) without making them this suite's conftest.
_spec = importlib.util.spec_from_file_location("agent_test_fixtures", ROOT / "agent" / "tests" / "conftest.py")
pg = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = pg
_spec.loader.exec_module(pg)

pytestmark = pytest.mark.skipif(not pg.IS_ROOT, reason="runs PostgreSQL as the postgres user: needs root")


@pytest.fixture(scope="module")
def clusters():
    # Under /tmp, not pytest's 0700 tree: the postgres user must reach it.
    base = Path(tempfile.mkdtemp(prefix="pgb-wal-archiving-"))
    pg.give_to_pg_user(base, 0o700)
    factory = pg.ClusterFactory(base)
    yield factory
    factory.cleanup()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def ansible_env(tmp_path_factory):
    if not (DEPENDENCIES / "ansible_collections" / "community" / "postgresql").is_dir():
        pytest.fail(f"{DEPENDENCIES} lacks community.postgresql: run scripts/install-collections.sh", pytrace=False)
    base = tmp_path_factory.mktemp("collections")
    (base / "ansible_collections" / "miometry").mkdir(parents=True)
    os.symlink(ROOT, base / "ansible_collections" / "miometry" / "pg_backup")
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=f"{base}:{DEPENDENCIES}", ANSIBLE_HOME=str(base / ".ansible"),
                ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0",
                ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_BECOME_METHOD="su")


def run_role(env, tmp_path, cluster, *options, **role_vars):
    play = {
        "hosts": "localhost", "gather_facts": False,
        "vars": dict({
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "wal_archiving_python": sys.executable,
            "wal_archiving_clusters": [{"name": "t", "os_user": pg.PG_OS_USER, "config": {"postgres": {
                "host": cluster.host, "port": cluster.port, "user": cluster.superuser,
                "bin_dir": str(cluster.bin_dir)}}}],
            "wal_archiving_config_dir": str(tmp_path),
            "wal_archiving_agent_bin": "/bin/true",
            "wal_archiving_check": False,
        }, **role_vars),
        "roles": [{"role": "miometry.pg_backup.wal_archiving"}],
    }
    path = tmp_path / "play.yml"
    path.write_text(json.dumps([play]))
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(path), *options], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recap = [line for line in proc.stdout.splitlines() if "ok=" in line and "changed=" in line]
    assert len(recap) == 1, proc.stdout
    return recap[0], proc.stdout


def show(cluster, name):
    return cluster.psql(f"SHOW {name}")


@pytest.mark.parametrize("version", ["15", "17", "18"])
def test_role_sets_archiving_and_summarize_wal_then_changes_nothing(clusters, ansible_env, tmp_path, version):
    cluster = clusters(version)
    assert show(cluster, "archive_mode") == "off"
    if cluster.version >= 17:
        assert show(cluster, "summarize_wal") == "off"

    recap, out = run_role(ansible_env, tmp_path, cluster, "--diff")
    assert "changed=0" not in recap, out
    # archive_mode needs a restart, which the role did with pg_ctl.
    assert show(cluster, "archive_mode") == "on"
    assert show(cluster, "wal_level") == "replica"
    assert show(cluster, "archive_timeout") == "1min"
    command = show(cluster, "archive_command")
    assert command.startswith("/bin/true --config ") and command.endswith(" --quiet wal-push %p")
    if cluster.version >= 17:
        assert show(cluster, "summarize_wal") == "on"
        assert "summarize_wal" in out and "off -> on" in out  # the changed settings, old and new
        pid = cluster.psql("SELECT summarizer_pid FROM pg_get_wal_summarizer_state()")
        assert pid.isdigit(), pid
    else:
        assert "summarize_wal" not in out

    recap, out = run_role(ansible_env, tmp_path, cluster)
    assert "changed=0" in recap, out
    recap, out = run_role(ansible_env, tmp_path, cluster, "--check", "--diff")
    assert "changed=0" in recap, out


def test_summarize_wal_false_leaves_the_setting_and_logical_stays(clusters, ansible_env, tmp_path):
    cluster = clusters("18", wal_level="logical")
    recap, out = run_role(ansible_env, tmp_path, cluster, wal_archiving_summarize_wal=False,
                          wal_archiving_rpo_target_seconds=50)
    assert show(cluster, "summarize_wal") == "off"
    assert show(cluster, "wal_level") == "logical"
    assert show(cluster, "archive_timeout") == "25s"
    recap, out = run_role(ansible_env, tmp_path, cluster, "--check", wal_archiving_summarize_wal=False,
                          wal_archiving_rpo_target_seconds=50)
    assert "changed=0" in recap, out
