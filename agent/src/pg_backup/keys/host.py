"""What a host holds: every key and secret file the configuration names, from one table
(:data:`KEY_FILES`: setting, purpose, secret or not, OpenPGP or a passphrase, used to write or not),
with its mode, owner and what is wrong with it.

Cluster signing keys join the table as two rows (``signing.secret_key_file``: secret, used to write,
so its expiry matters; ``signing.trusted_public_key_files``: public, read-only), and so do the
records-only keys of restore hosts (``signing.record_secret_key_file``,
``signing.record_trusted_public_key_files``); ``config validate``,
``health`` and ``keys check`` then cover them with no other change.
"""
from __future__ import annotations

import datetime as dt
import os
import pwd
import stat
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import EncryptionKeyError
from .openpgp import WARN_DAYS, KeyInfo, expiry_verdict, read_key_file


@dataclass(frozen=True)
class KeyFile:
    """One row of :data:`KEY_FILES`: a setting naming key or secret files, and what the host does with them."""

    setting: str          # dotted option path
    purpose: str          # reported as "key": encryption, decryption, passphrase, ...
    secret: bool          # must be private to its owner (0600 or stricter)
    openpgp: bool         # holds OpenPGP keys (else a passphrase)
    writes: bool          # the host writes with it: expiry matters (health, config validate)


KEY_FILES: Tuple[KeyFile, ...] = (
    KeyFile("encryption.public_key_file", "encryption", secret=False, openpgp=True, writes=True),
    KeyFile("encryption.private_key_files", "decryption", secret=True, openpgp=True, writes=False),
    KeyFile("encryption.private_key_passphrase_file", "private key passphrase", secret=True, openpgp=False,
            writes=False),
    KeyFile("encryption.passphrase_file", "passphrase", secret=True, openpgp=False, writes=True),
    KeyFile("encryption.old_passphrase_files", "old passphrase", secret=True, openpgp=False, writes=False),
    KeyFile("signing.secret_key_file", "signing", secret=True, openpgp=True, writes=True),
    KeyFile("signing.trusted_public_key_files", "trusted signer", secret=False, openpgp=True, writes=False),
    KeyFile("signing.record_secret_key_file", "record_signing", secret=True, openpgp=True, writes=True),
    KeyFile("signing.record_trusted_public_key_files", "trusted record signer", secret=False, openpgp=True,
            writes=False),
)


@dataclass
class HeldFile:
    """A file the configuration names, as found on this host."""

    setting: str
    purpose: str
    path: str
    exists: bool = False
    mode: Optional[str] = None
    owner: Optional[str] = None
    directory_mode: Optional[str] = None     # of the directory holding it (others must not replace the file)
    keys: List[KeyInfo] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        d = dict(self.__dict__)
        d["keys"] = [k.as_dict() for k in self.keys]
        return d


def _files_of(settings: Any, setting: str) -> List[str]:
    obj = settings
    for part in setting.split("."):
        obj = getattr(obj, part)
    return [p for p in (obj if isinstance(obj, list) else [obj]) if p]


def host_keys(settings: Any, now: dt.datetime, warn_days: int = WARN_DAYS) -> List[HeldFile]:
    """Every key and secret file ``settings`` names (the table :data:`KEY_FILES`), inspected."""
    held = []
    for row in KEY_FILES:
        for path in _files_of(settings, row.setting):
            held.append(inspect_file(path, row, settings.encryption.gpg_binary, now, warn_days))
    return held


def inspect_file(path: str, row: KeyFile, gpg_binary: str, now: dt.datetime, warn_days: int = WARN_DAYS) -> HeldFile:
    h = HeldFile(row.setting, row.purpose, path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        h.problems.append(f"{row.setting}: {path} does not exist")
        return h
    except OSError as exc:
        h.problems.append(f"{row.setting}: cannot stat {path}: {exc.strerror}")
        return h
    h.exists = True
    h.mode = f"{stat.S_IMODE(st.st_mode):04o}"
    h.owner = _user(st.st_uid)
    try:
        h.directory_mode = f"{stat.S_IMODE(os.stat(os.path.dirname(os.path.abspath(path))).st_mode):04o}"
    except OSError:
        pass
    h.problems += mode_problems(path, st, row.secret, row.setting)
    if not row.openpgp:
        return h
    try:
        h.keys = read_key_file(path, gpg_binary)
    except EncryptionKeyError as exc:
        h.problems.append(f"{row.setting}: {exc}")
        return h
    if row.secret and not all(k.secret for k in h.keys):
        h.problems.append(f"{row.setting}: {path} holds a public key only; the secret key is needed to decrypt")
    if not row.secret and any(k.secret for k in h.keys):
        h.problems.append(f"{row.setting}: {path} holds a SECRET key; a database host needs the public key only "
                          f"(pg-backup keys export)")
    if row.writes and len(h.keys) > 1:
        h.problems.append(f"{row.setting}: {path} holds {len(h.keys)} keys; put exactly one in it")
    for key in h.keys:
        if key.advertises_aead:
            h.warnings.append(f"{row.setting}: key {key.fingerprint} advertises AEAD: GnuPG 2.3+ would write OCB "
                              f"packets to it, which the agent refuses (exit 8); set its preferences without AEAD "
                              f"(see 'Keys' in the README)")
        if row.writes:
            status, message, _ = expiry_verdict(key, now, warn_days, encrypts="signing" not in row.purpose)
            if status == "critical":
                h.problems.append(f"{row.setting}: {message}")
            elif status == "warning":
                h.warnings.append(f"{row.setting}: {message}")
    return h


def mode_problems(path: str, st: os.stat_result, secret: bool, setting: str) -> List[str]:
    """A secret file readable by others, or any key file (or its directory) others may replace."""
    problems = []
    mode = stat.S_IMODE(st.st_mode)
    if secret and mode & 0o077:
        problems.append(f"{setting}: {path} is mode {mode:04o}; a secret must be 0600 (chmod 600 {path})")
    elif mode & 0o022:
        problems.append(f"{setting}: {path} is mode {mode:04o}, writable by others who could substitute their "
                        f"own key (chmod go-w {path})")
    # root (the agent role's 'config validate' before it installs a file) reads every file: only another
    # user is told that a secret file it cannot own is wrong.
    if secret and os.geteuid() != 0 and st.st_uid != os.geteuid():
        problems.append(f"{setting}: {path} belongs to {_user(st.st_uid)}, not to {_user(os.geteuid())} "
                        f"who runs pg-backup")
    parent = os.path.dirname(os.path.abspath(path))
    try:
        pst = os.stat(parent)
        if stat.S_IMODE(pst.st_mode) & 0o002 and not pst.st_mode & stat.S_ISVTX:
            problems.append(f"{setting}: directory {parent} is world-writable: anyone can replace {path}")
    except OSError:
        pass
    return problems


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
