"""What a physical backup says while it waits and what it knows of its size (issue 13), on a real
PostgreSQL 15: a spread checkpoint is announced before the wait, and the server's size estimates
(``BASE_BACKUP ... PROGRESS``) give the progress its percentage and ETA."""
from __future__ import annotations

import pytest

from pg_backup.config import PostgresSettings
from pg_backup.physical.stream import BaseBackupStream
from pgb_pitr_support import enable_archiving

pytestmark = pytest.mark.integration


def test_spread_checkpoint_is_announced_and_the_server_estimates_the_size(make_cluster, workdir, write_config,
                                                                          run_agent):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica",
                           checkpoint_timeout="30s", checkpoint_completion_target=0.1)
    cfg = write_config(workdir, "prog", cluster=cluster, physical={"checkpoint": "spread"})
    enable_archiving(cluster, cfg)
    cluster.psql("CREATE TABLE filler AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g")
    done = run_agent(cfg, "backup", "--physical")
    assert ("waiting for the server's spread checkpoint (up to checkpoint_timeout 30s x checkpoint_completion_target "
            "0.1; physical.checkpoint: fast starts at once)") in done.stderr
    assert done.stderr.index("spread checkpoint") < done.stderr.index("checkpoint done")  # said before the wait

    stream = BaseBackupStream(PostgresSettings(host=cluster.host, port=cluster.port, user=cluster.superuser))
    waited = []
    try:
        stream.start("progress test", fast=True, on_wait=waited.append)
    finally:
        stream.close()  # abandons the backup on the server
    database_size = int(cluster.psql("SELECT sum(pg_database_size(oid)) FROM pg_database"))
    assert database_size // 2 < stream.sizes[None] < database_size * 3, (stream.sizes, database_size)
