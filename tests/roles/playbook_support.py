"""Shared by the tests that run the collection's playbooks against real PostgreSQL clusters and the real
agent: the agent's test fixtures (agent/tests/conftest.py, loaded by path as ``pg``: ClusterFactory,
write_config, give_to_pg_user, AGENT_BIN, ...) and the environment that makes this checkout importable
as miometry.pg_backup."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

_spec = importlib.util.spec_from_file_location("agent_test_fixtures", ROOT / "agent" / "tests" / "conftest.py")
pg = importlib.util.module_from_spec(_spec)
if _spec.name in sys.modules:
    pg = sys.modules[_spec.name]
else:
    sys.modules[_spec.name] = pg
    _spec.loader.exec_module(pg)


def playbook_env(tmp_path: Path) -> dict:
    """Environment for ansible-playbook: the collection from this checkout (a symlink under tmp_path)."""
    collections = tmp_path / "collections"
    if not collections.exists():
        (collections / "ansible_collections" / "miometry").mkdir(parents=True)
        os.symlink(ROOT, collections / "ansible_collections" / "miometry" / "pg_backup")
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_HOME=str(tmp_path / ".ansible"),
                ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_LOCALHOST_WARNING="0",
                ANSIBLE_BECOME_METHOD="su")


@contextlib.contextmanager
def cluster_base(prefix: str):
    """A postgres-owned 0700 directory and a ClusterFactory making PostgreSQL clusters in it; both removed
    afterwards (for a module-scoped fixture: ``with cluster_base("pgb-x-") as (path, factory): yield ...``)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    pg.give_to_pg_user(path, 0o700)
    factory = pg.ClusterFactory(path)
    try:
        yield path, factory
    finally:
        factory.cleanup()
        shutil.rmtree(path, ignore_errors=True)
