"""Making keys: the restore operators' encryption key pair (:func:`create_keypair`: ed25519 + cv25519,
or RSA-4096; the secret half 0600 and protected by a passphrase; preferences pinned to what every
implementation reads, AES-256 and no AEAD, so GnuPG 2.3+ never writes OCB to it), the armored public
key of a secret key (:func:`export_public`), and a new expiry (:func:`extend_expiry`). Passphrases
reach gpg through an inherited pipe (:meth:`~pg_backup.crypto.GpgHome.run`); key files are never
overwritten (exit 9).

A ``signing`` purpose (a sign-only key without passphrase, kept 0600 by the cluster's OS user on its
database host) joins :data:`PURPOSES` with the cluster signing keys.
"""
from __future__ import annotations

import os
import re
from typing import Any, Optional

from ..crypto import GpgHome
from ..errors import EncryptionKeyError, RefusedError, UsageError
from .openpgp import KeyInfo, parse_colons, read_key_file

#: Preferences of keys made here: what every OpenPGP implementation reads. No AEAD algorithm, so
#: the AEAD feature flag stays off and GnuPG 2.3+ writes SEIPD v1 (not OCB) to the key.
PREFERENCES = "AES256 AES192 AES SHA512 SHA384 SHA256 SHA224 ZLIB BZIP2 ZIP Uncompressed"
#: --algorithm: (primary key, encryption subkey) as gpg's --quick-gen-key / --quick-add-key name them.
ALGORITHMS = {"ed25519": ("ed25519", "cv25519"), "rsa4096": ("rsa4096", "rsa4096")}
#: --purpose: what the key is for. "encryption": the restore operators' pair (secret kept off the
#: database hosts, protected by a passphrase). A "signing" purpose joins here with the signing keys.
PURPOSES = ("encryption", "signing")
_EXPIRE_RE = re.compile(r"^(never|0|[1-9][0-9]*[dwmy]?|[0-9]{4}-[0-9]{2}-[0-9]{2})$")
MIN_PASSPHRASE = 12


def check_expire(expire: str) -> str:
    if not _EXPIRE_RE.match(expire):
        raise UsageError(f"--expire {expire!r}: expected a duration like 2y, 18m, 90d, a date like 2030-12-31, "
                         f"or never")
    return expire


def _exclusive(path: str, mode: int) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise RefusedError(f"{path} already exists; refusing to overwrite a key file",
                           hint="choose another path or move the old file away first") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from None


def write_new(path: str, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` (never over an existing file) holding ``data``."""
    fd = _exclusive(path, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def create_keypair(*, name: str, email: Optional[str], expire: str, algorithm: str, passphrase: str,
                   secret_out: str, public_out: str, gpg_binary: str = "gpg") -> KeyInfo:
    """The restore operators' encryption key pair: ``secret_out`` (0600, armored, passphrase-protected)
    and ``public_out`` (armored, for the inventory). Neither file may exist yet."""
    check_expire(expire)
    if algorithm not in ALGORITHMS:
        raise UsageError(f"--algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    if len(passphrase) < MIN_PASSPHRASE:
        raise UsageError(f"the passphrase has {len(passphrase)} characters; use at least {MIN_PASSPHRASE}")
    _refuse_existing(secret_out, public_out)
    uid = f"{name} <{email}>" if email else name
    primary, sub = ALGORITHMS[algorithm]
    prefs = ["--default-preference-list", PREFERENCES]
    with GpgHome(gpg_binary) as home:
        _gpg_ok(home.run(*prefs, "--quick-gen-key", uid, primary, "cert", expire, secret=passphrase), "creating the key")
        listing = parse_colons(home.run("--with-colons", "--fixed-list-mode", "--list-keys").stdout.decode())
        fpr = listing[0].fingerprint
        _gpg_ok(home.run(*prefs, "--quick-add-key", fpr, sub, "encr", expire, secret=passphrase),
                "adding the encryption subkey")
        secret = _gpg_ok(home.run("--armor", "--export-secret-keys", fpr, secret=passphrase), "exporting the secret key")
        public = _gpg_ok(home.run("--armor", "--export-options", "export-minimal", "--export", fpr),
                         "exporting the public key")
    return _write_pair(secret_out, secret, public_out, public, gpg_binary)


def create_signing_key(*, name: str, email: Optional[str], expire: str, algorithm: str, secret_out: str,
                       public_out: str, gpg_binary: str = "gpg") -> KeyInfo:
    """A cluster's signing key (docs/signing.md): a sign-only primary key WITHOUT passphrase (the agent
    signs unattended), ``secret_out`` 0600 for the cluster's OS user on its database host, ``public_out``
    for the restore hosts' ``signing.trusted_public_key_files``. Neither file may exist yet."""
    check_expire(expire)
    if algorithm not in ALGORITHMS:
        raise UsageError(f"--algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
    _refuse_existing(secret_out, public_out)
    uid = f"{name} <{email}>" if email else name
    with GpgHome(gpg_binary) as home:
        _gpg_ok(home.run("--default-preference-list", PREFERENCES, "--quick-gen-key", uid, ALGORITHMS[algorithm][0],
                         "sign", expire, secret=""), "creating the signing key")
        secret = _gpg_ok(home.run("--armor", "--export-secret-keys", secret=""), "exporting the secret key")
        public = _gpg_ok(home.run("--armor", "--export-options", "export-minimal", "--export"),
                         "exporting the public key")
    return _write_pair(secret_out, secret, public_out, public, gpg_binary)


def export_public(secret_file: str, gpg_binary: str = "gpg") -> bytes:
    """The armored public key(s) of the secret key(s) in ``secret_file`` (no passphrase needed)."""
    read_key_file(secret_file, gpg_binary)
    with GpgHome(gpg_binary) as home:
        _gpg_ok(home.run("--import", secret_file), f"reading {secret_file}")
        return _gpg_ok(home.run("--armor", "--export-options", "export-minimal", "--export"), "exporting the public key")


def extend_expiry(*, secret_file: str, expire: str, passphrase: str, public_out: str,
                  secret_out: Optional[str] = None, gpg_binary: str = "gpg") -> KeyInfo:
    """Move the expiry of the key in ``secret_file`` (primary and subkeys) to ``expire``; write the
    updated public key to ``public_out`` (and the updated secret key to ``secret_out``)."""
    check_expire(expire)
    keys = read_key_file(secret_file, gpg_binary)
    if len(keys) != 1 or not keys[0].secret:
        raise EncryptionKeyError(f"{secret_file} must hold exactly one secret key")
    for path in [public_out] + ([secret_out] if secret_out else []):
        if os.path.lexists(path):
            raise RefusedError(f"{path} already exists; refusing to overwrite a key file",
                               hint="choose another path or move the old file away first")
    fpr = keys[0].fingerprint
    with GpgHome(gpg_binary) as home:
        _gpg_ok(home.run("--import", secret_file), f"reading {secret_file}")
        _gpg_ok(home.run("--quick-set-expire", fpr, expire, secret=passphrase), "extending the primary key")
        _gpg_ok(home.run("--quick-set-expire", fpr, expire, "*", secret=passphrase), "extending the subkeys")
        public = _gpg_ok(home.run("--armor", "--export-options", "export-minimal", "--export", fpr),
                         "exporting the public key")
        secret = _gpg_ok(home.run("--armor", "--export-secret-keys", fpr, secret=passphrase),
                         "exporting the secret key") if secret_out else b""
    write_new(public_out, public, 0o644)
    if secret_out:
        write_new(secret_out, secret, 0o600)
    return read_key_file(public_out, gpg_binary)[0]


def _refuse_existing(*paths: str) -> None:
    for path in paths:
        if os.path.lexists(path):
            raise RefusedError(f"{path} already exists; refusing to overwrite a key file",
                               hint="choose another path or move the old file away first")


def _write_pair(secret_out: str, secret: bytes, public_out: str, public: bytes, gpg_binary: str) -> KeyInfo:
    """Both key files, or neither: the secret 0600, the public 0644."""
    write_new(secret_out, secret, 0o600)
    try:
        write_new(public_out, public, 0o644)
    except Exception:
        os.unlink(secret_out)
        raise
    return read_key_file(public_out, gpg_binary)[0]


def _gpg_ok(res: Any, doing: str) -> bytes:
    if res.returncode != 0:
        lines = [ln.strip() for ln in res.stderr.decode(errors="replace").splitlines() if ln.strip()]
        detail = lines[-1].replace("gpg: ", "") if lines else f"gpg exit {res.returncode}"
        if "Bad passphrase" in detail or "bad passphrase" in detail.lower():
            raise EncryptionKeyError(f"{doing}: wrong passphrase for the secret key")
        raise EncryptionKeyError(f"{doing} failed: {detail}")
    return res.stdout
