"""The key-fingerprint cache: scrypt (passphrase mode) and gpg (public-key mode) run once per key file,
not once per process; any change to the file, a racy file, an expired key or a damaged cache computes again."""
from __future__ import annotations

import json
import os
import stat

import pytest

from keys import make_keypair
from pg_backup import crypto, fingerprint_cache
from pg_backup.config import EncryptionSettings
from pg_backup.crypto import GnuPG
from pg_backup.fingerprint_cache import CACHE_NAME, FingerprintCache

REAL = crypto.passphrase_fingerprint


@pytest.fixture
def scrypt_calls(monkeypatch):
    calls = []

    def counting(passphrase):
        calls.append(1)
        return REAL(passphrase)
    monkeypatch.setattr(crypto, "passphrase_fingerprint", counting)
    monkeypatch.setattr(fingerprint_cache, "RACY_SECONDS", 0.0)
    return calls


def _fingerprint(settings, cache_path):
    with GnuPG(settings) as gpg:
        gpg.fingerprint_cache = FingerprintCache(cache_path)
        return gpg.encryption_fingerprint(), gpg.fingerprint_cache


def _passphrase(tmp_path, text):
    path = tmp_path / "pp"
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return EncryptionSettings(mode="passphrase", passphrase_file=str(path)), path


def test_second_process_skips_scrypt_and_a_changed_file_recomputes(tmp_path, scrypt_calls):
    settings, path = _passphrase(tmp_path, "correct horse")
    cache = str(tmp_path / "state" / CACHE_NAME)
    first, c1 = _fingerprint(settings, cache)
    assert first == REAL("correct horse")
    assert len(scrypt_calls) == 1 and (c1.hits, c1.misses) == (0, 1)
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    text = open(cache, encoding="utf-8").read()
    assert "correct horse" not in text and first in text

    again, c2 = _fingerprint(settings, cache)
    assert again == first and len(scrypt_calls) == 1 and (c2.hits, c2.misses) == (1, 0)

    path.write_text("battery staple\n")              # same path, new content: a new identity
    changed, c3 = _fingerprint(settings, cache)
    assert changed != first and len(scrypt_calls) == 2 and c3.misses == 1
    assert changed == REAL("battery staple")


def test_old_passphrases_use_the_cache_too(tmp_path, scrypt_calls):
    settings, _ = _passphrase(tmp_path, "current")
    old = tmp_path / "old"
    old.write_text("previous\n")
    settings = EncryptionSettings(mode="passphrase", passphrase_file=settings.passphrase_file,
                                  old_passphrase_files=[str(old)])
    cache = str(tmp_path / CACHE_NAME)
    for expected_calls in (2, 2):
        with GnuPG(settings) as gpg:
            gpg.fingerprint_cache = FingerprintCache(cache)
            assert len(gpg.available_fingerprints()) == 2
        assert len(scrypt_calls) == expected_calls


def test_racy_file_damaged_or_unwritable_cache_compute_as_before(tmp_path, scrypt_calls, monkeypatch):
    settings, _ = _passphrase(tmp_path, "correct horse")
    monkeypatch.setattr(fingerprint_cache, "RACY_SECONDS", 3600.0)   # the file was just written: racy
    cache = tmp_path / CACHE_NAME
    _fingerprint(settings, str(cache))
    _fingerprint(settings, str(cache))
    assert len(scrypt_calls) == 2 and not cache.exists()

    monkeypatch.setattr(fingerprint_cache, "RACY_SECONDS", 0.0)
    cache.write_text("{not json")
    first, _ = _fingerprint(settings, str(cache))
    assert len(scrypt_calls) == 3 and json.loads(cache.read_text())["fingerprints"]
    # A cache others could have written is not believed: computed again, and rewritten 0600.
    os.chmod(cache, 0o666)
    assert _fingerprint(settings, str(cache))[0] == first and len(scrypt_calls) == 4
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    assert _fingerprint(settings, str(cache))[0] == first and len(scrypt_calls) == 4
    # A cache in a directory this process cannot create only costs speed.
    blocker = tmp_path / "file"
    blocker.write_text("")
    again, c = _fingerprint(settings, str(blocker / CACHE_NAME))
    assert again == first and c.misses == 1


def test_public_key_fingerprint_cached_by_content_and_expiry_rechecked(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint_cache, "RACY_SECONDS", 0.0)
    (tmp_path / "keys").mkdir()
    keypair = make_keypair(str(tmp_path / "keys"))
    runs = []
    real_run = GnuPG.run

    def counting_run(self, *args, **kw):
        runs.append(args)
        return real_run(self, *args, **kw)
    monkeypatch.setattr(GnuPG, "run", counting_run)
    settings = EncryptionSettings(mode="public-key", public_key_file=keypair.public_file)
    cache = tmp_path / CACHE_NAME
    assert _fingerprint(settings, str(cache))[0] == keypair.fingerprint
    assert _fingerprint(settings, str(cache))[0] == keypair.fingerprint
    assert len(runs) == 1

    # A cached expiry that has passed is a miss: gpg runs again (and would name an expired key).
    data = json.loads(cache.read_text())
    [key] = data["fingerprints"]
    data["fingerprints"][key] = f"{keypair.fingerprint}:1000000000"
    cache.write_text(json.dumps(data))
    assert _fingerprint(settings, str(cache))[0] == keypair.fingerprint
    assert len(runs) == 2

    # Other bytes in the file (same key re-exported with a changed content) are another entry.
    with open(keypair.public_file, "a", encoding="utf-8") as fh:
        fh.write("\n")
    assert _fingerprint(settings, str(cache))[0] == keypair.fingerprint
    assert len(runs) == 3 and len(json.loads(cache.read_text())["fingerprints"]) == 2
