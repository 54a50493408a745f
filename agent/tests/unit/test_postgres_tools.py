"""Which PostgreSQL programs the agent runs: client tools may be newer than the server, server programs
and the tools that read a data directory must be exactly the backup's major (postgres.server_bin_dir).

The programs here are small scripts that answer ``--version`` like PostgreSQL's; the real binaries of
every major are exercised by the integration tests (test_version_matrix.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pg_backup.config import PostgresSettings
from pg_backup.errors import ConfigError, PostgresError
from pg_backup.postgres import tools


def fake_bin(root: Path, major: int, programs=("postgres", "pg_ctl")) -> str:
    d = root / f"pg{major}" / "bin"
    d.mkdir(parents=True)
    for name in programs:
        path = d / name
        path.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {major}.3'\n")
        os.chmod(path, 0o755)
    return str(d)


def test_server_bin_dir_is_the_only_place_for_the_server_when_set(tmp_path):
    server17 = fake_bin(tmp_path, 17)
    client18 = fake_bin(tmp_path, 18, ("postgres", "pg_ctl", "pg_dump"))
    pg = PostgresSettings(bin_dir=client18, server_bin_dir=server17)
    assert tools.server_bin_dir(pg, 17) == server17
    # Without it, postgres.bin_dir serves when it is the right major.
    assert tools.server_bin_dir(PostgresSettings(bin_dir=client18), 18) == client18


def test_a_server_bin_dir_of_another_major_is_one_clear_configuration_error(tmp_path):
    pg = PostgresSettings(server_bin_dir=fake_bin(tmp_path, 18))
    with pytest.raises(ConfigError) as exc:
        tools.server_bin_dir(pg, 17, what="backup 20261204T000000Z-physical-daily")
    assert str(exc.value) == (f"postgres.server_bin_dir {pg.server_bin_dir} holds PostgreSQL 18, but backup "
                              f"20261204T000000Z-physical-daily needs PostgreSQL 17; set postgres.server_bin_dir "
                              f"to the bin directory of PostgreSQL 17")
    assert exc.value.exit_code == 2
    with pytest.raises(ConfigError, match="holds PostgreSQL 18"):
        tools.same_major_tool(pg, 17, "pg_combinebackup")


def test_same_major_tools_never_take_a_newer_major(tmp_path):
    server17 = fake_bin(tmp_path, 17, ("postgres", "pg_ctl", "pg_combinebackup"))
    client18 = fake_bin(tmp_path, 18, ("postgres", "pg_ctl", "pg_combinebackup", "pg_verifybackup"))
    pg = PostgresSettings(bin_dir=client18, server_bin_dir=server17)
    assert tools.same_major_tool(pg, 17, "pg_combinebackup") == os.path.join(server17, "pg_combinebackup")
    assert tools.same_major_tool(pg, 17, "pg_verifybackup") is None  # 18's refuses 17's pg_control
    with pytest.raises(PostgresError, match="no pg_verifybackup of PostgreSQL 17 found") as exc:
        tools.require_same_major_tool(pg, 17, "pg_verifybackup")
    assert "postgres.server_bin_dir" in exc.value.hint
    assert tools.same_major_tool(PostgresSettings(bin_dir=client18), 18, "pg_verifybackup") == \
        os.path.join(client18, "pg_verifybackup")


def test_config_validate_checks_the_server_bin_dir(tmp_path):
    assert PostgresSettings(server_bin_dir=fake_bin(tmp_path, 17)).path_problems() == []
    assert PostgresSettings(server_bin_dir="pg/bin").path_problems() == [
        "postgres.server_bin_dir: must be an absolute path, got 'pg/bin'"]
    half = fake_bin(tmp_path, 16, ("postgres",))
    assert PostgresSettings(server_bin_dir=half).path_problems() == [
        f"postgres.server_bin_dir: {half} has no runnable pg_ctl; set it to the bin directory of the "
        f"cluster's PostgreSQL major"]
