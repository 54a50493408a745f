"""The cache of positive detached-signature verdicts (pg_backup.signing_cache) and its use by Signatures."""
from __future__ import annotations

import os
import stat
import subprocess

import pytest

from pg_backup.config_signing import SigningSettings
from pg_backup.signing import SignatureError, Signatures
from pg_backup import signing_cache
from pg_backup.signing_cache import VerdictCache, verdict_key

A = "B23E41973D06D9CDD253F0B819E7DF59B99F0B8F"
B = "E617EA28A73E2FDF37EFE5D78A4D06AA01975635"


class FakeHome:
    """Stands in for gpg: a 'signature' is b'good:<fpr>' or anything else (bad); counts verify runs."""

    def __init__(self, home):
        self.home = str(home)
        self.runs = 0

    def run(self, *args):
        self.runs += 1
        with open(args[-2], "rb") as fh:
            sig = fh.read()
        if sig.startswith(b"good:"):
            fpr = sig[5:].decode()
            out = f"[GNUPG:] VALIDSIG {fpr} 2026-12-04 1764846000 0 4 0 22 10 00 {fpr}\n"
        else:
            out = "[GNUPG:] BADSIG 19E7DF59B99F0B8F main\n"
        return subprocess.CompletedProcess(args, 0, out.encode(), b"")


def signatures(tmp_path, trusted, cache_path):
    sig = Signatures(home=FakeHome(tmp_path), settings=SigningSettings(trusted_public_key_files=["x.pub"]))
    sig._trusted = set(trusted)                      # what trusted() imported
    sig.verdict_cache = VerdictCache(str(cache_path))
    return sig


def test_a_second_verify_of_the_same_bytes_is_a_hit_without_gpg(tmp_path):
    path = tmp_path / "state" / "v.json"
    first = signatures(tmp_path, {A}, path)
    assert first.verify_detached(b"manifest", b"good:" + A.encode(), "m") == A
    assert first.home.runs == 1 and first.verdict_cache.misses == 1
    first.verdict_cache.flush()                       # what Context.close does
    second = signatures(tmp_path, {A}, path)          # a later command: reads the file
    assert second.verify_detached(b"manifest", b"good:" + A.encode(), "m") == A
    assert second.home.runs == 0 and second.verdict_cache.hits == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.stat(path).st_uid == os.getuid()


def test_a_changed_manifest_is_a_miss_and_still_refused(tmp_path):
    path = tmp_path / "v.json"
    sig = signatures(tmp_path, {A}, path)
    sig.verify_detached(b"manifest", b"good:" + A.encode(), "m")
    with pytest.raises(SignatureError):
        sig.verify_detached(b"forged manifest", b"bad", "m")
    with pytest.raises(SignatureError):                # refusals are never cached
        sig.verify_detached(b"forged manifest", b"bad", "m")
    assert sig.home.runs == 3


def test_a_changed_trust_set_invalidates(tmp_path):
    path = tmp_path / "v.json"
    signatures(tmp_path, {A}, path).verify_detached(b"m", b"good:" + A.encode(), "m")
    other = signatures(tmp_path, {B}, path)           # A no longer trusted
    with pytest.raises(SignatureError, match="not trusted"):
        other.verify_detached(b"m", b"good:" + A.encode(), "m")
    assert other.home.runs == 1 and other.verdict_cache.hits == 0
    assert verdict_key(b"m", b"s", {A}) != verdict_key(b"m", b"s", {A, B})


@pytest.mark.parametrize("content", [b"{not json", b"[1,2]", b'{"verdicts": {"short": "x"}}', b"\xff\xfe"])
def test_a_damaged_cache_is_ignored_and_rewritten(tmp_path, content):
    path = tmp_path / "v.json"
    path.write_bytes(content)
    sig = signatures(tmp_path, {A}, path)
    assert sig.verify_detached(b"m", b"good:" + A.encode(), "m") == A
    assert sig.home.runs == 1
    sig.verdict_cache.flush()
    again = signatures(tmp_path, {A}, path)
    assert again.verify_detached(b"m", b"good:" + A.encode(), "m") == A and again.home.runs == 0


def test_a_cached_signer_no_longer_trusted_is_not_believed(tmp_path):
    path = tmp_path / "v.json"
    cache = VerdictCache(str(path))
    cache.put(verdict_key(b"m", b"good:" + B.encode(), {A}), B)   # a tampered entry
    cache.flush()
    sig = signatures(tmp_path, {A}, path)
    with pytest.raises(SignatureError):
        sig.verify_detached(b"m", b"good:" + B.encode(), "m")
    assert sig.home.runs == 1


def test_many_puts_write_the_file_once_at_flush(tmp_path, monkeypatch):
    path = tmp_path / "v.json"
    cache = VerdictCache(str(path))
    written = []
    real_write = cache._write
    monkeypatch.setattr(cache, "_write", lambda entries: (written.append(len(entries)), real_write(entries)))
    for i in range(500):
        cache.put(verdict_key(b"m%d" % i, b"s", {A}), A)
    assert written == [] and not path.exists()        # nothing written per put
    cache.flush()
    cache.flush()                                     # nothing pending: no second write
    assert written == [500] and cache.writes == 1
    assert len(VerdictCache(str(path))._load()) == 500
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_long_run_still_writes_at_the_interval(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(signing_cache.time, "monotonic", lambda: clock[0])
    path = tmp_path / "v.json"
    cache = VerdictCache(str(path))
    for i in range(3):
        cache.put(verdict_key(b"a%d" % i, b"s", {A}), A)
    assert cache.writes == 0
    clock[0] += signing_cache.FLUSH_INTERVAL           # a killed command keeps what came before this put
    cache.put(verdict_key(b"b", b"s", {A}), A)
    assert cache.writes == 1 and len(VerdictCache(str(path))._load()) == 4
    cache.put(verdict_key(b"c", b"s", {A}), A)
    assert cache.writes == 1


def test_a_context_close_flushes_the_cache(tmp_path):
    from types import SimpleNamespace
    from pg_backup.context import Context
    cache = VerdictCache(str(tmp_path / "v.json"))
    closed = []
    ctx = Context(SimpleNamespace())
    ctx._gpg = SimpleNamespace(signatures=SimpleNamespace(verdict_cache=cache), close=lambda: closed.append(1))
    cache.put(verdict_key(b"m", b"s", {A}), A)
    ctx.close()
    assert cache.writes == 1 and os.path.exists(cache.path) and closed == [1]
