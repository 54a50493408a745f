"""The configuration schema: validation names every problem by its key path."""
from __future__ import annotations

import os

import pytest

from pg_backup import config
from pg_backup.errors import ConfigError


def _secret(tmp_path, name="pp", mode=0o600):
    path = tmp_path / name
    path.write_text("s3cret\n")
    os.chmod(path, mode)
    return str(path)


def _valid(tmp_path):
    return {"cluster": "main", "repository": {"type": "local", "path": str(tmp_path / "repo")},
            "encryption": {"mode": "passphrase", "passphrase_file": _secret(tmp_path)}}


def test_minimal_config_is_valid_and_defaults_follow_the_seed_policy(tmp_path):
    settings, problems = config.parse(_valid(tmp_path))
    assert problems == []
    assert (settings.retention.daily_days, settings.retention.weekly_weeks, settings.retention.monthly_months) == (30, 12, 84)
    assert settings.retention.wal_hours == 24
    assert settings.postgres.port == 5432


def test_every_problem_is_reported_with_its_key_path(tmp_path):
    data = _valid(tmp_path)
    data["postgres"] = {"port": 70000, "host": 5}
    data["repository"] = {"type": "s3", "s3": {"sse": "rot13", "storage_class": {"monthly": "ICEBOX"}}}
    data["retention"] = {"daily_days": "thirty"}
    data["bogus"] = 1
    data["compression"] = {"level": True}
    _, problems = config.parse(data)
    text = "\n".join(problems)
    assert "postgres.port: 70000 is out of range 1..65535" in text
    assert "repository.s3.sse: 'rot13' is not one of" in text
    assert "repository.s3.storage_class.monthly: 'ICEBOX'" in text
    assert "retention.daily_days: must be a whole number" in text
    assert "compression.level: must be a whole number" in text
    assert "bogus: unknown key" in text
    assert "repository.s3.bucket: required when repository.type is s3" in text


def test_secret_files_readable_by_others_are_refused(tmp_path):
    data = _valid(tmp_path)
    data["encryption"]["passphrase_file"] = _secret(tmp_path, "loose", 0o644)
    _, problems = config.parse(data)
    assert any("encryption.passphrase_file" in p and "chmod 600" in p for p in problems)


def test_cluster_name_is_constrained(tmp_path):
    data = _valid(tmp_path)
    data["cluster"] = "../etc"
    _, problems = config.parse(data)
    assert any(p.startswith("cluster:") for p in problems)


def test_load_raises_one_line_with_a_count(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("cluster: main\nrepository: {type: local}\nencryption: {mode: passphrase}\n")
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    assert "and 1 more" in str(err.value)
    assert len(err.value.problems) == 2


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("cluster: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    assert "not valid YAML at line" in str(err.value)


def test_reference_lists_every_option_once():
    options = list(config.iter_options())
    paths = [o.path for o in options]
    assert len(paths) == len(set(paths))
    reference = config.reference_markdown()
    for p in paths:
        assert f"`{p}`" in reference
    assert "repository.s3.storage_class.monthly" in paths


def test_readme_configuration_reference_is_generated_from_the_schema():
    readme = os.path.join(os.path.dirname(__file__), "..", "..", "..", "README.md")
    if not os.path.exists(readme):
        pytest.fail("README.md missing at the repository root")
    with open(readme, encoding="utf-8") as fh:
        text = fh.read()
    assert config.reference_markdown() in text, "README's configuration table is stale: regenerate it with 'pg-backup config reference'"


@pytest.mark.parametrize("count, problem", [
    (65536, None), (1025, None), (65011712, None),
    (1024, "encryption.s2k_count: 1024 is out of range 1025..65011712"),
    (65011713, "encryption.s2k_count: 65011713 is out of range 1025..65011712"),
    ("many", "encryption.s2k_count: must be a whole number, got 'many'"),
])
def test_s2k_count_is_checked_against_what_gpg_honours(tmp_path, count, problem):
    data = _valid(tmp_path)
    data["encryption"]["s2k_count"] = count
    settings, problems = config.parse(data)
    assert problems == ([problem] if problem else [])
    if problem is None:
        assert settings.encryption.s2k_count == count
