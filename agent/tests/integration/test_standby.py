"""One schedule runs on every node: the standby skips, says so, and exits 0."""
from __future__ import annotations

import json
import os
import tempfile

import pytest

from conftest import PgCluster, make_pg_dir, run_pg, free_port

pytestmark = pytest.mark.integration


def test_backup_skips_on_a_standby_and_runs_on_the_primary(make_cluster, workdir, write_config, run_agent):
    primary = make_cluster(version="15")
    primary.psql("CREATE DATABASE app")
    # A short directory: the Unix socket path must stay under 108 bytes.
    standby = PgCluster("15", tempfile.mkdtemp(prefix="pgb-sb-"), primary.bin_dir, {})
    make_pg_dir(standby.dir, 0o700)
    run_pg([primary.bin("pg_basebackup"), "-D", str(standby.datadir), "-R", "-X", "stream", "--checkpoint=fast", "-h", primary.host,
            "-p", str(primary.port), "-U", "postgres"], timeout=300)
    standby._write_settings(free_port())
    standby.start()
    try:
        assert standby.psql("SELECT pg_is_in_recovery()") == "t"
        on_standby = write_config(workdir, "app", cluster=standby, config_name="standby.yml")
        skipped = run_agent(on_standby, "backup", "--tier", "daily", "--skip-if-standby")
        assert skipped.data["skipped"] is True and skipped.data["reason"] == "standby"
        assert run_agent(on_standby, "list").data["backups"] == []
        text = run_agent(on_standby, "backup", "--tier", "daily", "--skip-if-standby", json=False)
        assert "is a standby" in text.stdout
        audit = [json.loads(line) for line in open(os.path.join(workdir, "state", "audit.jsonl"))]
        assert audit[-1]["result"] == "skipped" and audit[-1]["exit_code"] == 0

        on_primary = write_config(workdir, "app", cluster=primary, config_name="primary.yml")
        made = run_agent(on_primary, "backup", "--tier", "daily", "--skip-if-standby", "--database", "app").data
        assert made["backup_id"]
    finally:
        standby.destroy()
