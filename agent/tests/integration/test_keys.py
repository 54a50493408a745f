"""``pg-backup keys`` and key expiry, with real gpg keys: a new user's path from nothing to a
public-key-mode backup restored on another host, and keys that never expire silently.

"Another host" is another configuration (and working directory) that holds only what a restore host
holds: the secret key and its passphrase file, no public key; the database host holds only the public key.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import AGENT_BIN, CLEAN_PATH, make_pg_dir, write_pg_file
from keys import make_keypair, run_in_terminal

pytestmark = pytest.mark.integration

PASSPHRASE = "a long enough passphrase for tests"


def _agent(*args: str, env=None, pass_fds=(), cwd=None) -> subprocess.CompletedProcess:
    """The CLI as root (where an operator makes keys), without a configuration."""
    return subprocess.run([str(AGENT_BIN), "--json", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "TZ": "UTC", **(env or {})},
                          pass_fds=pass_fds, stdin=subprocess.DEVNULL, timeout=300)


def _doc(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout)


def _passphrase_file(directory, name: str = "pass", mode: int = 0o600) -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as fh:
        fh.write(PASSPHRASE + "\n")
    os.chmod(path, mode)
    return path


def _create(directory, name: str = "ops", *extra: str, pass_file=None) -> subprocess.CompletedProcess:
    pass_file = pass_file or _passphrase_file(directory)
    return _agent("keys", "create", "--name", "ACME restore operators", "--email", "dba@example.invalid",
                  "--secret-out", os.path.join(directory, f"{name}.sec.asc"),
                  "--public-out", os.path.join(directory, f"{name}.pub.asc"), "--passphrase-file", pass_file, *extra)


def _give_to_postgres(*paths) -> None:
    subprocess.run(["chown", "postgres", *map(str, paths)], check=True)


# -- keys create / export ------------------------------------------------------------------------

def test_create_makes_a_protected_pair_that_never_advertises_aead(tmp_path):
    proc = _create(tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = _doc(proc)
    key = doc["key"]
    sec, pub = Path(doc["secret_key_file"]), Path(doc["public_key_file"])
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600 and stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert key["algorithm"] == "ed25519/cv25519" and key["can_encrypt"] and not key["advertises_aead"]
    expires = dt.datetime.strptime(key["expires"], "%Y-%m-%dT%H:%M:%SZ")
    assert 725 <= (expires - dt.datetime.utcnow()).days <= 731, key["expires"]   # default 2y
    listed = _doc(_agent("keys", "list", str(sec), str(pub)))
    secret, public = (f["keys"][0] for f in listed["files"])
    assert secret["secret"] and secret["protected"] and secret["fingerprint"] == key["fingerprint"]
    assert not public["secret"] and public["fingerprint"] == key["fingerprint"]
    assert listed["problems"] == []
    packets = subprocess.run(["gpg", "--list-packets", str(pub)], capture_output=True, text=True).stdout
    assert "features: 01" in packets and "pref-aead" not in packets and "pref-sym-algos: 9 8 7" in packets
    # The passphrase protects it: gpg cannot use it with another one.
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--import", str(sec)], check=True, capture_output=True)
    wrong = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase",
                            "wrong passphrase!", "--armor", "--export-secret-keys", key["fingerprint"]],
                           capture_output=True)
    assert wrong.returncode != 0
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def test_create_reads_the_passphrase_from_a_descriptor_or_the_environment(tmp_path):
    read_end, write_end = os.pipe()
    os.write(write_end, PASSPHRASE.encode() + b"\n")
    os.close(write_end)
    by_fd = _agent("keys", "create", "--name", "fd", "--expire", "90d", "--algorithm", "rsa4096",
                   "--secret-out", str(tmp_path / "fd.sec"), "--public-out", str(tmp_path / "fd.pub"),
                   "--passphrase-fd", str(read_end), pass_fds=(read_end,))
    os.close(read_end)
    assert by_fd.returncode == 0, by_fd.stderr
    assert _doc(by_fd)["key"]["algorithm"] == "rsa4096"
    by_env = _agent("keys", "create", "--name", "env", "--expire", "never", "--secret-out", str(tmp_path / "env.sec"),
                    "--public-out", str(tmp_path / "env.pub"), "--passphrase-env", "OPS_PASS",
                    env={"OPS_PASS": PASSPHRASE})
    assert by_env.returncode == 0, by_env.stderr
    assert _doc(by_env)["key"]["expires"] is None
    # Never on a command line: there is no option for it.
    assert "--passphrase " not in subprocess.run([str(AGENT_BIN), "keys", "create", "--help"], capture_output=True,
                                                 text=True).stdout


def test_create_asks_twice_on_a_terminal(tmp_path):
    """No passphrase option on a terminal: asked twice (not echoed), as an operator would type it."""
    argv = [str(AGENT_BIN), "keys", "create", "--name", "tty", "--secret-out", str(tmp_path / "tty.sec"),
            "--public-out", str(tmp_path / "tty.pub")]
    rc, output, answered = run_in_terminal(argv, b"passphrase for the secret key: ", PASSPHRASE,
                                           env={"PATH": CLEAN_PATH, "LANG": "C.UTF-8"})
    assert rc == 0, output
    assert answered == 2 and "Repeat the passphrase" in output
    assert PASSPHRASE not in output   # never echoed
    assert stat.S_IMODE((tmp_path / "tty.sec").stat().st_mode) == 0o600


@pytest.mark.parametrize("case, extra, expected_rc, message", [
    ("no passphrase source", ["--no-source"], 2, "no passphrase given"),
    ("bad expiry", ["--expire", "soon"], 2, "--expire 'soon'"),
    ("short passphrase", ["--short"], 2, "use at least 12"),
    ("passphrase file readable by others", ["--loose"], 2, "make it 0600"),
    ("output exists", ["--exists"], 9, "refusing to overwrite"),
])
def test_create_refuses_bad_input_with_one_line(tmp_path, case, extra, expected_rc, message):
    secret, public = tmp_path / "k.sec", tmp_path / "k.pub"
    args = ["keys", "create", "--name", "x", "--secret-out", str(secret), "--public-out", str(public)]
    if extra == ["--no-source"]:
        pass
    elif extra == ["--short"]:
        short = tmp_path / "short"
        short.write_text("tooshort\n")
        short.chmod(0o600)
        args += ["--passphrase-file", str(short)]
    elif extra == ["--loose"]:
        args += ["--passphrase-file", _passphrase_file(tmp_path, mode=0o644)]
    elif extra == ["--exists"]:
        public.write_text("keep me")
        args += ["--passphrase-file", _passphrase_file(tmp_path)]
    else:
        args += ["--passphrase-file", _passphrase_file(tmp_path)] + extra
    proc = _agent(*args)
    assert proc.returncode == expected_rc, (case, proc.stdout, proc.stderr)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("pg-backup: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert not secret.exists()
    if extra == ["--exists"]:
        assert public.read_text() == "keep me"


def test_export_prints_the_public_key_of_a_secret_key(tmp_path):
    doc = _doc(_create(tmp_path))
    out = tmp_path / "exported.asc"
    exported = _agent("keys", "export", doc["secret_key_file"], "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    keys = _doc(exported)["keys"]
    assert len(keys) == 1 and keys[0]["fingerprint"] == doc["key"]["fingerprint"] and not keys[0]["secret"]
    plain = subprocess.run([str(AGENT_BIN), "keys", "export", doc["secret_key_file"]], capture_output=True, text=True)
    assert plain.returncode == 0 and plain.stdout.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert "PRIVATE" not in plain.stdout
    assert _agent("keys", "export", doc["secret_key_file"], "--out", str(out)).returncode == 9
    not_a_key = tmp_path / "not-a-key"
    not_a_key.write_text("hello\n")
    bad = _agent("keys", "export", str(not_a_key))
    assert bad.returncode == 8 and "holds no readable OpenPGP key" in bad.stderr


def test_extend_moves_the_expiry_and_keeps_the_fingerprint(tmp_path):
    doc = _doc(_create(tmp_path, "short", "--expire", "10d"))
    extended = _agent("keys", "extend", doc["secret_key_file"], "--expire", "3y", "--public-out",
                      str(tmp_path / "renewed.pub.asc"), "--secret-out", str(tmp_path / "renewed.sec.asc"),
                      "--passphrase-file", _passphrase_file(tmp_path, "p2"))
    assert extended.returncode == 0, extended.stderr
    key = _doc(extended)["key"]
    assert key["fingerprint"] == doc["key"]["fingerprint"]
    assert key["expires"] > "%d" % (dt.date.today().year + 2)
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase at all\n")
    wrong.chmod(0o600)
    bad = _agent("keys", "extend", doc["secret_key_file"], "--expire", "3y", "--public-out", str(tmp_path / "x.pub"),
                 "--passphrase-file", str(wrong))
    assert bad.returncode == 8 and "passphrase" in bad.stderr, bad.stderr
    assert not (tmp_path / "x.pub").exists()


# -- what a host holds: keys check, config validate, health --------------------------------------

def _host(workdir, write_config, cluster, pair, **encryption) -> str:
    _give_to_postgres(pair.public_file)
    return write_config(workdir, "keyhost", cluster=cluster,
                        encryption={"mode": "public-key", "public_key_file": pair.public_file, **encryption})


def test_check_reports_modes_owner_and_expiry(pg15, workdir, write_config, run_agent):
    pair = make_keypair(workdir, "ops", expire="1y")
    cfg = _host(workdir, write_config, pg15, pair)
    good = run_agent(cfg, "keys", "check")
    held = good.data["files"][0]
    assert held["setting"] == "encryption.public_key_file" and held["owner"] == "postgres"
    assert held["keys"][0]["fingerprint"] == pair.fingerprint and good.data["problems"] == []

    # 20 days before the key expires: a warning, still exit 0.
    soon = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=345)).strftime("%Y-%m-%dT%H:%M:%SZ")
    warned = run_agent(cfg, "keys", "check", env={"PG_BACKUP_TEST_NOW": soon})
    assert any("expires on" in w and pair.fingerprint in w for w in warned.data["warnings"]), warned.stdout

    # A public key file others may write: someone could substitute their own key.
    os.chmod(pair.public_file, 0o666)
    loose = run_agent(cfg, "keys", "check", check=False)
    assert loose.rc == 8 and "writable by others" in loose.stderr and pair.public_file in loose.stderr
    os.chmod(pair.public_file, 0o644)

    # A secret key readable by others, on a restore host.
    _give_to_postgres(pair.secret_file)
    os.chmod(pair.secret_file, 0o640)
    restore_cfg = write_config(workdir, "keyhost", cluster=pg15, config_name="restore.yml",
                               encryption={"mode": "public-key", "private_key_files": [pair.secret_file]})
    exposed = run_agent(restore_cfg, "keys", "check", check=False)
    assert exposed.rc == 8 and "must be 0600" in exposed.stderr, exposed.stderr

    # A secret file the user running pg-backup does not own (and so cannot read).
    os.chmod(pair.secret_file, 0o600)
    subprocess.run(["chown", "root", pair.secret_file], check=True)
    foreign = run_agent(restore_cfg, "keys", "check", check=False)
    assert foreign.rc == 8 and "belongs to root, not to postgres" in foreign.stderr, foreign.stderr


def test_an_expired_key_is_reported_before_it_stops_backups(pg15, workdir, write_config, run_agent):
    pg15.psql("DROP DATABASE IF EXISTS expiring; CREATE DATABASE expiring")
    expired = make_keypair(workdir, "expired", expire="1y", created="20200101T000000")
    cfg = _host(workdir, write_config, pg15, expired)

    validate = run_agent(cfg, "config", "validate", check=False)
    assert validate.rc == 2, validate.describe()
    problems = validate.data["error"]["problems"]
    assert any("EXPIRED on 2020-12-31" in p and expired.fingerprint in p for p in problems), problems
    assert run_agent(cfg, "keys", "check", check=False).rc == 8
    listed = _agent("keys", "list", expired.public_file)   # a file given by name: list shows, check judges
    assert listed.returncode == 0 and _doc(listed)["files"][0]["keys"][0]["expires"] == "2020-12-31T00:00:00Z"
    assert _agent("keys", "check", expired.public_file).returncode == 8

    health = run_agent(cfg, "health", check=False).data
    check = [c for c in health["checks"] if c["name"] == "key_expiry_encryption"][0]
    assert check["status"] == "critical" and "EXPIRED" in check["message"] and check["value"] < 0
    metrics = run_agent(cfg, "health", "--format", "prometheus", json=False, check=False).stdout
    sample = [ln for ln in metrics.splitlines() if ln.startswith("pg_backup_key_expiry_seconds{")]
    assert len(sample) == 1 and f'fingerprint="{expired.fingerprint}"' in sample[0] and 'key="encryption"' in sample[0]
    assert float(sample[0].rsplit(" ", 1)[1]) < -86400 * 365

    # And it does stop backups, with the key named.
    backup = run_agent(cfg, "backup", "--tier", "daily", "--database", "expiring", check=False)
    assert backup.rc == 8, backup.describe()
    assert f"public key {expired.fingerprint}" in backup.stderr and "expired on 2020-12-31" in backup.stderr


def test_a_key_about_to_expire_warns_in_health_and_validate(pg15, workdir, write_config, run_agent):
    pair = make_keypair(workdir, "ops", expire="20d")
    cfg = _host(workdir, write_config, pg15, pair)
    validate = run_agent(cfg, "config", "validate")
    assert validate.data["valid"] and any("expires on" in w for w in validate.data["warnings"])
    health = run_agent(cfg, "health", check=False).data
    check = [c for c in health["checks"] if c["name"] == "key_expiry_encryption"][0]
    assert check["status"] == "warning" and 18 * 86400 < check["value"] <= 20 * 86400
    later = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    calm = run_agent(cfg, "health", check=False, env={"PG_BACKUP_TEST_NOW": later}).data
    assert [c for c in calm["checks"] if c["name"] == "key_expiry_encryption"][0]["status"] == "ok"


# -- from nothing to a restore on another host ---------------------------------------------------

def test_first_backup_with_keys_made_by_keys_create_restored_on_another_host(pg15, s3_server, workdir, write_config,
                                                                              run_agent):
    # The operator's workstation: the key pair.
    station = make_pg_dir(Path(workdir) / "workstation", 0o700)
    doc = _doc(_create(station, "ops"))
    fingerprint = doc["key"]["fingerprint"]

    # The database host: only the public key.
    db_host = make_pg_dir(Path(workdir) / "db-host", 0o700)
    public = write_pg_file(db_host / "backup-key.pub.asc", Path(doc["public_key_file"]).read_bytes(), 0o644)
    pg15.psql("DROP DATABASE IF EXISTS keyed; CREATE DATABASE keyed")
    pg15.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g", dbname="keyed")
    writer = write_config(db_host, "keyed", cluster=pg15, s3=s3_server,
                          encryption={"mode": "public-key", "public_key_file": str(public)})
    assert run_agent(writer, "keys", "check").data["problems"] == []
    backup_id = run_agent(writer, "backup", "--tier", "daily", "--database", "keyed").data["backup_id"]
    assert run_agent(writer, "list").data["backups"][0]["key_fingerprint"] == fingerprint
    assert run_agent(writer, "restore", backup_id, "--database", "keyed", "--target-database", "keyed_x",
                     check=False).rc == 8   # the database host cannot read its own backups

    # The restore host: the secret key and its passphrase, from the workstation (or Vault).
    restore_host = make_pg_dir(Path(workdir) / "restore-host", 0o700)
    secret = write_pg_file(restore_host / "ops.sec.asc", Path(doc["secret_key_file"]).read_bytes(), 0o600)
    passphrase = write_pg_file(restore_host / "ops.pass", PASSPHRASE + "\n", 0o600)
    reader = write_config(restore_host, "keyed", cluster=pg15, s3=s3_server,
                          encryption={"mode": "public-key", "private_key_files": [str(secret)],
                                      "private_key_passphrase_file": str(passphrase)})
    assert run_agent(reader, "keys", "check").data["problems"] == []
    run_agent(reader, "verify", backup_id, "--deep")
    pg15.psql("DROP DATABASE IF EXISTS keyed_copy")
    run_agent(reader, "restore", backup_id, "--database", "keyed", "--target-database", "keyed_copy")
    assert pg15.psql("SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM t", dbname="keyed_copy") == \
        pg15.psql("SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM t", dbname="keyed")
    pg15.psql("DROP DATABASE keyed_copy")
