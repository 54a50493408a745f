"""What the agent writes is read by two independent OpenPGP implementations, in the one format
every implementation reads: SEIPD version 1 (with the MDC), AES-256, no AEAD, no compression.

The second implementation is Sequoia's ``sq`` (Debian package ``sq``), which shares no code with
GnuPG. Each object is decrypted by both, the plaintext decompressed with stock ``zstd`` and compared
(the WAL segment byte for byte with what PostgreSQL wrote; the dump read by ``pg_restore --list``),
and the packet structure is read from ``sq decrypt --dump`` and gpg's ``DECRYPTION_INFO`` status.
A key that advertises AEAD (which makes GnuPG 2.3+ write OCB) still gets SEIPD v1.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from keys import KeyPair, make_aead_keypair, make_keypair, run_in_terminal
from pgb_wal_support import segment_copy, switch_segments

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def sq_installed() -> None:
    """sq is a test dependency (scripts/install-deps.sh): missing, these tests fail in CI and skip elsewhere."""
    if shutil.which("sq") is None:
        message = "sq (Sequoia) is not installed: scripts/install-deps.sh installs it"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def sq_decrypt(path: str, out: str, *, key: Optional[str] = None, password: Optional[str] = None) -> str:
    """``sq decrypt --dump``: the plaintext into ``out``; returns sq's packet dump. sq reads a
    password only from a terminal, so a password is typed into a pseudo-terminal."""
    argv = ["sq", "decrypt", "--dump", "-o", out] + (["--recipient-key", key] if key else []) + [path]
    if password is None:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr
    rc, text, _ = run_in_terminal(argv, b"password", password)
    assert rc == 0, text
    return text


def gpg_decrypt(path: str, out: str, *, secret_key: Optional[str] = None, passphrase_file: Optional[str] = None
                ) -> List[str]:
    """Stock gpg in a fresh home: the plaintext into ``out``; returns the DECRYPTION_INFO fields."""
    home = tempfile.mkdtemp(prefix="pgb-interop-")
    try:
        base = ["gpg", "--homedir", home, "--batch", "--no-tty", "--pinentry-mode", "loopback"]
        if secret_key:
            subprocess.run(base + ["--import", secret_key], check=True, capture_output=True)
        secret = ["--passphrase-file", passphrase_file] if passphrase_file else []
        proc = subprocess.run(base + secret + ["--status-fd", "1", "--output", out, "--decrypt", path],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        info = [ln.split()[2:] for ln in proc.stdout.splitlines() if ln.startswith("[GNUPG:] DECRYPTION_INFO")]
        assert "[GNUPG:] DECRYPTION_OKAY" in proc.stdout and len(info) == 1, proc.stdout
        return info[0]
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def assert_seipd_v1_aes256(dump: str, info: List[str]) -> None:
    """sq's dump and gpg's DECRYPTION_INFO <mdc_method> <cipher> [<aead>] both say SEIPD v1 + MDC, AES-256."""
    assert "Sym. Encrypted and Integrity Protected Data Packet" in dump, dump
    seipd = dump.split("Sym. Encrypted and Integrity Protected Data Packet", 1)[1]
    assert seipd.split("\n")[1].strip(" │") == "Version: 1", dump
    assert "Encrypted using AES-256" in dump, dump
    assert "Modification Detection Code Packet" in dump, dump
    # whole words: a digest's hex may contain "AEAD" (…CAEAD7…)
    assert not re.search(r"\b(AEAD|OCB)\b", dump) and "Compressed Data Packet" not in dump, dump
    assert info[:2] == ["2", "9"] and info[2:] in ([], ["0"]), info   # MDC (SHA-1), AES-256, no AEAD


def zstd_decompress(path: str) -> bytes:
    return subprocess.run(["zstd", "-d", "-c", path], check=True, capture_output=True).stdout


def _written(workdir, database: str) -> Tuple[str, str]:
    """The (dump of ``database``, WAL segment) objects the agent stored in the local repository."""
    stored = glob.glob(f"{workdir}/repo/**/*.gpg", recursive=True)
    dumps = [p for p in stored if "/backups/" in p and database in os.path.basename(p)]
    wal = [p for p in stored if "/wal/" in p and os.path.basename(p).startswith("0000")]
    assert len(dumps) == 1 and len(wal) == 1, sorted(stored)
    return dumps[0], wal[0]


def _backup_and_push(cluster, workdir, write_config, run_agent, name: str, encryption: dict) -> Tuple[str, bytes]:
    cluster.psql(f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}")
    cluster.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", dbname=name)
    cfg = write_config(workdir, name, cluster=cluster, encryption=encryption, backup={"globals": False})
    run_agent(cfg, "backup", "--tier", "daily", "--database", name)
    segment = switch_segments(cluster, 1)[0]
    copy = segment_copy(cluster, segment, Path(workdir) / "seg")
    assert run_agent(cfg, "wal-push", str(copy)).data["outcome"] == "stored"
    return cfg, copy.read_bytes()


def _chown_postgres(*paths: str) -> None:
    subprocess.run(["chown", "postgres", *paths], check=False)


def _read_both_ways(workdir, database: str, segment: bytes, *, key: Optional[KeyPair] = None, password_file: Optional[str] = None,
                    password: Optional[str] = None) -> None:
    for obj in _written(workdir, database):
        by_sq, by_gpg = f"{obj}.sq", f"{obj}.gpg-out"
        dump = sq_decrypt(obj, by_sq, key=key.secret_file if key else None, password=password)
        info = gpg_decrypt(obj, by_gpg, secret_key=key.secret_file if key else None, passphrase_file=password_file)
        assert_seipd_v1_aes256(dump, info)
        plain = zstd_decompress(by_sq)
        assert plain == zstd_decompress(by_gpg)
        if "/wal/" in obj:
            assert plain == segment, "the WAL segment read back differs from what PostgreSQL wrote"
        else:
            listing = subprocess.run(["pg_restore", "--list"], input=plain, capture_output=True, check=False)
            if listing.returncode == 0:
                assert b"TABLE DATA public t" in listing.stdout
            else:  # pg_restore of another major than the dump: at least the custom-format header
                assert plain.startswith(b"PGDMP")


@pytest.fixture
def wal_cluster(make_cluster):
    return make_cluster("15", archive_mode="on", archive_command="/bin/true", wal_level="replica")


def test_public_key_mode_backup_and_wal_read_by_sq_and_gpg(wal_cluster, workdir, write_config, run_agent):
    pair = make_keypair(workdir, "interop")
    _chown_postgres(pair.public_file)
    _, segment = _backup_and_push(wal_cluster, workdir, write_config, run_agent, "interop",
                                  {"mode": "public-key", "public_key_file": pair.public_file})
    _read_both_ways(workdir, "interop", segment, key=pair)


def test_passphrase_mode_backup_and_wal_read_by_sq_and_gpg(wal_cluster, workdir, write_config, run_agent):
    _, segment = _backup_and_push(wal_cluster, workdir, write_config, run_agent, "interop_pw", {})
    password_file = str(Path(workdir) / "passphrase")
    password = Path(password_file).read_text().strip()
    _read_both_ways(workdir, "interop_pw", segment, password_file=password_file, password=password)


def test_a_key_that_advertises_aead_still_gets_seipd_v1(wal_cluster, workdir, write_config, run_agent):
    pair = make_aead_keypair(str(workdir))
    _chown_postgres(pair.public_file)
    cfg, segment = _backup_and_push(wal_cluster, workdir, write_config, run_agent, "interop_aead",
                                    {"mode": "public-key", "public_key_file": pair.public_file})
    listed = run_agent(cfg, "keys", "list", pair.public_file)
    key = listed.data["files"][0]["keys"][0]
    assert key["advertises_aead"] is True and key["fingerprint"] == pair.fingerprint
    validate = run_agent(cfg, "config", "validate")
    assert any("advertises AEAD" in w for w in validate.data["warnings"]), validate.stdout
    _read_both_ways(workdir, "interop_aead", segment, key=pair)
