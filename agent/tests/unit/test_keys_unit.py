"""Key expiry verdicts, health checks and metrics (pure functions with an injected clock), the packet
format guard, and reading real key files made by gpg."""
from __future__ import annotations

import datetime as dt

import pytest

from keys import make_aead_keypair, make_keypair
from pg_backup.config import EncryptionSettings, HealthSettings
from pg_backup.crypto import GnuPG, GpgProcess, packet_format_problem
from pg_backup.errors import EncryptionKeyError
from pg_backup.health.checks import Probes, evaluate
from pg_backup.health.keys import KeyProbe
from pg_backup.health.render import document, render_prometheus
from pg_backup.keys.openpgp import KeyInfo, expiry_verdict, read_key_file
from pg_backup.pipeline import EncryptedStream

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=dt.timezone.utc)


def _key(expires, **kw) -> KeyInfo:
    fields = dict(fingerprint="AB" * 20, user_ids=["ops"], algorithm="ed25519/cv25519",
                  created=NOW - dt.timedelta(days=400), expires=expires, secret=False, protected=None,
                  can_encrypt=True, revoked=False, advertises_aead=False)
    fields.update(kw)
    return KeyInfo(**fields)


def key_probe(expires) -> KeyProbe:
    """The encryption key of a host, read by health, expiring at ``expires``."""
    return KeyProbe("encryption", "encryption.public_key_file", "/k.asc", key=_key(expires))


@pytest.mark.parametrize("expires, status, words", [
    (None, "ok", "does not expire"),
    (NOW + dt.timedelta(days=31), "ok", "in 31 days"),
    (NOW + dt.timedelta(days=30), "warning", "in 30 day(s)"),
    (NOW + dt.timedelta(hours=2), "warning", "in 0 day(s)"),
    (NOW, "critical", "EXPIRED"),
    (NOW - dt.timedelta(days=3), "critical", "EXPIRED on 2030-05-29"),
])
def test_expiry_verdict_warns_30_days_ahead_and_is_critical_once_expired(expires, status, words):
    got, message, left = expiry_verdict(_key(expires), NOW)
    assert got == status and words in message
    assert left == (None if expires is None else round((expires - NOW).total_seconds()))


def test_revoked_or_encryptionless_keys_are_critical():
    assert expiry_verdict(_key(None, revoked=True), NOW)[0] == "critical"
    assert expiry_verdict(_key(None, can_encrypt=False), NOW)[0] == "critical"


def test_health_evaluates_key_expiry_and_prometheus_carries_the_seconds_left():
    soon = key_probe(NOW + dt.timedelta(days=10))
    checks = evaluate([], HealthSettings(), Probes(keys=[soon]), NOW)
    check = [c for c in checks if c.name == "key_expiry_encryption"][0]
    assert check.status == "warning" and check.value == 10 * 86400 and check.labels["fingerprint"] == "AB" * 20
    text = render_prometheus(document("main", checks), [], NOW, Probes(keys=[soon]))
    assert f'pg_backup_key_expiry_seconds{{cluster="main",key="encryption",fingerprint="{"AB" * 20}"}} 864000' in text
    never = key_probe(None)
    assert "pg_backup_key_expiry_seconds" not in render_prometheus(document("main", []), [], NOW, Probes(keys=[never]))
    unreadable = KeyProbe("encryption", "encryption.public_key_file", "/k.asc", error="no such file")
    bad = [c for c in evaluate([], HealthSettings(), Probes(keys=[unreadable]), NOW) if c.name.startswith("key_")]
    assert bad[0].status == "critical" and "no such file" in bad[0].message


@pytest.mark.parametrize("line, problem", [
    ("[GNUPG:] BEGIN_ENCRYPTION 2 9", None),            # GnuPG 2.2: SEIPD v1, MDC, AES-256
    ("[GNUPG:] BEGIN_ENCRYPTION 2 9 0", None),          # GnuPG 2.4, no AEAD
    ("[GNUPG:] BEGIN_ENCRYPTION 0 9 2", "AEAD"),        # GnuPG 2.4 to a key that advertises AEAD: OCB
    ("[GNUPG:] BEGIN_ENCRYPTION 2 7", "instead of AES-256"),
    ("[GNUPG:] BEGIN_ENCRYPTION 0 9", "no MDC"),
])
def test_packet_format_guard(line, problem):
    got = packet_format_problem(line)
    assert (got is None) if problem is None else (problem in got)


def test_read_key_file_reports_expiry_protection_and_aead(tmp_path):
    expired = make_keypair(str(tmp_path), "old", expire="1y", created="20200101T000000")
    protected = make_keypair(str(tmp_path), "prot", passphrase="long enough passphrase")
    aead = make_aead_keypair(str(tmp_path))
    old = read_key_file(expired.public_file)[0]
    assert old.fingerprint == expired.fingerprint and old.expires == dt.datetime(2020, 12, 31, tzinfo=dt.timezone.utc)
    assert expiry_verdict(old, NOW)[0] == "critical"
    sec = read_key_file(protected.secret_file)[0]
    assert sec.secret and sec.protected and sec.expires is None and not sec.advertises_aead
    assert read_key_file(aead.public_file)[0].advertises_aead
    (tmp_path / "junk").write_text("not a key\n")
    with pytest.raises(EncryptionKeyError, match="no readable OpenPGP key"):
        read_key_file(str(tmp_path / "junk"))


def test_an_encryption_that_is_not_seipd_v1_is_refused(tmp_path, monkeypatch):
    """A gpg that announces OCB (what GnuPG 2.4 does for an AEAD key) is stopped: its output is never
    handed on as a good archive. The real gpg runs; only its status line is replaced."""
    pair = make_keypair(str(tmp_path), "ops")
    gpg = GnuPG(EncryptionSettings(mode="public-key", public_key_file=pair.public_file))
    real = GpgProcess.on_status

    def as_gnupg_24_with_ocb(self, raw: bytes) -> None:
        real(self, raw.replace(b"BEGIN_ENCRYPTION 2 9", b"BEGIN_ENCRYPTION 0 9 2"))

    monkeypatch.setattr("pg_backup.crypto.GpgProcess.on_status", as_gnupg_24_with_ocb)
    try:
        with pytest.raises(EncryptionKeyError, match="AEAD packet"):
            with EncryptedStream(gpg, lambda sink: sink.write(b"x" * 100000), what="test object") as stream:
                for _ in stream:
                    pass
    finally:
        gpg.close()
