"""One archive of the base backup stream stored as size-bounded parts.

A restore extracts the parts of an archive in parallel (recovery/untar.py), where one object would
be one gpg -> zstd -> tar stream. A part ends at the first place after ``physical.archive_part_mib``
where the stream may be cut (tarstream.Cursor.cuttable: between entries, or inside a regular file's
data, so a file larger than a part, such as a 1 GB relation segment, is spread over parts too).
The parts are consecutive byte ranges of the server's stream: decrypted, decompressed and
concatenated in order they are that stream exactly.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..errors import PostgresError
from ..tarstream import Cursor, Resume

READ_SIZE = 1 << 20


class TarPart:
    """A file-like reader of one part (``readinto``/``read``): b"" at the part's end."""

    def __init__(self, splitter: "TarSplitter", index: int, offset: int, resume: Optional[Resume]):
        self.splitter, self.index, self.offset, self.resume = splitter, index, offset, resume
        self.size = 0
        self.ended = False

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        n = self.splitter.fill(self, view)
        self.size += n
        return n

    def read(self, size: int = -1) -> bytes:
        buf = bytearray(size if size and size > 0 else READ_SIZE)
        return bytes(buf[:self.readinto(buf)])

    def record(self) -> Dict[str, Any]:
        """What the manifest keeps of this part (layout.part_records)."""
        return {"index": self.index, "offset": self.offset, "size": self.size,
                "resume": self.resume.as_dict() if self.resume else None}


class TarSplitter:
    """Reads one archive of the stream (``source.read`` until b"") as parts of about ``part_size``
    bytes (0: one part). Use: ``while (part := splitter.next_part()) is not None``, reading each part
    to its end before asking for the next. The first call always returns a part (an archive is
    stored even when empty)."""

    def __init__(self, source: Any, part_size: int, what: str):
        self.source, self.part_size, self.what = source, part_size, what
        self.cursor = Cursor(what)
        self.buf = memoryview(b"")
        self.eof = False
        self.offset = 0
        self.parts: List[TarPart] = []

    def next_part(self) -> Optional[TarPart]:
        if self.parts:
            if not self.parts[-1].ended:
                raise RuntimeError("the previous part was not read to its end")
            if not self._more():
                if not self.cursor.finished_cleanly():
                    raise PostgresError(f"{self.what}: the server's archive ended inside an entry")
                return None
        part = TarPart(self, len(self.parts) + 1, self.offset, self.cursor.resume())
        self.parts.append(part)
        return part

    def _more(self) -> bool:
        if not self.buf and not self.eof:
            data = self.source.read(READ_SIZE)
            self.buf = memoryview(data) if data else memoryview(b"")
            self.eof = not data
        return bool(self.buf)

    def fill(self, part: TarPart, out: memoryview) -> int:
        """Copy the next bytes of ``part`` into ``out``; 0 at its end."""
        if part.ended:
            return 0
        cursor, limit, done = self.cursor, self.part_size, 0
        while done < len(out):
            size = part.size + done
            if limit and size >= limit and cursor.cuttable():
                part.ended = True
                break
            if not self._more():
                if not cursor.finished_cleanly():
                    raise PostgresError(f"{self.what}: the server's archive ended inside an entry")
                part.ended = True
                break
            want = min(len(out) - done, len(self.buf))
            if limit and size < limit:
                want = min(want, limit - size)
            region, n, _entry = cursor.step(self.buf[:want])
            out[done:done + n] = self.buf[:n]
            self.buf = self.buf[n:]
            done += n
        self.offset += done
        return done

    @property
    def split(self) -> bool:
        return len(self.parts) > 1
