"""The ``signing`` section of the configuration (cluster signing keys, docs/signing.md).

Declared apart from :mod:`pg_backup.config` only to keep that module short; it is part of the one
schema (``Settings.signing``) like every other section.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from .config_options import opt


@dataclass
class SigningSettings:
    secret_key_file: Optional[str] = opt(None, "This cluster's OpenPGP signing secret key (sign-only, no passphrase, "
                                         "mode 0600, owned by the cluster's OS user; 'pg-backup keys create "
                                         "--purpose signing' makes it). Every object the agent writes is signed "
                                         "with it; only database hosts hold it.",
                                         example="/etc/pg-backup/keys/main-signing.sec.asc")
    trusted_public_key_files: List[str] = opt([], "Signing public keys trusted for THIS cluster (restore hosts; "
                                              "keep an old key listed after a rotation while its backups are "
                                              "kept). The key in secret_key_file is trusted implicitly.")
    require: bool = opt(True, "When a signing key is configured (either option above), readers (restore, pitr, "
                        "wal-fetch, verify, drill) refuse objects without a good signature of a trusted key "
                        "(exit 4); '--allow-unsigned' on the command (audited) admits objects written before "
                        "signing was enabled. false admits unsigned objects, never foreign-signed ones.")
