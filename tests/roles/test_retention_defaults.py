"""The collection's copies of the agent's retention agree with the agent.

The bucket's lifecycle rules are derived on the control node, where the agent is not installed, so
``plugins/module_utils/lifecycle.py`` and the bucket role repeat the agent's retention defaults and
its expiry arithmetic. This ties every copy to ``RetentionSettings`` and ``retention.expiry_days``
in the agent (installed in the project venv). Plain pytest:

    .venv/bin/python -m pytest tests/roles
"""
from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "agent" / "src"))
from pg_backup import config as agent_config  # noqa: E402
from pg_backup import retention as agent_retention  # noqa: E402

TIER_KEYS = ("daily_days", "weekly_weeks", "monthly_months")


def _load_lifecycle():
    """module_utils/lifecycle.py is pure Python with no Ansible import: load it from its file."""
    path = ROOT / "plugins" / "module_utils" / "lifecycle.py"
    spec = importlib.util.spec_from_file_location("pg_backup_collection_lifecycle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lifecycle = _load_lifecycle()


def _agent_defaults() -> dict:
    defaults = dataclasses.asdict(agent_config.RetentionSettings())
    return {key: defaults[key] for key in TIER_KEYS}


def test_the_agent_still_has_the_tier_settings_the_collection_copies():
    fields = {f.name for f in dataclasses.fields(agent_config.RetentionSettings)}
    assert set(TIER_KEYS) <= fields, f"RetentionSettings fields: {sorted(fields)}"
    assert tuple(lifecycle.RETENTION_KEYS) == TIER_KEYS


def test_lifecycle_defaults_equal_the_agents():
    assert lifecycle.DEFAULT_RETENTION == _agent_defaults()
    assert lifecycle.retention_settings() == _agent_defaults()


def test_bucket_role_defaults_equal_the_agents():
    defaults = yaml.safe_load((ROOT / "roles" / "bucket" / "defaults" / "main.yml").read_text())
    assert defaults["bucket_retention"] == _agent_defaults()


def test_bucket_role_argument_spec_default_equals_the_agents():
    specs = yaml.safe_load((ROOT / "roles" / "bucket" / "meta" / "argument_specs.yml").read_text())
    assert specs["argument_specs"]["main"]["options"]["bucket_retention"]["default"] == _agent_defaults()


@pytest.mark.parametrize("settings", [
    {},
    {"daily_days": 1, "weekly_weeks": 1, "monthly_months": 1},
    {"daily_days": 7, "weekly_weeks": 5, "monthly_months": 12},
    {"daily_days": 45},
    {"weekly_weeks": 52, "monthly_months": 120},
    {"daily_days": 3660, "weekly_weeks": 520, "monthly_months": 1200},
])
def test_lifecycle_expiry_days_agree_with_the_agents_retention(settings):
    agent = agent_retention.expiry_days(agent_config.RetentionSettings(**settings))
    assert lifecycle.expiry_days(settings) == agent
