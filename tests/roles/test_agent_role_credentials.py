"""The agent role's per-duty credentials (agent_clusters[].s3_credentials), run for real with
ansible-playbook (tags agent_configure: preflight and configure, with the agent of this checkout's venv
validating each configuration). A public-key cluster gets the writer and pruner files (0600, owner its OS
user), the public key (0644) and a configuration naming them, and no restorer credentials: a restorer entry
for it is refused before anything changes. A second run changes nothing. Signing keys (made with `pg-backup keys
create --purpose signing`): a database host gets its own signing secret key (0600, its OS user), a restore host
the trusted signing public keys (0644), never a secret; neither is printed (no_log, also with -v --diff), and a
key the inventory no longer gives the host is removed. Plain pytest:

    .venv/bin/python -m pytest tests/roles/test_agent_role_credentials.py
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from playbook_support import ANSIBLE_PLAYBOOK, ROOT, pg, playbook_env

sys.path[:0] = [str(ROOT / "agent" / "tests")]
from keys import make_keypair  # noqa: E402

pytestmark = pytest.mark.skipif(not pg.IS_ROOT, reason="files owned by the postgres user: needs root")

CREDS = {"writer": {"access_key_id": "AKWRITER", "secret_access_key": "writer-secret-value"},
         "pruner": {"access_key_id": "AKPRUNER", "secret_access_key": "pruner-secret-value"}}


@pytest.fixture(scope="module")
def keypair():
    path = Path(tempfile.mkdtemp(prefix="pgb-role-keys-"))
    yield make_keypair(str(path))
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def signing_keys():
    """Two signing keys as `pg-backup keys create --purpose signing` makes them: [(secret, public), ...]."""
    path = Path(tempfile.mkdtemp(prefix="pgb-role-signing-"))
    keys = []
    for name in ("current", "old"):
        subprocess.run([str(pg.AGENT_BIN), "--quiet", "keys", "create", "--purpose", "signing", "--name",
                        f"{name} signing key", "--expire", "1y", "--secret-out", str(path / f"{name}.sec.asc"),
                        "--public-out", str(path / f"{name}.pub.asc")], check=True, capture_output=True, timeout=120)
        keys.append(((path / f"{name}.sec.asc").read_text(), (path / f"{name}.pub.asc").read_text()))
    yield keys
    shutil.rmtree(path, ignore_errors=True)


def _secret_lines(armored):
    """Lines of an armored secret key's body: none of them may show up in Ansible's output."""
    return [ln for ln in armored.splitlines() if len(ln) > 40 and " " not in ln]


def _run(tmp_path, item, *args):
    base = tmp_path / "host"
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": sys.executable, "agent_venv_dir": str(pg.AGENT_BIN.parent.parent),
                      "agent_config_dir": str(base / "etc"), "agent_state_dir": str(base / "state"),
                      "agent_log_dir": str(base / "log"), "agent_log_owner": pg.PG_OS_USER,
                      "agent_clusters": item if isinstance(item, list) else [item]},
             "roles": ["miometry.pg_backup.agent"]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), str(tmp_path / "play.yml"), "--tags", "agent_configure", *args],
                          env=playbook_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    return proc, proc.stdout + proc.stderr, base / "etc"


def _item(keypair, **extra):
    item = {"name": "pk", "os_user": pg.PG_OS_USER,
            "config": {"repository": {"type": "s3", "s3": {"bucket": "b", "endpoint_url": "http://127.0.0.1:9"}},
                       "encryption": {"mode": "public-key"}},
            "public_key": Path(keypair.public_file).read_text(), "s3_credentials": CREDS}
    item.update(extra)
    return item


def test_writer_and_pruner_files_and_a_configuration_naming_them(tmp_path, keypair):
    proc, out, etc = _run(tmp_path, _item(keypair))
    assert proc.returncode == 0, out
    assert "writer-secret-value" not in out and "pruner-secret-value" not in out
    config = yaml.safe_load((etc / "pk.yml").read_text())
    assert config["repository"]["s3"]["credentials"] == {"writer": str(etc / "pk.s3-writer"),
                                                         "pruner": str(etc / "pk.s3-pruner")}
    assert "credentials_file" not in config["repository"]["s3"] and "private_key_files" not in config["encryption"]
    for duty, creds in CREDS.items():
        path = etc / f"pk.s3-{duty}"
        assert path.stat().st_mode & 0o777 == 0o600 and path.owner() == pg.PG_OS_USER
        text = path.read_text()
        assert "[default]\n" in text and f"aws_access_key_id = {creds['access_key_id']}\n" in text, text
        assert f"aws_secret_access_key = {creds['secret_access_key']}\n" in text
    assert not (etc / "pk.s3-restorer").exists()
    assert (etc / "pk.pub.asc").stat().st_mode & 0o777 == 0o644
    assert "signing" not in config and not list(etc.glob("pk.sign*"))  # no signing key given: none written
    again, out, _err = _run(tmp_path, _item(keypair))
    assert again.returncode == 0 and "changed=0" in out, out


def test_restorer_credentials_are_refused_on_a_public_key_host(tmp_path, keypair):
    item = _item(keypair, s3_credentials=dict(CREDS, restorer=CREDS["writer"]))
    proc, out, etc = _run(tmp_path, item)
    assert proc.returncode != 0 and "restorer only for a passphrase-mode cluster" in out, out
    assert "writer-secret-value" not in out
    assert not (etc / "pk.yml").exists()


def test_signing_keys_each_where_it_belongs_and_removed_when_no_longer_given(tmp_path, keypair, signing_keys):
    """A database host gets its own signing secret key and the restore hosts' records-only public keys; when it
    becomes a restore host the secret goes and the trusted signing public keys and its own key for its records
    come; an old key dropped after a rotation goes too. Never printed."""
    (secret, current), (record_secret, record_public) = signing_keys
    old = record_public
    db_host = dict(signing_secret_key=secret, signing_record_public_keys=[record_public])
    proc, out, etc = _run(tmp_path, _item(keypair, **db_host), "-v", "--diff")
    assert proc.returncode == 0, out
    assert not any(line in out for line in _secret_lines(secret)), "the signing secret key was printed"
    path = etc / "pk.signing.asc"
    assert path.read_text() == secret.strip() + "\n"
    assert path.stat().st_mode & 0o777 == 0o600 and path.owner() == pg.PG_OS_USER
    config = yaml.safe_load((etc / "pk.yml").read_text())
    assert config["signing"]["secret_key_file"] == str(path)
    assert not config["signing"].get("trusted_public_key_files")
    assert "PRIVATE KEY" not in (etc / "pk.yml").read_text() and not list(etc.glob("pk.signer-*"))
    record_signer = etc / "pk.record-signer-0.pub.asc"
    assert record_signer.read_text() == record_public.strip() + "\n" and record_signer.stat().st_mode & 0o777 == 0o644
    assert config["signing"]["record_trusted_public_key_files"] == [str(record_signer)]
    again, out, _err = _run(tmp_path, _item(keypair, **db_host))
    assert again.returncode == 0 and "changed=0" in out, out

    # The host becomes a restore host: its secret goes, the trusted public keys (current and old) and its own key
    # for the records it writes come; the records-only public key it no longer lists goes
    proc, out, _etc = _run(tmp_path, _item(keypair, signing_trusted_public_keys=[current, old],
                                           signing_record_secret_key=record_secret), "-v", "--diff")
    assert proc.returncode == 0, out
    assert not any(line in out for line in _secret_lines(record_secret)), "the record signing key was printed"
    assert not path.exists() and not record_signer.exists()
    record_key = etc / "pk.record-signing.asc"
    assert record_key.read_text() == record_secret.strip() + "\n"
    assert record_key.stat().st_mode & 0o777 == 0o600 and record_key.owner() == pg.PG_OS_USER
    files = [etc / "pk.signer-0.pub.asc", etc / "pk.signer-1.pub.asc"]
    assert [f.read_text() for f in files] == [current.strip() + "\n", old.strip() + "\n"]
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o644 and f.owner() == pg.PG_OS_USER
    found = [f.name for f in etc.iterdir() if "PRIVATE KEY" in f.read_text(errors="replace")]
    assert found == ["pk.record-signing.asc"], found
    config = yaml.safe_load((etc / "pk.yml").read_text())
    assert config["signing"]["trusted_public_key_files"] == [str(f) for f in files]
    assert config["signing"]["record_secret_key_file"] == str(record_key)
    assert not config["signing"].get("secret_key_file") and not config["signing"].get("record_trusted_public_key_files")

    # The old key is dropped after its backups expired: its file goes with it, the agent accepts the rest
    proc, out, _etc = _run(tmp_path, _item(keypair, signing_trusted_public_keys=[current],
                                           signing_record_secret_key=record_secret))
    assert proc.returncode == 0, out
    assert files[0].exists() and not files[1].exists() and record_key.exists()
    report = subprocess.run([str(pg.AGENT_BIN), "--config", str(etc / "pk.yml"), "--json", "config", "validate"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert report.returncode == 0, report.stdout + report.stderr
    assert json.loads(report.stdout)["ok"] is True


def test_a_cluster_dropped_from_the_list_loses_its_files_and_nothing_else(tmp_path, keypair, signing_keys):
    """Two clusters, then one: the dropped cluster's configuration, credentials and keys go (not with the
    opt-out), its state directory stays, and files the role did not write are never touched."""
    (secret, _current), _old = signing_keys
    dropped = _item(keypair, name="old", signing_secret_key=secret, signing_record_public_keys=[_current])
    proc, out, etc = _run(tmp_path, [_item(keypair), dropped])
    assert proc.returncode == 0, out
    written = sorted(p.name for p in etc.glob("old.*"))
    assert written == ["old.pub.asc", "old.record-signer-0.pub.asc", "old.s3-pruner", "old.s3-writer",
                       "old.signing.asc", "old.yml"], written
    foreign = {"old.notes": "an operator's notes\n", "other.yml": "cluster: other\n", "old.yml.bak": "x\n",
               "pk.s3-restorer": "kept: the name of a listed cluster\n"}
    for name, text in foreign.items():
        (etc / name).write_text(text)
    kept, out, _etc = _run(tmp_path, [_item(keypair)], "-e", "agent_remove_unlisted_clusters=false")
    assert kept.returncode == 0 and (etc / "old.yml").exists() and (etc / "old.signing.asc").exists(), out

    proc, out, _etc = _run(tmp_path, [_item(keypair)], "-v", "--diff")
    assert proc.returncode == 0, out
    assert sorted(p.name for p in etc.glob("old.*")) == ["old.notes", "old.yml.bak"]
    assert not any(line in out for line in _secret_lines(secret)), "the signing secret key was printed"
    for name, text in foreign.items():
        assert (etc / name).read_text() == text, name
    assert {"pk.yml", "pk.pub.asc", "pk.s3-writer", "pk.s3-pruner"} <= {p.name for p in etc.iterdir()}
    assert (tmp_path / "host" / "state" / "old").is_dir()          # may hold WAL not yet stored
    again, out, _etc = _run(tmp_path, [_item(keypair)])
    assert again.returncode == 0 and "changed=0" in out, out
