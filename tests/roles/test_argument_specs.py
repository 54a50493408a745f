"""The roles' interfaces agree with themselves and with the agent.

For every role: defaults/main.yml and meta/argument_specs.yml name the same variables with the
same defaults (prometheus.prometheus's CI check). For the agent role: its ``agent_clusters``
items accept every top-level section of the agent's configuration schema, secrets are
``no_log``, and its README lists those sections. Plain pytest:

    .venv/bin/python -m pytest tests/roles
"""
from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES_DIR = ROOT / "roles"
# Every role of the collection: one without argument specs fails below instead of dropping out.
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks" / "main.yml").is_file())

sys.path.insert(0, str(ROOT / "agent" / "src"))
from pg_backup import config as agent_config  # noqa: E402


def _defaults(role: str) -> dict:
    return yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text()) or {}


def _spec(role: str) -> dict:
    doc = yaml.safe_load((ROLES_DIR / role / "meta" / "argument_specs.yml").read_text())
    return doc["argument_specs"]["main"]


def _options(role: str) -> dict:
    return _spec(role).get("options") or {}


def _agent_sections() -> list:
    """Top-level sections of the agent's schema (the role owns 'cluster', an option, not a section)."""
    return [f.name for f in dataclasses.fields(agent_config.Settings) if f.metadata.get("section")]


def test_every_role_is_checked():
    assert set(ROLES) == {"agent", "bucket", "monitoring", "schedule", "wal_archiving"}, ROLES


@pytest.mark.parametrize("role", ROLES)
def test_every_role_has_argument_specs_and_defaults(role):
    assert (ROLES_DIR / role / "meta" / "argument_specs.yml").is_file(), f"{role}: meta/argument_specs.yml missing"
    assert (ROLES_DIR / role / "defaults" / "main.yml").is_file(), f"{role}: defaults/main.yml missing"


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_name_the_same_variables(role):
    defaults, options = set(_defaults(role)), set(_options(role))
    assert defaults == options, (f"{role}: only in defaults/main.yml: {sorted(defaults - options)}; "
                                 f"only in meta/argument_specs.yml: {sorted(options - defaults)}")


@pytest.mark.parametrize("role", ROLES)
def test_every_default_equals_the_spec_default(role):
    options = _options(role)
    wrong = {k: (v, options[k].get("default")) for k, v in _defaults(role).items()
             if k in options and options[k].get("default") != v}
    assert not wrong, f"{role}: defaults/main.yml vs argument_specs default: {wrong}"


@pytest.mark.parametrize("role", ROLES)
def test_every_default_passes_the_argument_spec(role):
    """Types and choices: what Ansible checks when the role starts, for the defaults themselves. A default
    that is a template is checked by Ansible once it is rendered; here only its declared type is known."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    spec = copy.deepcopy(_options(role))
    for option in spec.values():
        _strip_docs(option)
        if _is_template(option.get("default")):
            del option["default"]
    concrete = {k: v for k, v in _defaults(role).items() if not _is_template(v)}
    result = ArgumentSpecValidator(spec).validate(concrete)
    assert not result.error_messages, f"{role}: {result.error_messages}"
    changed = {k: (v, result.validated_parameters[k]) for k, v in concrete.items()
               if result.validated_parameters[k] != v or type(result.validated_parameters[k]) is not type(v)}
    assert not changed, f"{role}: defaults of another type than their spec (default, as validated): {changed}"


def _is_template(value) -> bool:
    return isinstance(value, str) and "{{" in value


@pytest.mark.parametrize("role", ROLES)
def test_every_variable_is_documented_typed_and_prefixed(role):
    for name, option in _options(role).items():
        assert name.startswith(role + "_"), f"{role}: {name} is not prefixed with '{role}_'"
        assert option.get("description"), f"{role}: {name} has no description"
        assert option.get("type"), f"{role}: {name} has no type"
        assert "default" in option, f"{role}: {name} has no default"
        default = option["default"]
        if "choices" in option and not (isinstance(default, str) and "{{" in default):
            values = default if option["type"] == "list" else [default]
            assert set(values) <= set(option["choices"]), f"{role}: {name} default {default!r} not among choices"


@pytest.mark.parametrize("role", ROLES)
def test_role_has_a_readme_naming_every_variable(role):
    readme = ROLES_DIR / role / "README.md"
    assert readme.is_file(), f"{role}: README.md missing (galaxy-importer requires one)"
    text = readme.read_text()
    missing = [name for name in _options(role) if f"`{name}`" not in text]
    assert not missing, f"{role}: README.md does not document {missing}"


def _agent_cluster_item_spec() -> dict:
    return _options("agent")["agent_clusters"]


def test_agent_cluster_secrets_are_no_log():
    suboptions = _agent_cluster_item_spec()["options"]
    for secret in ("passphrase", "s3_access_key_id", "s3_secret_access_key"):
        assert suboptions[secret].get("no_log") is True, f"agent_clusters.{secret} must be no_log"
    assert suboptions["name"].get("required") is True


def test_agent_cluster_config_is_a_free_form_mapping_that_names_every_agent_section():
    config = _agent_cluster_item_spec()["options"]["config"]
    assert config["type"] == "dict" and "options" not in config, \
        "config is validated by the agent itself ('pg-backup config validate'), not by the argument spec"
    text = " ".join(config["description"])
    missing = [s for s in _agent_sections() if f"C({s})" not in text]
    assert not missing, f"agent_clusters.config description does not name the agent's sections {missing}"


def test_the_argument_spec_accepts_a_config_with_every_agent_section():
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

    full = agent_config.to_dict(agent_config.Settings())
    full.pop("cluster")  # the role adds it
    assert set(full) == set(_agent_sections())
    spec = copy.deepcopy(_options("agent"))
    for option in spec.values():  # role-style specs: drop documentation keys the validator does not know
        _strip_docs(option)
    item = {"name": "main", "os_user": "postgres", "config": full, "passphrase": "secret",
            "s3_access_key_id": "AKIA", "s3_secret_access_key": "s3cr3t"}
    result = ArgumentSpecValidator({"agent_clusters": spec["agent_clusters"]}).validate({"agent_clusters": [item]})
    assert not result.error_messages, result.error_messages
    assert result.validated_parameters["agent_clusters"][0]["config"] == full
    assert {"secret", "s3cr3t", "AKIA"} <= set(result._no_log_values)


def _strip_docs(option: dict) -> None:
    option.pop("description", None)
    for sub in (option.get("options") or {}).values():
        _strip_docs(sub)


def test_agent_readme_lists_the_agent_config_sections():
    text = (ROLES_DIR / "agent" / "README.md").read_text()
    missing = [s for s in _agent_sections() if f"`{s}`" not in text]
    assert not missing, f"roles/agent/README.md does not list the agent's config sections {missing}"


def test_agent_role_derives_only_known_config_keys():
    """The keys the role writes into each config (cluster, paths.state_dir and the secret-file paths)
    exist in the agent's schema."""
    known = {o.path for o in agent_config.iter_options()}
    for key in ("cluster", "paths.state_dir", "encryption.passphrase_file", "encryption.public_key_file",
                "repository.s3.credentials_file"):
        assert key in known, f"the agent's schema no longer has {key}, which roles/agent writes"
