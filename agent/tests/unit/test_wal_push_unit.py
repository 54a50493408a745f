"""The WAL package without PostgreSQL: the fast path's argument parsing, cache and imports, PostgreSQL file
headers, object metadata of the local backend, and the one-pass/two-pass WAL encoding (real gpg, zstd)."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from pg_backup import config as config_mod
from pg_backup import objmeta
from pg_backup.config import EncryptionSettings, RepositorySettings, S3Settings
from pg_backup.crypto import GnuPG
from pg_backup.pipeline import iter_plaintext
from pg_backup.repository import Repository
from pg_backup.storage import open_storage
from pg_backup.storage.base import PutOptions
from pg_backup.storage.local import LocalStorage
from pg_backup.wal import fast as fastpath
from pg_backup.wal.__main__ import worker_main
from pg_backup.wal.encode import encode_file
from pg_backup.wal.pgfiles import datadir_of, read_control_sysid, read_segment_header
from pg_backup.wal.spool import Spool, serve_prefetched, spool_namespace


def test_fast_path_constants_match_the_configuration_module():
    assert fastpath.ENV_CONFIG == config_mod.ENV_CONFIG
    assert fastpath.DEFAULT_CONFIG_PATH == config_mod.DEFAULT_CONFIG_PATH


@pytest.mark.parametrize("argv,expected", [
    (["--config", "/c.yml", "--quiet", "wal-push", "pg_wal/X"], ("/c.yml", "wal-push", ["pg_wal/X"])),
    (["-c", "/c.yml", "wal-fetch", "A", "pg_wal/RECOVERYXLOG"], ("/c.yml", "wal-fetch", ["A", "pg_wal/RECOVERYXLOG"])),
    (["--config=/c.yml", "-q", "wal-push", "p"], ("/c.yml", "wal-push", ["p"])),
    (["wal-push", "p", "--quiet"], (None, "wal-push", ["p"])),
    (["--json", "wal-push", "p"], None),           # JSON documents come from the full CLI
    (["wal-push", "p", "--help"], None),
    (["wal-push"], None),
    (["wal-fetch", "A"], None),
    (["backup", "--tier", "daily"], None),
    (["--config", "wal-push", "wal-push", "x", "y"], None),
])
def test_fast_path_arguments(argv, expected):
    assert fastpath._fast_args(argv) == expected


def _settings(tmp_path, repo_type="local"):
    repo = RepositorySettings(type=repo_type, path=str(tmp_path / "repo"), prefix="pre",
                              s3=S3Settings(bucket="b", endpoint_url="http://x"))
    return SimpleNamespace(cluster="main", repository=repo, wal_spool_path=str(tmp_path / "spool"))


@pytest.fixture
def fast_env(tmp_path, monkeypatch):
    """(config file, settings, spool) with the fast-path cache written, TMPDIR private to the test."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    os.makedirs(tmp_path / "tmp")
    cfg = tmp_path / "c.yml"
    cfg.write_text("cluster: main\n")
    settings = _settings(tmp_path)
    spool = Spool.for_settings(settings)
    fastpath.write_fast_settings(str(cfg), Repository(open_storage(settings), settings.cluster), spool)
    return cfg, settings, spool


def test_fast_settings_cache_follows_the_configuration_file(tmp_path, fast_env):
    cfg, settings, spool = fast_env
    assert oct(os.stat(spool.root).st_mode & 0o777) == "0o700"
    fast = fastpath.read_fast_settings(str(cfg))
    assert fast["spool"] == spool.root and fast["local_wal_root"] == str(tmp_path / "repo" / "pre" / "main" / "wal")
    cfg.write_text("cluster: main\n# changed\n")
    assert fastpath.read_fast_settings(str(cfg)) is None          # a changed file is read in full again
    fastpath.write_fast_settings(str(cfg), Repository(open_storage(settings), settings.cluster), spool)
    assert fastpath.read_fast_settings(str(cfg)) is not None
    os.chmod(os.path.dirname(fastpath._fast_cache_path(str(cfg))), 0o755)
    assert fastpath.read_fast_settings(str(cfg)) is None          # a cache others could write is not trusted


def test_spool_namespace_changes_with_the_repository(tmp_path):
    a, b = _settings(tmp_path), _settings(tmp_path)
    b.repository.path = str(tmp_path / "other")
    assert spool_namespace(a) != spool_namespace(b)
    assert spool_namespace(a).startswith("main-")


def test_markers_are_bound_to_the_file(tmp_path):
    spool = Spool(str(tmp_path / "s"))
    spool.ensure()
    f = tmp_path / "000000010000000000000001"
    f.write_bytes(b"a" * 100)
    spool.write_marker(f.name, os.stat(f), "h", "k", "stored")
    assert spool.marker_matches(f.name, os.stat(f))
    f.write_bytes(b"b" * 100)                                # same size, rewritten: not acknowledged
    assert not spool.marker_matches(f.name, os.stat(f))
    os.unlink(f)
    f.write_bytes(b"a" * 100)                                # a new file under the old name
    assert not spool.marker_matches(f.name, os.stat(f))


def test_fast_path_acknowledges_only_remembered_files(tmp_path, fast_env):
    cfg, settings, spool = fast_env
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    seg = pg_wal / "000000010000000000000002"
    seg.write_bytes(b"w" * 4096)
    argv = ["--config", str(cfg), "--quiet", "wal-push", str(seg)]
    assert fastpath.fast_main(argv) is None                       # unknown: the full path stores it
    spool.write_marker(seg.name, os.stat(seg), "h", "k", "stored")
    assert fastpath.fast_main(argv) == 0
    # wal-fetch from a local repository: a missing object is exit 7 without the full path
    os.makedirs(tmp_path / "repo" / "pre" / "main" / "wal" / "00000001")
    assert fastpath.fast_main(["--config", str(cfg), "wal-fetch", "000000010000000000000009", str(tmp_path / "d")]) == 7
    (tmp_path / "repo" / "pre" / "main" / "wal" / "00000001" / "000000010000000000000009.zst.gpg").write_bytes(b"")
    assert fastpath.fast_main(["--config", str(cfg), "wal-fetch", "000000010000000000000009", str(tmp_path / "d")]) is None
    assert fastpath.fast_main(["--config", str(cfg), "wal-fetch", "../etc/passwd", str(tmp_path / "d")]) is None


def _prefetched(prefetch, name, data, *, verified_at=None, object_size=10):
    prefetch.mkdir(parents=True, exist_ok=True)
    (prefetch / name).write_bytes(data)
    (prefetch / f"{name}.json").write_text(json.dumps({
        "sha256": hashlib.sha256(data).hexdigest(), "object_size": object_size,
        "verified_at": time.time() if verified_at is None else verified_at}))


def test_serving_a_prefetched_copy(tmp_path):
    prefetch, name, data = tmp_path / "p", "000000010000000000000005", b"wal" * 1000
    sha = hashlib.sha256(data).hexdigest()
    _prefetched(prefetch, name, data)
    assert serve_prefetched(str(prefetch), name, str(tmp_path / "d"), object_sha256=sha, object_size=10)
    assert (tmp_path / "d").read_bytes() == data and os.listdir(prefetch) == []
    _prefetched(prefetch, name, data)                       # the archive's object is another one now
    assert not serve_prefetched(str(prefetch), name, str(tmp_path / "e"), object_sha256="0" * 64,
                                    object_size=10)
    assert not (tmp_path / "e").exists() and os.listdir(prefetch) == []
    _prefetched(prefetch, name, data)
    (prefetch / name).write_bytes(b"x" + data[1:])          # damaged on disk
    assert not serve_prefetched(str(prefetch), name, str(tmp_path / "e"), object_sha256=sha, object_size=10)
    assert os.listdir(prefetch) == []
    _prefetched(prefetch, name, data, verified_at=time.time() - 3600)   # S3 fast path: checked too long ago
    assert not serve_prefetched(str(prefetch), name, str(tmp_path / "e"), trust_seconds=60)
    assert sorted(os.listdir(prefetch)) == [name, f"{name}.json"]      # kept for the full path to check
    _prefetched(prefetch, name, data)
    assert serve_prefetched(str(prefetch), name, str(tmp_path / "e"), trust_seconds=60)


def test_fast_fetch_serves_a_matching_prefetched_copy_from_a_local_repository(tmp_path, fast_env):
    cfg, settings, spool = fast_env
    name, data = "000000010000000000000007", b"segment" * 500
    storage = LocalStorage(str(tmp_path / "repo"), "pre")
    storage.put_bytes(f"main/wal/00000001/{name}.zst.gpg", b"ciphertext",
                      PutOptions(metadata={"pgb-sha256": hashlib.sha256(data).hexdigest()}), overwrite=False)
    _prefetched(tmp_path / "spool" / os.path.basename(spool.root) / "prefetch", name, data, object_size=10)
    (tmp_path / "spool" / os.path.basename(spool.root) / "prefetcher.lock").touch()
    import fcntl

    with open(os.path.join(spool.root, "prefetcher.lock")) as held:     # a prefetcher runs: none is started
        fcntl.flock(held, fcntl.LOCK_EX)
        assert fastpath.fast_main(["--config", str(cfg), "wal-fetch", name, str(tmp_path / "dest")]) == 0
    assert (tmp_path / "dest").read_bytes() == data
    assert open(os.path.join(spool.prefetch, "want")).read() == name


def test_the_fast_path_imports_no_heavy_module(tmp_path):
    code = ("import sys; import pg_backup.wal.fast as w; w.fast_main(['--config', '/nonexistent', 'wal-push', 'x']); "
            "heavy = [m for m in ('yaml', 'boto3', 'botocore', 'zstandard', 'psycopg', 'pg_backup.config', "
            "'pg_backup.cli', 'argparse') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_segment_header_and_pg_control(tmp_path):
    header = struct.pack("<HHIQI4xQII", 0xD110, 0x0002 | 0x0004, 1, 0x3000000, 0, 7300000000000000001, 16 << 20, 8192)
    seg = tmp_path / "000000010000000000000003"
    seg.write_bytes(header + bytes(100))
    assert read_segment_header(str(seg)) == (7300000000000000001, 16 << 20, 8192)
    seg.write_bytes(struct.pack("<HH", 0xD110, 0) + bytes(100))     # a short header: no identity
    assert read_segment_header(str(seg)) is None
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "pg_control").write_bytes(struct.pack("<Q", 42) + bytes(100))
    assert read_control_sysid(str(tmp_path)) == 42
    assert datadir_of(str(tmp_path / "pg_wal")) == str(tmp_path)


# -- local backend metadata --------------------------------------------------------------------------

def test_local_metadata_in_an_extended_attribute(tmp_path):
    s = LocalStorage(str(tmp_path))
    s.put_bytes("c/wal/k", b"data", PutOptions(metadata={"pgb-sha256": "ab"}), overwrite=False)
    assert s.head("c/wal/k").metadata == {"pgb-sha256": "ab"}
    assert [o.key for o in s.list("c/")] == ["c/wal/k"]
    with pytest.raises(FileExistsError):
        s.put_bytes("c/wal/k", b"other", PutOptions(metadata={"pgb-sha256": "cd"}), overwrite=False)
    assert s.head("c/wal/k").metadata == {"pgb-sha256": "ab"} and s.get_bytes("c/wal/k") == b"data"


def test_local_metadata_falls_back_to_a_sidecar_without_xattrs(tmp_path, monkeypatch):
    def refuse(*_a, **_k):
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(objmeta.os, "setxattr", refuse)
    monkeypatch.setattr(objmeta.os, "getxattr", refuse)
    s = LocalStorage(str(tmp_path))
    s.put_stream("c/wal/k", [b"da", b"ta"], PutOptions(metadata={"pgb-sha256": "ab"}), overwrite=False)
    assert (tmp_path / "c" / "wal" / "k.pgb-meta").exists()
    assert s.head("c/wal/k").metadata == {"pgb-sha256": "ab"}
    assert [o.key for o in s.list("c/")] == ["c/wal/k"]       # the sidecar is not an object
    with pytest.raises(FileExistsError):                      # and an existing object keeps its sidecar
        s.put_bytes("c/wal/k", b"x", PutOptions(metadata={"pgb-sha256": "zz"}), overwrite=False)
    assert s.head("c/wal/k").metadata == {"pgb-sha256": "ab"}
    s.delete(["c/wal/k"])
    assert not (tmp_path / "c").exists()


# -- encoding -------------------------------------------------------------------------------------------

@pytest.fixture
def gpg(tmp_path):
    p = tmp_path / "pass"
    p.write_text("correct horse battery staple\n")
    os.chmod(p, 0o600)
    g = GnuPG(EncryptionSettings(mode="passphrase", passphrase_file=str(p)))
    yield g
    g.close()


@pytest.mark.parametrize("spill_over", [64 << 20, 1000])   # ciphertext in memory / in a spill file
def test_encode_file_round_trip(tmp_path, gpg, spill_over):
    data = os.urandom(300_000) + bytes(700_000)
    src = tmp_path / "000000010000000000000001"
    src.write_bytes(data)
    spill = tmp_path / "spill"
    spill.mkdir()
    with encode_file(str(src), gpg, 1, what="test", spill_dir=str(spill), spill_over=spill_over) as enc:
        assert enc.sha256 == hashlib.sha256(data).hexdigest() and enc.size == len(data)
        assert (enc.spill is not None) == (spill_over < len(data)) and len(os.listdir(spill)) == (enc.spill is not None)
        s = LocalStorage(str(tmp_path / "repo"))
        s.put_stream("w", enc.chunks(), PutOptions(), overwrite=False)
    assert os.listdir(spill) == []                          # the spill file goes with it
    back = b"".join(iter_plaintext(s, "w", gpg, gpg.encryption_fingerprint(), what="test"))
    assert back == data
    assert s.head("w").size < len(data)                      # compressed before encryption
    plain_zst = tmp_path / "w.zst"
    subprocess.run(["gpg", "--homedir", gpg.home, "--batch", "--quiet", "--pinentry-mode", "loopback",
                    "--passphrase-file", gpg.settings.passphrase_file, "--output", str(plain_zst), "--decrypt",
                    os.path.join(s.root, "w")], check=True, capture_output=True)
    frame = subprocess.run(["zstd", "-lv", str(plain_zst)], capture_output=True, text=True)
    assert "XXH64" in frame.stdout + frame.stderr            # a frame checksum for stock zstd


def test_encode_file_leaves_no_spill_file_when_it_fails(tmp_path, gpg):
    spill = tmp_path / "spill"
    spill.mkdir()
    with pytest.raises(OSError):
        encode_file(str(tmp_path / "missing"), gpg, 1, what="test", spill_dir=str(spill), spill_over=1)
    assert os.listdir(spill) == []


def test_fetch_to_is_a_plain_verified_fetch(tmp_path):
    from pg_backup.context import Context
    from pg_backup.errors import IntegrityError, NotFoundError
    from pg_backup.wal.archive import META_KEY, META_SHA256, META_SIZE
    from pg_backup.wal.fetch import fetch_to

    (tmp_path / "pass").write_text("secret\n")
    os.chmod(tmp_path / "pass", 0o600)
    settings, problems = config_mod.parse({
        "cluster": "c", "repository": {"type": "local", "path": str(tmp_path / "r")},
        "encryption": {"mode": "passphrase", "passphrase_file": str(tmp_path / "pass")},
        "paths": {"state_dir": str(tmp_path / "state")}})
    assert not problems
    ctx = Context(settings)
    try:
        name, data = "000000010000000000000004", os.urandom(1000) + bytes(5000)
        (tmp_path / name).write_bytes(data)
        with encode_file(str(tmp_path / name), ctx.gpg, 1, what="test") as enc:
            meta = {META_SHA256: enc.sha256, META_SIZE: str(enc.size), META_KEY: ctx.gpg.encryption_fingerprint()}
            ctx.storage.put_stream(ctx.wal_archive.key_for(name), enc.chunks(), PutOptions(metadata=meta),
                                   overwrite=False)
        info = fetch_to(ctx, name, str(tmp_path / "dest"))
        assert (tmp_path / "dest").read_bytes() == data and info.size < len(data)
        assert not (tmp_path / "state").exists()              # no spool, no prefetcher
        with pytest.raises(NotFoundError, match="000000010000000000000005 is not in the archive"):
            fetch_to(ctx, "000000010000000000000005", str(tmp_path / "other"))
        wrong = {**meta, META_SHA256: "0" * 64}
        ctx.storage.put_bytes(ctx.wal_archive.key_for("000000010000000000000006"),
                              ctx.storage.get_bytes(ctx.wal_archive.key_for(name)), PutOptions(metadata=wrong),
                              overwrite=False)
        with pytest.raises(IntegrityError):
            fetch_to(ctx, "000000010000000000000006", str(tmp_path / "bad"))
        assert not (tmp_path / "bad").exists() and sorted(os.listdir(tmp_path)) == sorted(
            ["pass", "r", name, "dest"])                         # nothing half written left behind
    finally:
        ctx.close()


def test_atomic_write_replaces_whole_files_and_cleans_up(tmp_path, monkeypatch):
    from pg_backup import files

    target = tmp_path / "f"
    files.atomic_write(str(target), b"one")
    files.atomic_write(str(target), b"two", durable=True)
    assert target.read_bytes() == b"two" and oct(target.stat().st_mode & 0o777) == "0o600"

    def refuse(*_a):
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OSError):
        files.atomic_write(str(target), b"three")
    assert os.listdir(tmp_path) == ["f"] and target.read_bytes() == b"two"
    files.unlink_quietly(str(tmp_path / "missing"))


def test_worker_main_rejects_bad_arguments(capsys):
    assert worker_main(["_upload", "/c.yml"]) == 2
    assert "usage" in capsys.readouterr().err


def test_conflict_records_are_human_lines():
    from pg_backup.wal.archive import WalConflict

    c = WalConflict("c/wal/conflicts/x.json", "000000010000000000000001", "different content",
                    "2026-11-25T00:00:00.000000Z", "db1")
    assert str(c) == ("000000010000000000000001: different content from db1 at 2026-11-25T00:00:00.000000Z "
                      "(record c/wal/conflicts/x.json)")
    assert json.loads(json.dumps({"c": str(c)}))
