"""Signed plain-JSON records (Repository.put_signed / read_signed, docs/signing.md) with a real gpg and a
local repository: archive.json and its migration, the audit chain, verification records."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from keys import make_keypair
from pg_backup.audit.chain import append, verify
from pg_backup.config_signing import SigningSettings
from pg_backup.crypto import GpgHome
from pg_backup.repository import Repository
from pg_backup.signing import SignatureError, Signatures
from pg_backup.storage.base import PutOptions
from pg_backup.storage.local import LocalStorage
from pg_backup.verification.records import record_verification, verification_history
from pg_backup.wal.archive import WalArchive

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)
JSON = PutOptions(content_type="application/json")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("keys"))
    return make_keypair(d, "main"), make_keypair(d, "forger"), make_keypair(d, "restore1")


@pytest.fixture
def repos(tmp_path, keys):
    """Repositories over one directory: ``main`` signs, ``forger`` signs with a foreign key, ``reader``
    only trusts main's public key, ``plain`` has no signing keys (passphrase mode, old agents). Records-only
    keys (DESIGN §10, session 8): ``db`` signs with main's key and trusts restore1's for records, ``restore``
    signs its records with restore1's records-only key, ``misused`` signs with restore1's key as if it were
    the cluster's (what a forger holding it would write with)."""
    homes = []

    def repo(**settings):
        home = GpgHome()
        homes.append(home)
        sig = Signatures(home, SigningSettings(**settings)) if settings else None
        return Repository(LocalStorage(str(tmp_path)), "main", signatures=lambda: sig)

    main, forger, restore = keys
    yield {"main": repo(secret_key_file=main.secret_file), "forger": repo(secret_key_file=forger.secret_file),
           "reader": repo(trusted_public_key_files=[main.public_file]),
           "lax": repo(trusted_public_key_files=[main.public_file], require=False), "plain": repo(),
           "db": repo(secret_key_file=main.secret_file, record_trusted_public_key_files=[restore.public_file]),
           "restore": repo(trusted_public_key_files=[main.public_file], record_secret_key_file=restore.secret_file),
           "misused": repo(secret_key_file=restore.secret_file)}
    for home in homes:
        home.close()


def test_a_record_is_stored_after_its_signature_and_judged_by_every_reader(repos):
    key = "main/wal/conflicts/x.json"
    repos["main"].put_signed(key, b'{"a": 1}\n', JSON)
    assert repos["main"].storage.exists(key + ".sig")
    assert repos["reader"].read_signed(key) == b'{"a": 1}\n'
    assert repos["plain"].read_signed(key) == b'{"a": 1}\n'          # no keys configured: as before signing
    with pytest.raises(FileExistsError):                              # create-only, signature included
        repos["main"].put_signed(key, b'{"a": 2}\n', JSON)


@pytest.mark.parametrize("who, words", [("forger", ["not trusted", "forged"]), ("plain", ["not signed"])])
def test_forged_or_unsigned_records_are_refused_with_exit_4_naming_the_object(repos, who, words):
    key = "main/audit/verifications/x.json"
    repos[who].put_signed(key, b"{}\n", JSON)
    with pytest.raises(SignatureError) as info:
        repos["reader"].read_signed(key, f"verification record {key}")
    assert info.value.exit_code == 4 and f"verification record {key}" in str(info.value)
    assert all(w in str(info.value) for w in words[:1]), str(info.value)
    if who == "plain":
        assert repos["lax"].read_signed(key) == b"{}\n"              # --allow-unsigned


def test_an_edited_record_no_longer_matches_its_signature(repos, tmp_path):
    key = "main/audit/drills/d1/report.json"
    repos["main"].put_signed(key, b'{"passed": false}\n', JSON)
    (tmp_path / key).write_bytes(b'{"passed": true}\n')
    with pytest.raises(SignatureError, match="bad signature"):
        repos["reader"].read_signed(key)


def _identity(repo: Repository) -> bytes:
    data = (json.dumps({"system_identifier": "7", "wal_segment_size": 16 << 20}) + "\n").encode()
    repo.storage.put_bytes(repo.wal_identity_key, data, JSON, overwrite=False)
    return data


def test_an_unsigned_archive_identity_is_adopted_by_the_signing_host_and_refused_elsewhere(repos):
    _identity(repos["plain"])                                        # written before signing existed
    with pytest.raises(SignatureError, match="WAL archive identity .*archive.json is not signed"):
        WalArchive(repos["reader"]).identity()
    archive = WalArchive(repos["main"])
    assert archive.identity()["system_identifier"] == "7" and archive.unsigned
    assert archive.adopt_identity() and not archive.unsigned
    assert not WalArchive(repos["main"]).adopt_identity()           # already signed: nothing to do
    assert WalArchive(repos["reader"]).segment_size() == 16 << 20    # the migration made it trusted


def test_an_identity_interrupted_before_its_signature_is_adopted_not_blocked(repos, monkeypatch):
    """archive.json is stored before its signature: a crash between leaves an identity the signing host
    adopts on its next push (the other order would leave a .sig that blocks the key for ever)."""
    main = repos["main"]
    monkeypatch.setattr(main, "sign_existing", lambda *a, **k: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError):
        main.put_signed(main.wal_identity_key, b'{"system_identifier": "7"}\n', JSON, signature_first=False)
    monkeypatch.undo()
    assert main.storage.exists(main.wal_identity_key) and not main.storage.exists(main.wal_identity_key + ".sig")
    archive = WalArchive(main)
    assert archive.identity()["system_identifier"] == "7" and archive.unsigned
    assert archive.adopt_identity()
    assert WalArchive(repos["reader"]).identity()["system_identifier"] == "7"


def test_a_forged_archive_identity_is_refused_even_by_the_signing_host(repos):
    repos["forger"].put_signed(repos["forger"].wal_identity_key, b'{"system_identifier": "9"}\n', JSON)
    for who in ("main", "reader"):
        with pytest.raises(SignatureError, match="not trusted"):
            WalArchive(repos[who]).identity()


def test_wal_conflicts_without_a_trusted_signature_are_left_out_and_named(repos):
    prefix = repos["main"].wal_conflicts_prefix
    repos["main"].put_signed(prefix + "a.json", b'{"name": "000000010000000000000003", "reason": "real"}\n', JSON)
    repos["forger"].put_signed(prefix + "b.json", b'{"name": "000000010000000000000004", "reason": "fake"}\n', JSON)
    archive = WalArchive(repos["reader"])
    assert [c.reason for c in archive.conflicts()] == ["real"]
    assert len(archive.untrusted_conflicts) == 1 and prefix + "b.json" in archive.untrusted_conflicts[0]


def _record(i: int) -> dict:
    return {"operation": "backup", "started_at": f"2026-12-04T12:00:{i:02d}Z", "finished_at": f"2026-12-04T12:00:{i:02d}Z"}


def test_signed_audit_chain_flags_a_forged_entry_and_accepts_entries_from_before_signing(repos):
    seq = 0
    for i, who in enumerate(["plain", "plain", "main", "main"]):      # signing enabled after two records
        seq = append(repos[who], _record(i), repos[who].audit_key(NOW, "backup", f"{i:06x}"), seq)
    report = verify(repos["reader"], NOW)
    assert not report.breaks and report.unsigned_before == 2 and report.head_seq == 4
    append(repos["forger"], _record(9), repos["forger"].audit_key(NOW, "backup", "ffffff"), seq)
    append(repos["plain"], _record(10), repos["plain"].audit_key(NOW, "backup", "eeeeee"), seq + 1)
    breaks = verify(repos["reader"], NOW).breaks
    assert [(b.kind, b.seq) for b in breaks] == [("forged", 5), ("forged", 6)], breaks
    assert "not trusted" in breaks[0].message and "is not signed" in breaks[1].message


def test_verification_history_keeps_only_trusted_records(repos):
    warned = []
    for who, passed, minute in (("main", True, 1), ("forger", True, 2), ("main", False, 3), ("forger", False, 4)):
        doc = {"backup_id": f"b{minute}", "passed": passed}
        assert record_verification(repos[who], doc, NOW + dt.timedelta(minutes=minute), warned.append)
    assert [r.backup_id for r in verification_history(repos["reader"], warned.append)] == ["b1", "b3"]
    assert len(warned) == 2 and all("not trusted" in w for w in warned)
    newest = verification_history(repos["reader"], newest=True)      # health: newest back to the newest passed
    assert [(r.backup_id, r.passed) for r in newest] == [("b1", True), ("b3", False)]
    assert len(verification_history(repos["plain"])) == 4            # no keys: names alone, as before


def test_a_restore_hosts_audit_entries_and_verification_records_are_trusted_where_its_key_is(repos):
    seq = 0
    for i, who in enumerate(["db", "restore", "db", "restore"]):
        seq = append(repos[who], _record(i), repos[who].audit_key(NOW, "backup", f"{i:06x}"), seq)
    restore_fpr = repos["restore"]._signatures().record_fingerprint()
    assert restore_fpr and repos["restore"]._signatures().own_fingerprint() is None
    for who in ("db", "restore"):                     # the restore host trusts its own record key implicitly
        report = verify(repos[who], NOW)
        assert not report.breaks and report.head_seq == 4, (who, report.breaks)
    breaks = verify(repos["reader"], NOW).breaks      # a host not told about restore1's key: forged entries
    assert [(b.kind, b.seq) for b in breaks] == [("forged", 2), ("forged", 4)], breaks
    assert restore_fpr in breaks[0].message and "not trusted" in breaks[0].message

    warned = []
    assert record_verification(repos["restore"], {"backup_id": "b1", "passed": True}, NOW, warned.append)
    assert [r.backup_id for r in verification_history(repos["db"], warned.append)] == ["b1"] and not warned


@pytest.mark.parametrize("verify_records_first", [False, True])
def test_a_records_only_key_never_vouches_for_a_non_operational_record(repos, verify_records_first):
    """archive.json or a WAL conflict record (and, in the integration test, a manifest or WAL segment) signed by
    restore1's key: refused by the database host with exit 4 naming the signer as a records-only key, whether
    gpg knows the key (VALIDSIG: record keys imported) or not yet (ERRSIG)."""
    key = "main/wal/conflicts/x.json"
    repos["misused"].put_signed(key, b'{"reason": "forged"}\n', JSON)
    signer = repos["misused"]._signatures().own_fingerprint()
    if verify_records_first:
        assert repos["db"].read_signed(key, operational=True)       # as if it were an audit record: accepted
    with pytest.raises(SignatureError) as info:
        repos["db"].read_signed(key, f"WAL conflict record {key}")
    message = str(info.value)
    assert info.value.exit_code == 4 and f"WAL conflict record {key}" in message, message
    assert "operational records only" in message and signer[-16:] in message, message
    with pytest.raises(SignatureError, match="not trusted"):       # and a host that does not know it at all
        repos["reader"].read_signed(key)


def test_a_restore_host_signs_no_data_and_no_archive_identity(repos):
    """restore1's key is never the cluster's: an encrypting gpg gets no --sign from it, and a
    non-operational record it writes stays unsigned."""
    sig = repos["restore"]._signatures()
    assert sig.sign_args() == [] and sig.record_fingerprint()
    repos["restore"].put_signed("main/wal/archive.json", b"{}\n", JSON, signature_first=False)
    assert not repos["restore"].storage.exists("main/wal/archive.json.sig")
