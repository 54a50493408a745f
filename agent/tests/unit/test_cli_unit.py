"""CLI behaviour that needs no database: usage errors, config validation, the lock, JSON envelopes."""
from __future__ import annotations

import json
import os

from pg_backup import cli
from pg_backup.lock import ClusterLock


def _config(tmp_path, **extra):
    pp = tmp_path / "pp"
    pp.write_text("pw\n")
    os.chmod(pp, 0o600)
    text = (f"cluster: main\nrepository: {{type: local, path: {tmp_path / 'repo'}}}\n"
            f"encryption: {{mode: passphrase, passphrase_file: {pp}}}\npaths: {{state_dir: {tmp_path / 'state'}}}\n")
    for key, value in extra.items():
        text += f"{key}: {value}\n"
    path = tmp_path / "cfg.yml"
    path.write_text(text)
    return str(path)


def test_usage_error_is_one_line_and_exit_2(capsys):
    assert cli.main(["backup", "--tier", "hourly"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pg-backup: error: argument --tier")


def test_config_validate_lists_every_problem_as_json(tmp_path, capsys):
    path = tmp_path / "bad.yml"
    path.write_text("cluster: main\npostgres: {port: 0}\nrepository: {type: ftp}\n")
    assert cli.main(["--config", str(path), "--json", "config", "validate"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and doc["ok"] is False
    problems = doc["error"]["problems"]
    assert any(p.startswith("postgres.port:") for p in problems)
    assert any(p.startswith("repository.type:") for p in problems)


def test_missing_config_names_the_file_and_the_fix(tmp_path, capsys):
    assert cli.main(["--config", str(tmp_path / "none.yml"), "list"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--config" in err


def test_second_run_while_locked_exits_3_at_once(tmp_path, capsys):
    path = _config(tmp_path)
    with ClusterLock(str(tmp_path / "state"), "main", "pg-backup backup --tier daily"):
        assert cli.main(["--config", path, "prune"]) == 3
    err = capsys.readouterr().err
    assert "cluster main is busy" in err and "pg-backup backup --tier daily" in err


def test_list_of_an_empty_repository_and_show_of_a_missing_backup(tmp_path, capsys):
    path = _config(tmp_path)
    assert cli.main(["--config", path, "--json", "list"]) == 0
    assert json.loads(capsys.readouterr().out)["backups"] == []
    assert cli.main(["--config", path, "show", "20260101T000000Z-logical-daily"]) == 7


def test_exit_codes_command_prints_the_table(capsys):
    assert cli.main(["exit-codes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exit_codes"]["4"].startswith("integrity failure")
