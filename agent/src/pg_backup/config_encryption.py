"""The ``encryption`` section of the configuration: client-side OpenPGP encryption (:mod:`pg_backup.crypto`).

Part of the one schema (:class:`pg_backup.config.Settings`), declared apart to keep modules short.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional

from .config_options import opt

# What gpg --s2k-count honours: 1024 itself means "gpg's own default", so the range starts above it.
S2K_COUNT_MIN = 1025
S2K_COUNT_MAX = 65011712


@dataclass
class EncryptionSettings:
    mode: str = opt("public-key", "public-key: hosts hold only an OpenPGP public key and cannot read backups; "
                    "passphrase: one symmetric secret.", choices=("public-key", "passphrase"))
    public_key_file: Optional[str] = opt(None, "OpenPGP public key (armored or binary) new backups are "
                                         "encrypted to (public-key mode); 'pg-backup keys create' makes the pair.")
    private_key_files: List[str] = opt([], "OpenPGP secret keys (mode 0600) for restore and deep verify; "
                                       "list old keys too after a rotation. Only needed where restores run.",
                                       secret_file=True)
    private_key_passphrase_file: Optional[str] = opt(None, "File (0600) holding the passphrase that protects "
                                                     "the secret keys, if any.", secret_file=True)
    passphrase_file: Optional[str] = opt(None, "File (0600) with the passphrase new backups are encrypted with "
                                         "(passphrase mode).", secret_file=True)
    old_passphrase_files: List[str] = opt([], "Previous passphrases (0600 files) still needed to read older "
                                          "backups after a rotation.", secret_file=True)
    s2k_count: int = opt(S2K_COUNT_MAX, "Passphrase mode: rounds of OpenPGP iterated+salted key stretching "
                         "(S2K) gpg applies to the passphrase, once per object written and once per object read "
                         "(each WAL segment). The default, gpg's maximum, costs about 0.2 s of CPU each way and "
                         "protects a human-chosen passphrase against guessing; with a random secret of 128 bits "
                         "or more (e.g. 'openssl rand -base64 32') stretching adds nothing: set 65536. gpg "
                         "rounds to the next value it can encode and records it in each object, so objects "
                         "written at an earlier count still decrypt after a change.",
                         minimum=S2K_COUNT_MIN, maximum=S2K_COUNT_MAX)
    gpg_binary: str = opt("gpg", "GnuPG 2.2+ executable (the packet format it writes is pinned: SEIPD v1, "
                                 "AES-256, never AEAD).")

    def problems(self, *, check_files: bool) -> List[str]:
        """Rules across the encryption fields (the key material each mode needs)."""
        problems: List[str] = []
        if self.mode == "public-key" and not self.public_key_file and not self.private_key_files:
            problems.append("encryption.public_key_file: required in public-key mode (or private_key_files on a "
                            "restore-only host)")
        if self.mode == "passphrase" and not self.passphrase_file:
            problems.append("encryption.passphrase_file: required in passphrase mode")
        if check_files and self.public_key_file and not os.path.exists(self.public_key_file):
            problems.append(f"encryption.public_key_file: file {self.public_key_file} does not exist")
        return problems
