"""repository.s3.credentials: each command uses its duty's credentials file (storage.credentials_file_for)."""
from __future__ import annotations

import pytest

from pg_backup.cli import DUTY
from pg_backup.config import S3CredentialsSettings, S3Settings
from pg_backup.errors import ConfigError
from pg_backup.storage import DUTIES, credentials_file_for


def s3(credentials_file=None, **duties):
    return S3Settings(bucket="b", credentials_file=credentials_file, credentials=S3CredentialsSettings(**duties))


def test_each_duty_uses_its_own_file_and_catalog_reads_the_first_one_set():
    settings = s3(writer="/w", pruner="/p", restorer="/r")
    assert [credentials_file_for(settings, d) for d in DUTIES] == ["/w", "/p", "/r"]
    assert credentials_file_for(settings, None) == "/w"
    assert credentials_file_for(s3(restorer="/r"), None) == "/r"


def test_the_single_slot_serves_every_duty_without_a_file_of_its_own():
    assert credentials_file_for(s3("/all"), "restorer") == "/all"
    assert credentials_file_for(s3("/all", pruner="/p"), "pruner") == "/p"
    assert credentials_file_for(s3("/all", pruner="/p"), "writer") == "/all"
    assert credentials_file_for(s3(), "writer") is None  # instance role / environment


def test_a_duty_without_credentials_is_a_config_error_naming_the_option():
    with pytest.raises(ConfigError) as exc:
        credentials_file_for(s3(writer="/w", pruner="/p"), "restorer")
    assert exc.value.exit_code == 2
    assert "repository.s3.credentials.restorer" in str(exc.value) and "writer, pruner" in str(exc.value)


def test_every_command_that_touches_objects_has_a_duty():
    assert DUTY["backup"] == DUTY["wal-push"] == "writer"
    assert DUTY["prune"] == "pruner"
    assert {DUTY[c] for c in ("restore", "pitr", "wal-fetch", "verify", "drill")} == {"restorer"}
    assert set(DUTY.values()) == set(DUTIES)
