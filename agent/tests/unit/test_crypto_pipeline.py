"""OpenPGP encryption and the one-pass pipeline against a local repository (real gpg, real zstd)."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import threading

import pytest

from keys import make_keypair
from pg_backup.config import EncryptionSettings
from pg_backup.crypto import GnuPG, passphrase_fingerprint
from pg_backup.errors import EncryptionKeyError, IntegrityError, PostgresError
from pg_backup.pipeline import iter_plaintext, store_stream, verify_stored
from pg_backup.storage.local import LocalStorage


def _secret(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text + "\n")
    os.chmod(p, 0o600)
    return str(p)


@pytest.fixture(scope="module")
def keypair(tmp_path_factory):
    return make_keypair(str(tmp_path_factory.mktemp("keys")))


def _store(tmp_path, settings, data: bytes, source=None, **kw):
    storage = LocalStorage(str(tmp_path / "repo"))
    with GnuPG(settings) as gpg:
        result = store_stream(source or io.BytesIO(data), storage, "b/obj.zst.gpg", gpg, what="obj", level=3,
                              threads=2, **kw)
        fpr = gpg.encryption_fingerprint()
    return storage, result, fpr


def _read(storage, settings, fpr, sha=None):
    with GnuPG(settings) as gpg:
        return b"".join(iter_plaintext(storage, "b/obj.zst.gpg", gpg, fpr, what="obj", expected_sha256=sha))


def test_passphrase_round_trip_and_stock_gpg_decrypts_it(tmp_path):
    settings = EncryptionSettings(mode="passphrase", passphrase_file=_secret(tmp_path, "pp", "correct horse"))
    data = os.urandom(1 << 20) + b"text " * 300000
    storage, result, fpr = _store(tmp_path, settings, data)
    stored = (tmp_path / "repo" / "b" / "obj.zst.gpg").read_bytes()
    assert hashlib.sha256(stored).hexdigest() == result.sha256
    assert result.raw_size == len(data) and result.size == len(stored)
    assert data not in stored and b"text text" not in stored
    assert _read(storage, settings, fpr, result.sha256) == data
    # The README's disaster recipe: gpg --decrypt | zstd -d, nothing of ours involved.
    recipe = subprocess.run(
        f"gpg --homedir {tmp_path} --batch --quiet --pinentry-mode loopback --passphrase-file {tmp_path / 'pp'} "
        f"--decrypt {tmp_path / 'repo' / 'b' / 'obj.zst.gpg'} | zstd -d", shell=True, capture_output=True, check=True)
    assert recipe.stdout == data
    assert fpr == passphrase_fingerprint("correct horse")


def test_public_key_mode_host_cannot_decrypt_its_own_backups(tmp_path, keypair):
    writer = EncryptionSettings(mode="public-key", public_key_file=keypair.public_file)
    data = b"secret rows " * 10000
    storage, result, fpr = _store(tmp_path, writer, data)
    assert fpr == keypair.fingerprint
    with pytest.raises(EncryptionKeyError, match="private key is not configured"):
        _read(storage, writer, fpr)
    reader = EncryptionSettings(mode="public-key", private_key_files=[keypair.secret_file])
    assert _read(storage, reader, fpr, result.sha256) == data


def test_rotated_passphrase_still_reads_old_backups_and_wrong_one_is_a_key_error(tmp_path):
    old = EncryptionSettings(mode="passphrase", passphrase_file=_secret(tmp_path, "old", "first secret"))
    storage, result, fpr = _store(tmp_path, old, b"x" * 1000)
    rotated = EncryptionSettings(mode="passphrase", passphrase_file=_secret(tmp_path, "new", "second secret"),
                                 old_passphrase_files=[str(tmp_path / "old")])
    assert _read(storage, rotated, fpr) == b"x" * 1000
    wrong = EncryptionSettings(mode="passphrase", passphrase_file=_secret(tmp_path, "wrong", "guess"))
    with pytest.raises(EncryptionKeyError, match="none of the configured passphrases"):
        _read(storage, wrong, fpr)


def test_flipped_byte_is_caught_by_checksum_and_by_authenticated_decryption(tmp_path):
    settings = EncryptionSettings(mode="passphrase", passphrase_file=_secret(tmp_path, "pp", "pw"))
    storage, result, fpr = _store(tmp_path, settings, os.urandom(300000))
    path = tmp_path / "repo" / "b" / "obj.zst.gpg"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="SHA-256"):
        verify_stored(storage, "b/obj.zst.gpg", result.size, result.sha256, what="obj")
    with pytest.raises(IntegrityError):
        _read(storage, settings, fpr)  # without the expected hash: gpg's MDC or zstd still refuse


def test_failed_producer_leaves_no_object(tmp_path):
    settings = EncryptionSettings(mode="passphrase", passphrase_file=_secret(tmp_path, "pp", "pw"))

    def producer_failed():
        raise PostgresError("pg_dump failed for database 'x': connection lost")

    with pytest.raises(PostgresError):
        _store(tmp_path, settings, b"partial dump", finish_source=producer_failed)
    leftovers = [p for p in (tmp_path / "repo").rglob("*") if p.is_file()]
    assert leftovers == []


def test_public_key_rotation_keeps_old_backups_restorable(tmp_path, keypair):
    new_pair = make_keypair(str(tmp_path), "rotated")
    old_writer = EncryptionSettings(mode="public-key", public_key_file=keypair.public_file)
    storage, _, old_fpr = _store(tmp_path, old_writer, b"written with the old key")
    new_writer = EncryptionSettings(mode="public-key", public_key_file=new_pair.public_file)
    with GnuPG(new_writer) as gpg:
        new_fpr = gpg.encryption_fingerprint()
    assert new_fpr != old_fpr
    only_new = EncryptionSettings(mode="public-key", private_key_files=[new_pair.secret_file])
    with pytest.raises(EncryptionKeyError, match=old_fpr):
        _read(storage, only_new, old_fpr)
    both = EncryptionSettings(mode="public-key", private_key_files=[new_pair.secret_file, keypair.secret_file])
    assert _read(storage, both, old_fpr) == b"written with the old key"


def test_lower_priority_nices_a_helper_process_by_ten_and_ignores_one_that_is_gone():
    from pg_backup.pipeline import lower_priority

    proc = subprocess.Popen(["sleep", "30"])
    try:
        before = os.getpriority(os.PRIO_PROCESS, proc.pid)
        lower_priority(proc.pid)
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == min(19, before + 10)
    finally:
        proc.kill()
        proc.wait()
    lower_priority(proc.pid)  # reaped: no error


def _s2k_count_of(where) -> int:
    """The S2K count recorded in a stored object's symmetric-key packet (what gpg reads back)."""
    res = subprocess.run(["gpg", "--homedir", str(where), "--batch", "--list-packets",
                          str(where / "repo" / "b" / "obj.zst.gpg")], capture_output=True, stdin=subprocess.DEVNULL)
    text = (res.stdout + res.stderr).decode(errors="replace")
    return int(text.split("count ", 1)[1].split()[0])


def test_s2k_count_is_configurable_and_objects_at_the_old_count_still_decrypt(tmp_path):
    pp = _secret(tmp_path, "pp", "a random repository secret of forty-four chars")
    old = EncryptionSettings(mode="passphrase", passphrase_file=pp)
    low = EncryptionSettings(mode="passphrase", passphrase_file=pp, s2k_count=65536)
    assert old.s2k_count == 65011712            # the default stays gpg's maximum (human passphrases)
    data = b"segment " * 50000
    (tmp_path / "o").mkdir(), (tmp_path / "n").mkdir(), (tmp_path / "r").mkdir()
    old_storage, written_old, fpr = _store(tmp_path / "o", old, data)
    new_storage, written_low, fpr_low = _store(tmp_path / "n", low, data)
    assert fpr_low == fpr                       # the count is not part of the key's name
    assert (_s2k_count_of(tmp_path / "o"), _s2k_count_of(tmp_path / "n")) == (65011712, 65536)
    assert _read(new_storage, low, fpr, written_low.sha256) == data
    assert _read(new_storage, old, fpr, written_low.sha256) == data   # the reader's count is not used: the packet's is
    assert _read(old_storage, low, fpr, written_old.sha256) == data   # written at the old count, read after the change
    odd = EncryptionSettings(mode="passphrase", passphrase_file=pp, s2k_count=100000)
    _store(tmp_path / "r", odd, b"x")
    assert _s2k_count_of(tmp_path / "r") == 102400                    # gpg rounds up to an encodable count


class _ReadOnly:
    """A source with read() only (like the base-backup stream): no fileno, no readinto."""

    def __init__(self, data: bytes):
        self._buf = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(min(size, 70000))   # short reads, as a stream of messages gives


def test_sources_by_pipe_reused_buffer_and_read_only_object_store_every_byte(tmp_path):
    """The dump arrives through a pipe (read into one reused buffer, short reads on the way) or from
    an object with read() only: either way every byte is stored once, in order, and counted."""
    settings = EncryptionSettings(mode="passphrase", passphrase_file=_secret(tmp_path, "pp", "correct horse"))
    data = b"".join(b"%d\t%s\n" % (i, os.urandom(40).hex().encode()) for i in range(60000))  # ~5.6 MB
    read_fd, write_fd = os.pipe()

    def writer() -> None:
        with os.fdopen(write_fd, "wb", buffering=0) as sink:
            view = memoryview(data)
            for start in range(0, len(view), 300001):   # odd-sized writes: reads return partial blocks
                sink.write(view[start:start + 300001])

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    with os.fdopen(read_fd, "rb") as source:
        storage, result, fpr = _store(tmp_path, settings, b"", source=source,
                                      progress=lambda stage, done: seen.append(done))
    thread.join()
    assert result.raw_size == len(data) and seen[-1] == len(data) and seen == sorted(seen)
    assert _read(storage, settings, fpr, result.sha256) == data

    other = tmp_path / "other"
    storage, result, fpr = _store(other, settings, b"", source=_ReadOnly(data))
    assert result.raw_size == len(data)
    assert _read(storage, settings, fpr, result.sha256) == data
