"""The local repository: atomic, durable, and never showing half-written objects."""
from __future__ import annotations

import os

import pytest

from pg_backup.errors import NotFoundError, StorageError
from pg_backup.storage.local import LocalStorage


def test_put_stream_is_atomic_when_the_producer_fails(tmp_path):
    storage = LocalStorage(str(tmp_path))

    def chunks():
        yield b"a" * 1000
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError):
        storage.put_stream("c/backups/x/obj", chunks())
    assert storage.head("c/backups/x/obj") is None
    assert list(storage.list("c/")) == []
    assert list(storage.list_incomplete("c/")) == []


def test_debris_of_a_killed_writer_is_listed_as_incomplete_not_as_an_object(tmp_path):
    storage = LocalStorage(str(tmp_path))
    storage.put_bytes("c/backups/x/a", b"done")
    (tmp_path / "c" / "backups" / "x" / "b.tmp-123-abcd").write_bytes(b"half")
    assert [o.key for o in storage.list("c/")] == ["c/backups/x/a"]
    incomplete = list(storage.list_incomplete("c/"))
    assert [u.key for u in incomplete] == ["c/backups/x/b.tmp-123-abcd"]
    storage.abort_incomplete(incomplete[0])
    assert list(storage.list_incomplete("c/")) == []


def test_put_bytes_without_overwrite_refuses_an_existing_key(tmp_path):
    storage = LocalStorage(str(tmp_path))
    storage.put_bytes("k", b"1", overwrite=False)
    with pytest.raises(FileExistsError):
        storage.put_bytes("k", b"2", overwrite=False)
    assert storage.get_bytes("k") == b"1"


def test_delete_removes_empty_directories_but_not_the_root(tmp_path):
    storage = LocalStorage(str(tmp_path), "prefix")
    storage.put_bytes("c/backups/x/a", b"1")
    storage.delete(["c/backups/x/a", "c/backups/x/missing"])
    assert os.path.isdir(tmp_path / "prefix")
    assert not os.path.exists(tmp_path / "prefix" / "c")


def test_missing_object_and_bad_keys(tmp_path):
    storage = LocalStorage(str(tmp_path))
    with pytest.raises(NotFoundError):
        list(storage.iter_chunks("nope"))
    with pytest.raises(StorageError):
        storage.head("../escape")


def test_writes_never_replace_an_object_by_default_and_carry_no_version(tmp_path):
    from pg_backup.errors import EXIT_INTEGRITY
    from pg_backup.storage.base import ObjectExists

    storage = LocalStorage(str(tmp_path))
    stored = storage.put_bytes("c/backups/x/manifest.json", b"{}")
    assert stored == 2 and stored.version_id is None
    with pytest.raises(ObjectExists) as clash:
        storage.put_stream("c/backups/x/manifest.json", iter([b"forged"]))
    assert clash.value.exit_code == EXIT_INTEGRITY and "nothing was overwritten" in str(clash.value)
    assert storage.get_bytes("c/backups/x/manifest.json") == b"{}"
    assert list(storage.list_incomplete("c/")) == []
