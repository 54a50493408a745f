"""execution-environment.yml (ansible-builder v3) for AWX / Ansible Automation Platform.

ansible-builder's own ``create`` step (it validates the file against its schema and writes the build
context; no container engine needed) runs on it, and on a broken copy, which it must refuse. Every pin
is checked against the files the tests use: the collection's version (galaxy.yml), its dependencies
(within galaxy.yml's ranges, and the versions requirements/collections.txt installs), ansible-core
(requirements/ansible.txt) and the Python packages (requirements/agent.txt).

ansible-builder lives in a venv of its own, build/ee-venv, made on first use from the pins in
requirements/execution-environment-test.txt (PyPI). Plain pytest:

    .venv/bin/python -m pytest tests/roles/test_execution_environment.py
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]
EE = ROOT / "execution-environment.yml"
PINS = ROOT / "requirements" / "execution-environment-test.txt"
VENV = ROOT / "build" / "ee-venv"
BASE_PYTHON = "/usr/bin/python3"


def _pins(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


@pytest.fixture(scope="module")
def ansible_builder() -> Path:
    exe = VENV / "bin" / "ansible-builder"
    stamp = VENV / ".installed-from"
    if not exe.exists() or not stamp.exists() or stamp.read_text() != PINS.read_text():
        subprocess.run([BASE_PYTHON, "-m", "venv", "--clear", str(VENV)], check=True, timeout=300)
        proc = subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                               "--no-input", "-r", str(PINS)], capture_output=True, text=True, check=False, timeout=600)
        assert proc.returncode == 0, f"cannot install ansible-builder from {PINS}:\n{proc.stdout}{proc.stderr}"
        stamp.write_text(PINS.read_text())
    return exe


def _ee() -> dict:
    return yaml.safe_load(EE.read_text())


def test_ansible_builder_create_accepts_the_file_and_writes_the_pins(ansible_builder, tmp_path):
    proc = subprocess.run([str(ansible_builder), "create", "-f", str(EE), "-c", str(tmp_path / "ctx")],
                          capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    build = tmp_path / "ctx" / "_build"
    collections = yaml.safe_load((build / "requirements.yml").read_text())["collections"]
    assert [c["name"] for c in collections] == ["miometry.pg_backup", "community.postgresql", "amazon.aws"]
    assert (build / "requirements.txt").read_text().split() == _ee()["dependencies"]["python"]
    dockerfile = (tmp_path / "ctx" / "Dockerfile").read_text()
    core, runner = _ee()["dependencies"]["ansible_core"], _ee()["dependencies"]["ansible_runner"]
    assert f'ARG ANSIBLE_INSTALL_REFS="{core["package_pip"]} {runner["package_pip"]}"' in dockerfile
    assert f'ARG EE_BASE_IMAGE="{_ee()["images"]["base_image"]["name"]}"' in dockerfile


def test_ansible_builder_refuses_a_broken_file(ansible_builder, tmp_path):
    broken = _ee()
    broken["dependencies"]["galaxy"] = {"collections": "not a list"}
    broken["images"]["base_image"] = {"nme": "typo"}
    path = tmp_path / "execution-environment.yml"
    path.write_text(yaml.safe_dump(broken))
    proc = subprocess.run([str(ansible_builder), "create", "-f", str(path), "-c", str(tmp_path / "ctx")],
                          capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode != 0, proc.stdout
    assert "nme" in proc.stdout + proc.stderr or "base_image" in proc.stdout + proc.stderr


def test_every_pin_matches_what_the_tests_use():
    ee = _ee()
    assert ee["version"] == 3
    deps = ee["dependencies"]
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text())
    pinned = {c["name"]: c["version"] for c in deps["galaxy"]["collections"]}
    own = f"{galaxy['namespace']}.{galaxy['name']}"
    assert pinned.pop(own) == galaxy["version"], "the EE must pin the collection's own version"
    assert set(pinned) == set(galaxy["dependencies"]), "the EE must pin exactly galaxy.yml's dependencies"
    for name, version in pinned.items():
        assert version in SpecifierSet(galaxy["dependencies"][name]), f"{name} {version} outside galaxy.yml's range"
    installed = ROOT / ".venv" / "collections" / "ansible_collections"
    for name, version in pinned.items():   # the versions the tests run (scripts/install-collections.sh)
        manifest = installed / name.replace(".", "/") / "MANIFEST.json"
        if manifest.exists():
            assert json.loads(manifest.read_text())["collection_info"]["version"] == version, name
        else:
            assert f"{name} {version}" in (ROOT / "requirements" / "collections.txt").read_text(), name
    core = _pins(ROOT / "requirements" / "ansible.txt")["ansible-core"]
    assert deps["ansible_core"]["package_pip"] == f"ansible-core=={core}"
    agent = _pins(ROOT / "requirements" / "agent.txt")
    for requirement in deps["python"]:
        name, version = requirement.split("==")
        if name.lower() in agent:
            assert agent[name.lower()] == version, f"{name}: {version} here, {agent[name.lower()]} in agent.txt"
    assert {"boto3", "botocore"} <= {r.split("==")[0] for r in deps["python"]}, "amazon.aws needs boto3/botocore"
