"""The configuration rules of records-only signing keys (docs/signing.md, "Restore hosts"; DESIGN §10,
session 8): a restore host's own key for its records (``signing.record_secret_key_file``) and the keys the
cluster's hosts trust for records only (``signing.record_trusted_public_key_files``). Their behaviour with a
real gpg is tested in test_signed_records_unit.py."""
from __future__ import annotations

import pytest

from pg_backup import config as config_mod
from pg_backup.config_signing import SigningSettings
from pg_backup.errors import EncryptionKeyError


def _problems(tmp_path, **signing):
    data = {"cluster": "main", "repository": {"type": "local", "path": str(tmp_path)},
            "encryption": {"mode": "public-key", "public_key_file": __file__}, "signing": signing}
    return [p for p in config_mod.parse(data, check_files=False)[1] if p.startswith("signing")]


def test_configuration_rules_of_records_only_keys(tmp_path):
    assert _problems(tmp_path, trusted_public_key_files=["/k/main.pub"], record_secret_key_file="/k/r.sec") == []
    assert _problems(tmp_path, secret_key_file="/k/main.sec", record_trusted_public_key_files=["/k/r.pub"]) == []
    both = _problems(tmp_path, secret_key_file="/k/main.sec", record_secret_key_file="/k/r.sec")
    assert len(both) == 1 and "set only one" in both[0], both
    alone = _problems(tmp_path, record_trusted_public_key_files=["/k/r.pub"])
    assert len(alone) == 1 and "never vouch for backups" in alone[0], alone
    typed = _problems(tmp_path, trusted_public_key_files=["/k/main.pub"], record_trusted_public_key_files="/k/r.pub")
    assert typed and "record_trusted_public_key_files" in typed[0], typed


@pytest.mark.parametrize("signing, refused", [
    ({"trusted_public_key_files": ["p"]}, True),                                   # restore host without a key
    ({"trusted_public_key_files": ["p"], "require": False}, False),                # --allow-unsigned
    ({"trusted_public_key_files": ["p"], "record_secret_key_file": "r"}, False),
    ({"secret_key_file": "s"}, False),                                             # a database host
    ({}, False),                                                                   # signing not configured
])
def test_a_host_that_cannot_sign_its_records_refuses_with_exit_8(signing, refused):
    settings = SigningSettings(**signing)
    if not refused:
        settings.check_records_key()
        return
    with pytest.raises(EncryptionKeyError) as info:
        settings.check_records_key()
    assert info.value.exit_code == 8 and "signing.record_secret_key_file" in str(info.value)
