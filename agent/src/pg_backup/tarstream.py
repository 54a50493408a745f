"""The tar stream of a base backup, read as entries: what the backup's splitter (physical/tarsplit.py)
and the restore's extractor (recovery/untar.py) agree on.

PostgreSQL's ``BASE_BACKUP`` sends each archive as a stream of POSIX ustar entries: a 512-byte header,
then the entry's data padded to a multiple of 512 bytes. The server writes regular files, directories
and symbolic links (and no end-of-archive blocks: ``pg_basebackup`` adds them). A physical backup may
store one archive as several *parts*: consecutive byte ranges of that stream, each cut either between
two entries or inside a regular file's data, so ``cat`` of the decrypted, decompressed parts in order
is the server's stream byte for byte (what the stock-tool recipe in docs/pitr.md relies on). A part cut
inside a file starts with a :class:`Resume`: which file, at which offset, and how much of its data
follows before the part reaches the next header.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from .errors import IntegrityError

BLOCK = 512
REGULAR = (b"0", b"\0", b"7")      # regular file (7: contiguous file, stored as a regular one)
DIRECTORY = b"5"
SYMLINK = b"2"
#: Headers that describe the next entry (pax extended, GNU long name/link). PostgreSQL writes none;
#: the splitter never cuts between one and its entry, the extractor refuses them.
EXTENSIONS = (b"x", b"g", b"L", b"K")


@dataclass
class Entry:
    """One parsed header."""

    name: str
    type: bytes
    size: int           # bytes of data that follow the header (before padding)
    mode: int
    mtime: int
    linkname: str

    @property
    def padded(self) -> int:
        return -self.size % BLOCK


def _number(field: bytes, what: str) -> int:
    """A numeric header field: octal text, or GNU base-256 for values too large for it."""
    if field[:1] and field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise IntegrityError(f"{what}: a tar header field is not a number ({field!r})") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", errors="surrogateescape")


def parse_header(block: bytes, what: str) -> Optional[Entry]:
    """The entry of a 512-byte header; None for an all-zero block (the end of the archive)."""
    if len(block) != BLOCK:
        raise IntegrityError(f"{what}: the archive ends inside a tar header")
    if not any(block):
        return None
    stored = _number(block[148:156], what)
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored != computed:
        raise IntegrityError(f"{what}: a tar header's checksum does not match: not a tar stream, or damaged")
    name = _text(block[0:100])
    if block[257:262] == b"ustar" and block[345:346] != b"\0":
        name = _text(block[345:500]) + "/" + name
    return Entry(name=name, type=block[156:157], size=_number(block[124:136], what),
                 mode=_number(block[100:108], what), mtime=_number(block[136:148], what),
                 linkname=_text(block[157:257]))


@dataclass
class Resume:
    """Where a part cut inside a regular file's data starts: ``size - at`` bytes of the file at
    ``path`` (the tar name) from offset ``at``, then the file's padding, then the next header."""

    path: str
    size: int
    at: int

    def as_dict(self) -> Dict[str, Any]:
        return {"path": self.path, "size": self.size, "at": self.at}

    @classmethod
    def from_dict(cls, raw: Optional[Dict[str, Any]], what: str) -> Optional["Resume"]:
        if raw is None:
            return None
        try:
            resume = cls(str(raw["path"]), int(raw["size"]), int(raw["at"]))
        except (KeyError, TypeError, ValueError):
            raise IntegrityError(f"{what}: the manifest's part record is not valid ({raw!r})") from None
        if not 0 <= resume.at < resume.size:
            raise IntegrityError(f"{what}: the manifest's part record is not valid ({raw!r})")
        return resume


class Cursor:
    """Where a byte stream of tar entries is: in a header, in an entry's data, or in its padding.

    :meth:`step` consumes at most one region's worth of a buffer and says what it was; the callers
    do what their side needs with it (the splitter counts and cuts, the extractor writes files)."""

    HEADER, DATA, PAD, TRAILER = "header", "data", "pad", "trailer"

    def __init__(self, what: str, resume: Optional[Resume] = None):
        self.what = what
        self.header = bytearray()
        self.entry: Optional[Entry] = None
        self.left = 0                      # bytes left in the current data or padding region
        self.state = self.HEADER
        self.bound = False                 # the last header describes the next entry (pax, long name)
        if resume is not None:
            self.entry = Entry(resume.path, REGULAR[0], resume.size, 0o600, 0, "")
            self.left = resume.size - resume.at
            self.state = self.DATA

    def cuttable(self) -> bool:
        """A part may end here: between entries, or inside a regular file's data."""
        if self.state == self.HEADER:
            return not self.header and not self.bound
        return self.state == self.DATA and self.entry is not None and self.entry.type in REGULAR and self.left > 0

    def resume(self) -> Optional[Resume]:
        """What a part starting here must know (None between entries)."""
        if self.state == self.DATA and self.entry is not None:
            return Resume(self.entry.name, self.entry.size, self.entry.size - self.left)
        return None

    def step(self, view: memoryview) -> "tuple[str, int, Optional[Entry]]":
        """Consume from the start of ``view``: (region, bytes consumed, entry). ``region`` is
        ``header`` (``entry`` is set once its 512 bytes are complete, else None), ``data``, ``pad``
        or ``trailer`` (everything after the end-of-archive blocks)."""
        if self.state == self.TRAILER:
            return self.TRAILER, len(view), None
        if self.state == self.HEADER:
            n = min(len(view), BLOCK - len(self.header))
            self.header += view[:n]
            if len(self.header) < BLOCK:
                return self.HEADER, n, None
            entry = parse_header(bytes(self.header), self.what)
            self.header.clear()
            if entry is None:
                self.state = self.TRAILER
                return self.HEADER, n, None
            self.entry, self.bound = entry, entry.type in EXTENSIONS
            self._after_header()
            return self.HEADER, n, entry
        n = min(len(view), self.left)
        region = self.state
        self.left -= n
        if self.left == 0:
            if self.state == self.DATA and self.entry is not None and self.entry.padded:
                self.state, self.left = self.PAD, self.entry.padded
            else:
                self.state = self.HEADER
        return region, n, None

    def _after_header(self) -> None:
        assert self.entry is not None
        if self.entry.size:                 # data follows (a directory or link has none)
            self.state, self.left = self.DATA, self.entry.size
        else:
            self.state = self.HEADER

    def finished_cleanly(self) -> bool:
        """The stream ended between entries (or after the end-of-archive blocks)."""
        return self.state in (self.HEADER, self.TRAILER) and not self.header
