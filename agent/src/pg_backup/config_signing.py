"""The ``signing`` section of the configuration (cluster signing keys, docs/signing.md).

Declared apart from :mod:`pg_backup.config` only to keep that module short; it is part of the one
schema (``Settings.signing``) like every other section.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from .config_options import opt
from .errors import EncryptionKeyError


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
    record_secret_key_file: Optional[str] = opt(None, "THIS HOST's own signing secret key for the operational "
                                                "records it writes (audit records and chain entries, verification "
                                                "records, drill reports): restore hosts, which hold no cluster "
                                                "signing key. Same file rules as secret_key_file; never signs "
                                                "backups, WAL or archive.json. Not together with secret_key_file.",
                                                example="/etc/pg-backup/keys/main-restore1-records.sec.asc")
    record_trusted_public_key_files: List[str] = opt([], "Signing public keys trusted for operational records "
                                                     "ONLY (the restore hosts' record_secret_key_file keys): "
                                                     "accepted on audit records, chain entries, verification "
                                                     "records and drill reports; a backup, manifest, WAL file, "
                                                     "erasure record or archive.json they signed is refused "
                                                     "(exit 4).")
    require: bool = opt(True, "When the cluster's signing keys are configured (secret_key_file or "
                        "trusted_public_key_files), readers (restore, pitr, wal-fetch, verify, drill) refuse "
                        "objects without a good signature of a trusted key (exit 4); '--allow-unsigned' on the "
                        "command (audited) admits objects written before "
                        "signing was enabled. false admits unsigned objects, never foreign-signed ones.")

    def problems(self) -> List[str]:
        """Rules across the signing fields (docs/signing.md, "Restore hosts")."""
        problems: List[str] = []
        if self.secret_key_file and self.record_secret_key_file:
            problems.append("signing.record_secret_key_file: a host with the cluster's signing key "
                            "(signing.secret_key_file) signs its records with it; set only one of the two")
        if (self.record_secret_key_file or self.record_trusted_public_key_files) and not self.configured:
            problems.append("signing.record_secret_key_file / record_trusted_public_key_files: need the cluster's "
                            "own keys too (signing.secret_key_file on database hosts, signing.trusted_public_key_files "
                            "on restore hosts): records-only keys never vouch for backups")
        return problems

    @property
    def configured(self) -> bool:
        """The cluster's signing keys are configured: readers judge signatures."""
        return bool(self.secret_key_file or self.trusted_public_key_files)

    @property
    def records_key_missing(self) -> bool:
        """Signatures are required here, yet this host has no key to sign the records it writes."""
        return self.configured and self.require and not (self.secret_key_file or self.record_secret_key_file)

    def check_records_key(self) -> None:
        """Refuse (exit 8) a command that writes operational records on a host that could not sign them
        while signatures are required: an unsigned audit entry reads as forged in the cluster's chain
        (DESIGN §10, session 8). ``--allow-unsigned`` turns ``require`` off for one command."""
        if not self.records_key_missing:
            return
        raise EncryptionKeyError(
            "this host has no signing key for the records it writes (audit, verification, drill) and the cluster "
            "requires signatures: its audit entries would read as forged",
            hint="make one with 'pg-backup keys create --purpose signing', set signing.record_secret_key_file to "
                 "it here and list its public key in signing.record_trusted_public_key_files on the cluster's "
                 "hosts (docs/signing.md, 'Restore hosts'); in an emergency, '--allow-unsigned' (audited) runs it "
                 "with an unsigned record")
