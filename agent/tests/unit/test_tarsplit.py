"""An archive of the base backup stream stored as parts (physical/tarsplit.py) and extracted part by part,
in any order and in parallel, in this process (recovery/untar.py): real tar streams made by Python's
tarfile in the server's format (ustar, no end-of-archive blocks), compared file by file with the tree
they came from, and with what GNU tar extracts from the concatenated parts."""
from __future__ import annotations

import io
import os
import random
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from pg_backup.errors import IntegrityError, PostgresError
from pg_backup.manifest import StoredObject
from pg_backup.physical.layout import archive_parts, part_name, split_records
from pg_backup.physical.tarsplit import TarSplitter
from pg_backup.recovery.untar import Deferred, TarWriter
from pg_backup.tarstream import Resume

SIZES = [0, 1, 511, 512, 513, 8192, 3 * 1024 * 1024 + 17, 700 * 1024, 5 * 1024 * 1024]


def _tree(root: Path) -> Path:
    rng = random.Random(7)
    src = root / "src"
    (src / "base" / "5").mkdir(parents=True)
    (src / "global").mkdir()
    (src / "pg_wal" / "archive_status").mkdir(parents=True)
    for i, size in enumerate(SIZES):
        (src / "base" / "5" / f"{16384 + i}").write_bytes(rng.randbytes(size))
    (src / "global" / "pg_control").write_bytes(rng.randbytes(8192))
    (src / "PG_VERSION").write_text("17\n")
    os.chmod(src / "PG_VERSION", 0o640)
    os.symlink("/elsewhere/ts", src / "base" / "link")
    return src


def _stream(src: Path, trailer: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(src.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(src)), recursive=False)
    data = buf.getvalue()
    # The server sends no end-of-archive blocks; tarfile pads to a 10 KiB record with zeros
    end = len(data)
    while end >= 512 and not any(data[end - 512:end]):
        end -= 512
    return data if trailer else data[:end]


class _Source:
    """The server's stream: reads of uneven sizes, as CopyData messages come."""

    def __init__(self, data: bytes):
        self.data, self.pos, self.rng = data, 0, random.Random(3)

    def read(self, size: int = -1) -> bytes:
        n = min(size, self.rng.randint(1, 300_000))
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out


def _split(data: bytes, part_size: int):
    splitter = TarSplitter(_Source(data), part_size, "b/base.tar.zst.gpg")
    parts = []
    while (part := splitter.next_part()) is not None:
        chunks = []
        while block := part.read(70_000):
            chunks.append(block)
        parts.append((part, b"".join(chunks)))
    return splitter, parts


def _extract(dest: Path, parts, order) -> None:
    deferred = Deferred()

    def one(i: int) -> None:
        part, data = parts[i]
        writer = TarWriter(str(dest), f"part {i + 1}", deferred, resume=part.resume, last=i == len(parts) - 1)
        view = memoryview(data)
        while view:
            writer.write(view[:65536])
            view = view[65536:]
        writer.close()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, order))
    deferred.apply()


def _same_tree(a: Path, b: Path) -> None:
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*"))
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*"))
    for name in names:
        x, y = a / name, b / name
        if x.is_symlink():
            assert os.readlink(x) == os.readlink(y)
        elif x.is_file():
            assert x.read_bytes() == y.read_bytes(), name
            assert x.stat().st_mode & 0o777 == y.stat().st_mode & 0o777, name
            assert int(x.stat().st_mtime) == int(y.stat().st_mtime), name


@pytest.mark.parametrize("part_size", [256 * 1024, 1024 * 1024, 0])
def test_parts_concatenate_to_the_stream_and_extract_in_any_order(tmp_path, part_size):
    src = _tree(tmp_path)
    data = _stream(src)
    splitter, parts = _split(data, part_size)
    assert b"".join(p for _, p in parts) == data
    if part_size:
        assert len(parts) > 3 and all(len(p) >= part_size for _, p in parts[:-1])
        assert any(part.resume is not None for part, _ in parts), "no part starts inside a file"
        assert all(part.offset == sum(len(p) for _, p in parts[:i]) for i, (part, _) in enumerate(parts))
    else:
        assert len(parts) == 1 and not splitter.split
    order = list(range(len(parts)))
    random.Random(part_size).shuffle(order)
    _extract(tmp_path / "out", parts, order)
    _same_tree(src, tmp_path / "out")
    gnu = tmp_path / "gnu"                       # the stock-tool recipe: the parts concatenated, GNU tar
    gnu.mkdir()
    subprocess.run(["tar", "-x", "-f", "-", "-C", str(gnu)], input=data, check=True)
    _same_tree(gnu, tmp_path / "out")


def test_end_of_archive_blocks_pass_through(tmp_path):
    data = _stream(_tree(tmp_path), trailer=True)
    _, parts = _split(data, 256 * 1024)
    assert b"".join(p for _, p in parts) == data
    _extract(tmp_path / "out", parts, range(len(parts)))
    _same_tree(tmp_path / "src", tmp_path / "out")


def test_a_stream_that_ends_inside_an_entry_is_refused(tmp_path):
    data = _stream(_tree(tmp_path))
    with pytest.raises(PostgresError, match="ended inside an entry"):
        _split(data[:-1000], 256 * 1024)
    _, parts = _split(data, 256 * 1024)
    part, last = parts[-1]
    parts[-1] = (part, last[:len(last) // 2])
    with pytest.raises(IntegrityError, match="truncated"):
        _extract(tmp_path / "out", parts, range(len(parts)))


def _entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = "") -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(data) if kind == tarfile.REGTYPE else 0, link
    raw = info.tobuf(format=tarfile.USTAR_FORMAT)
    return raw + (data + b"\0" * (-len(data) % 512) if kind == tarfile.REGTYPE else b"")


@pytest.mark.parametrize("stream, words", [
    (_entry("../escape"), "with '..'"),
    (_entry("/etc/passwd"), "absolute"),
    (_entry("base/x", tarfile.LNKTYPE, link="base/y"), "type b'1'"),
    (_entry("dev", tarfile.CHRTYPE), "type b'3'"),
    (b"c" + _entry("base/x")[1:], "checksum"),
    (b"\1" * 512, "not a number"),
])
def test_what_the_server_never_sends_is_refused(tmp_path, stream, words):
    writer = TarWriter(str(tmp_path), "b/base.tar.zst.gpg", Deferred())
    with pytest.raises(IntegrityError, match=words.replace("(", r"\(").replace(")", r"\)")):
        writer.write(stream)
    writer.abort()
    assert not list(tmp_path.rglob("*"))


def test_links_are_created_last_so_nothing_is_written_through_one(tmp_path):
    stream = _entry("ts", tarfile.SYMTYPE, link=str(tmp_path / "outside")) + _entry("ts/file", data=b"secret")
    (tmp_path / "outside").mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    deferred = Deferred()
    writer = TarWriter(str(dest), "b/base.tar.zst.gpg", deferred)
    writer.write(stream)
    writer.close()
    with pytest.raises(FileExistsError):
        deferred.apply()                        # ts is a directory by now: the link is not made
    assert not list((tmp_path / "outside").iterdir())


def test_the_manifest_record_of_the_parts(tmp_path):
    src = _tree(tmp_path)
    splitter, parts = _split(_stream(src), 512 * 1024)
    records = split_records("base.tar.zst.gpg", [p.record() for p in splitter.parts])
    assert [r["object"] for r in records][:3] == ["base.tar.zst.gpg", "base.tar.part-0002.zst.gpg",
                                                  "base.tar.part-0003.zst.gpg"]
    objects = [StoredObject(part_name("base.tar.zst.gpg", i), "base", 1, "0", 1) for i in range(1, len(parts) + 1)]
    m = SimpleNamespace(backup_id="b", objects=objects, parts={"base.tar.zst.gpg": records})
    got = archive_parts(m, "base.tar.zst.gpg")
    assert [p.name for p in got] == [o.name for o in objects] and got[-1].last and not got[0].last
    assert [p.resume for p in got] == [part.resume for part, _ in parts]
    assert archive_parts(m, "tablespace-1.tar.zst.gpg")[0].count == 1
    m.parts["base.tar.zst.gpg"] = records[:1] + records[2:]          # a part left out of the record
    with pytest.raises(IntegrityError, match="part 2 record"):
        archive_parts(m, "base.tar.zst.gpg")
    assert Resume.from_dict({"path": "a", "size": 10, "at": 3}, "x") == Resume("a", 10, 3)
    with pytest.raises(IntegrityError):
        Resume.from_dict({"path": "a", "size": 10, "at": 10}, "x")
