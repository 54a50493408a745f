"""Helpers of the incremental backup tests (backup side and restore side use the same ones).

- ``incremental_cluster(make_cluster, version)``: a PostgreSQL 17+ cluster ready for incremental
  backups (archive_mode on, wal_level replica, summarize_wal on); skips when the major is missing.
- ``incremental_config(workdir, write_config, cluster, **sections)``: an agent configuration with
  ``physical.incremental: auto`` and a fast checkpoint, archiving enabled into it.
- ``make_chain(cluster, cfg, run_agent, n)``: a full backup then ``n`` incremental ones, with changes
  between them (a contiguous key range of ``ticks`` updated plus new rows); returns a :class:`Chain`
  with the backup ids and the exact content (``content_digest``) at each backup and at the end.
- ``content_digest(port)`` / ``cluster_digest(cluster)``: one digest of the whole ``ticks`` table.

Example (restore side)::

    cluster = incremental_cluster(make_cluster, "18")
    cfg = incremental_config(workdir, write_config, cluster)
    chain = make_chain(cluster, cfg, run_agent, 2)       # full + 2 incrementals, end state archived
    run_agent(cfg, "pitr", "--latest", "--data-dir", d, "--port", str(port))
    assert content_digest(port) == chain.final_digest
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

from pgb_pitr_support import enable_archiving, sql_on, switch_and_wait_archived

INITIAL_ROWS = 200_000
CHANGED_ROWS = 4_000          # a contiguous key range updated per step (~2 % of the table)
INSERTED_ROWS = 2_000         # new rows per step
DIGEST_SQL = ("SELECT count(*)::text || ':' || md5(string_agg(id::text || '=' || note, ',' ORDER BY id)) "
              "FROM ticks")


def incremental_cluster(make_cluster: Any, version: str = "18", **settings: Any) -> Any:
    """A cluster of ``version`` (17+) with what incremental backups need; a missing major skips."""
    conf = {"archive_mode": "on", "archive_command": "", "wal_level": "replica", "summarize_wal": True}
    conf.update(settings)
    return make_cluster(version, **conf)


def incremental_config(workdir: Any, write_config: Any, cluster: Any, name: str = "incr", **sections: Any) -> str:
    """A configuration with incremental backups on (auto) and a fast checkpoint; archiving into it."""
    physical = {"checkpoint": "fast", "incremental": "auto"}
    physical.update(sections.pop("physical", {}))
    cfg = write_config(workdir, name, cluster=cluster, physical=physical, **sections)
    enable_archiving(cluster, cfg)
    return cfg


def fill(cluster: Any, rows: int = INITIAL_ROWS) -> None:
    """Database ``app`` with table ``ticks`` (id, note) of ``rows`` rows."""
    cluster.psql("CREATE DATABASE app")
    cluster.psql("CREATE TABLE ticks (id int PRIMARY KEY, note text);"
                 f"INSERT INTO ticks SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;"
                 "VACUUM ANALYZE ticks", dbname="app")


def change(cluster: Any, step: int) -> None:
    """Step ``step`` (1, 2, ...): update a contiguous key range and insert new rows."""
    lo = 10_000 + (step - 1) * 20_000
    top = int(cluster.psql("SELECT max(id) FROM ticks", dbname="app"))
    cluster.psql(f"UPDATE ticks SET note = 'step {step} ' || id WHERE id BETWEEN {lo} AND {lo + CHANGED_ROWS - 1};"
                 f"INSERT INTO ticks SELECT g, 'new {step} ' || g FROM generate_series({top + 1}, "
                 f"{top + INSERTED_ROWS}) g", dbname="app")


def cluster_digest(cluster: Any) -> str:
    return cluster.psql(DIGEST_SQL, dbname="app")


def content_digest(port: int) -> str:
    """The digest of ``ticks`` on a (restored) server listening on 127.0.0.1:``port``."""
    return sql_on(port, DIGEST_SQL, "app")[0]


@dataclass
class Chain:
    backup_ids: List[str]                      # the full backup first, then each incremental one
    digests: List[str]                          # content when each backup was taken
    final_digest: str                           # content at the end (after a last change, archived)
    backups: List[Dict[str, Any]] = field(default_factory=list)   # each backup's `list --json` summary


def make_chain(cluster: Any, cfg: str, run_agent: Any, n: int = 2, *, tier: str = "daily",
               fresh: bool = True) -> Chain:
    """A full backup and ``n`` incremental ones with a change before each, then one more change whose
    WAL is archived (so ``pitr --latest`` ends after the last incremental). ``fresh``: create ``app``."""
    if fresh:
        fill(cluster)
    ids: List[str] = []
    digests: List[str] = []
    backups: List[Dict[str, Any]] = []
    for step in range(n + 1):
        if step:
            change(cluster, step)
        digests.append(cluster_digest(cluster))
        args = ["backup", "--physical", "--tier", tier] + (["--incremental"] if step else ["--full"])
        done = run_agent(cfg, *args, timeout=600).data
        summary = done["backup"]
        assert (summary["incremental"] is not None) == bool(step), f"step {step}: {done}"
        ids.append(done["backup_id"])
        backups.append(summary)
    change(cluster, n + 1)
    final = cluster_digest(cluster)
    switch_and_wait_archived(cluster)
    return Chain(ids, digests, final, backups)
