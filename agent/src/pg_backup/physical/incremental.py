"""Incremental base backups (PostgreSQL 17+): which backup the next one is incremental to, and the
parent's plaintext ``backup_manifest`` that ``UPLOAD_MANIFEST`` sends.

The parent is the newest physical backup of this cluster in the repository, if it is usable: same
system identifier and timeline as the server, a chain shorter than ``physical.max_chain``, every
member's manifest and objects present, and WAL summaries on the server from its start to now. In
public-key mode the host cannot decrypt the repository, so every physical backup leaves a private
copy (0600) of its ``backup_manifest`` in the state directory, whose SHA-256 its repository manifest
records (``extra.backup_manifest_sha256``); a copy that does not match is never sent. Where a
configured key can decrypt the repository (passphrase mode, or a host with the private key) a
missing copy is fetched from the repository instead.

``auto`` takes a full backup when no parent is usable and says why; ``always`` refuses (exit 2).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, BinaryIO, Dict, List, Optional

from ..errors import PgBackupError, UsageError
from ..files import unlink_quietly
from ..manifest import ChainInfo, Manifest
from ..pipeline import iter_plaintext
from ..postgres.summarizer import SummarizerState, describe_range, first_gap, summarizer_state
from ..wal.names import parse_lsn
from .layout import BACKUP_MANIFEST_OBJECT
from .stream import MIN_INCREMENTAL_MAJOR

SHA_KEY = "backup_manifest_sha256"      # in Manifest.extra: SHA-256 of the plaintext backup_manifest
MODES = ("never", "auto", "always")


@dataclass
class Decision:
    """What the next physical backup is: incremental to ``parent`` (with ``manifest_path`` to upload),
    or full, with ``reason`` saying why when an incremental one was asked for."""

    mode: str
    parent: Optional[Manifest] = None
    manifest_path: Optional[str] = None
    reason: str = ""
    temporary: bool = False            # manifest_path was fetched for this backup: remove it afterwards

    @property
    def incremental(self) -> bool:
        return self.parent is not None

    def chain(self) -> ChainInfo:
        parent = self.parent
        assert parent is not None
        members = parent.chain_ids()
        return ChainInfo(parent=parent.backup_id, root=members[0], members=members,
                         parent_stop_lsn=parent.stop_lsn or "", depth=len(members))

    def cleanup(self) -> None:
        if self.temporary and self.manifest_path:
            unlink_quietly(self.manifest_path)


class Unusable(Exception):
    """No parent can be used; the message says why (one clause, no trailing period)."""


def requested_mode(configured: str, *, incremental_flag: bool, full_flag: bool) -> str:
    """The mode of this run: ``--full`` forces a full backup, ``--incremental`` asks for one (``auto``,
    or ``always`` when configured so), otherwise ``physical.incremental``."""
    if incremental_flag and full_flag:
        raise UsageError("--incremental and --full contradict each other; pass one of them")
    if full_flag:
        return "never"
    if incremental_flag:
        return "always" if configured == "always" else "auto"
    return configured


def decide(ctx: Any, mode: str, server_major: int, server_version: str, system_identifier: Optional[str],
           manifests: List[Manifest]) -> Decision:
    """Choose the parent of the next physical backup; with ``always`` an unusable one raises UsageError."""
    if mode == "never":
        return Decision(mode)
    try:
        return _decide(ctx, mode, server_major, server_version, system_identifier, manifests)
    except Unusable as why:
        if mode == "always":
            raise UsageError(f"cannot take an incremental backup: {why}",
                             hint="take a full backup (backup --physical --full) or set physical.incremental "
                                  "to auto") from None
        return Decision(mode, reason=str(why))


def _decide(ctx: Any, mode: str, major: int, version: str, sysid: Optional[str],
            manifests: List[Manifest]) -> Decision:
    if major < MIN_INCREMENTAL_MAJOR:
        raise Unusable(f"PostgreSQL {version} has no incremental base backups (they need {MIN_INCREMENTAL_MAJOR} "
                       f"or newer)")
    with ctx.pg.connect() as conn:
        state = summarizer_state(conn, major, with_summaries=True)
    if not state.enabled:
        raise Unusable("summarize_wal is off on the server (set summarize_wal = on, which the wal_archiving role "
                       "does on PostgreSQL 17+, and reload)")
    physical = [m for m in manifests if m.kind == "physical"]
    if not physical:
        raise Unusable(f"there is no physical backup of cluster {ctx.cluster} to be incremental to")
    parent = physical[-1]
    where = f"the newest physical backup {parent.backup_id}"
    if parent.system_identifier and sysid and parent.system_identifier != sysid:
        raise Unusable(f"{where} is of another database cluster (system identifier {parent.system_identifier}, "
                       f"this server {sysid})")
    if state.timeline is not None and parent.timeline != state.timeline:
        raise Unusable(f"{where} is on timeline {parent.timeline}, the server on timeline {state.timeline} (a "
                       f"promotion or point-in-time recovery since)")
    depth = parent.incremental.depth if parent.incremental else 0
    limit = ctx.settings.physical.max_chain
    if depth >= limit:
        return Decision(mode, reason=f"the chain of {parent.chain_ids()[0]} has reached physical.max_chain "
                                     f"({limit} incremental backup(s)): a new chain starts")
    check_chain_present(ctx, parent, {m.backup_id: m for m in manifests})
    check_summaries(state, parent)
    path, temporary = parent_manifest(ctx, parent)
    return Decision(mode, parent=parent, manifest_path=path, temporary=temporary)


def check_chain_present(ctx: Any, newest: Manifest, by_id: Dict[str, Manifest]) -> None:
    """Every member of ``newest``'s chain has its manifest and every object it lists (a member pruned
    or damaged out of band would make the new backup unrestorable)."""
    for backup_id in newest.chain_ids():
        member = by_id.get(backup_id)
        if member is None:
            raise Unusable(f"the chain of {newest.backup_id} is broken: member {backup_id} is not in the "
                           f"repository (removed out of band?)")
        present = {o.key.rsplit("/", 1)[-1]: o.size for o in ctx.storage.list(ctx.repo.backup_prefix(backup_id))}
        for obj in member.objects:
            if present.get(obj.name) != obj.size:
                state = "missing" if obj.name not in present else f"{present[obj.name]} bytes, not {obj.size}"
                raise Unusable(f"object {backup_id}/{obj.name} of the chain of {newest.backup_id} is {state}")


def check_summaries(state: SummarizerState, parent: Manifest) -> None:
    """The server keeps WAL summaries from the parent's start to where the summarizer is."""
    if state.error:
        return  # the functions cannot be read by this role: the server itself checks at BASE_BACKUP
    start = parse_lsn(parent.start_lsn or "0/0")
    end = state.summarized_lsn if state.summarized_tli == state.timeline and state.summarized_lsn else start
    gap = first_gap(state.summaries, start, end)
    if gap is not None:
        raise Unusable(f"the server has no WAL summaries for {describe_range(gap)} on timeline {state.timeline}, "
                       f"which an incremental backup to {parent.backup_id} (started at {parent.start_lsn}) needs "
                       f"(removed, older than wal_summary_keep_time = {state.keep_time}, or summarize_wal was off)")


# -- the parent's backup_manifest ------------------------------------------------------------------

def local_dir(ctx: Any) -> str:
    return os.path.join(ctx.settings.backup_manifests_path, ctx.cluster)


def local_path(ctx: Any, backup_id: str) -> str:
    return os.path.join(local_dir(ctx), f"{backup_id}.backup_manifest")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parent_manifest(ctx: Any, parent: Manifest) -> "tuple[str, bool]":
    """(path of the parent's plaintext backup_manifest, whether it is a temporary copy)."""
    expected = parent.extra.get(SHA_KEY)
    path = local_path(ctx, parent.backup_id)
    if os.path.exists(path):
        if expected and file_sha256(path) == expected:
            return path, False
        if expected:
            raise Unusable(f"the local copy {path} of the backup_manifest of {parent.backup_id} does not match the "
                           f"SHA-256 its manifest records (another repository's, or damaged)")
    fingerprint = parent.encryption.fingerprint
    try:
        readable = fingerprint in ctx.gpg.available_fingerprints()
    except PgBackupError:
        readable = False
    if not readable:
        raise Unusable(f"this host has no copy of the backup_manifest of {parent.backup_id} in "
                       f"{local_dir(ctx)} (taken on another host, or the state directory was reset) and cannot "
                       f"decrypt it from the repository (public-key mode)")
    obj = parent.object_named(BACKUP_MANIFEST_OBJECT)
    os.makedirs(local_dir(ctx), mode=0o700, exist_ok=True)
    tmp = os.path.join(local_dir(ctx), f".{parent.backup_id}.fetched-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            for block in iter_plaintext(ctx.storage, ctx.repo.object_key(parent.backup_id, obj.name), ctx.gpg,
                                        fingerprint, what=f"{parent.backup_id}/{obj.name}",
                                        expected_sha256=obj.sha256):
                fh.write(block)
        if expected and file_sha256(tmp) != expected:
            raise Unusable(f"the backup_manifest of {parent.backup_id} in the repository does not match the SHA-256 "
                           f"its manifest records")
    except BaseException:
        unlink_quietly(tmp)
        raise
    return tmp, True


class ManifestCopy:
    """The plaintext backup_manifest of the backup being taken, teed into a private file while it is
    stored (:meth:`reader`); :meth:`keep` makes it the parent of the next incremental backup once the
    backup is committed and removes older copies, :meth:`discard` drops it."""

    def __init__(self, ctx: Any, backup_id: str, *, keep_copy: bool):
        self.ctx, self.backup_id = ctx, backup_id
        self.digest = hashlib.sha256()
        self.path: Optional[str] = None
        self._fh: Optional[BinaryIO] = None
        if keep_copy:
            try:
                os.makedirs(local_dir(ctx), mode=0o700, exist_ok=True)
                self.path = os.path.join(local_dir(ctx), f".{backup_id}.partial")
                self._fh = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
            except OSError as exc:  # the backup itself does not need it: the next incremental one will say so
                self.path = None
                ctx.progress.warn(f"cannot keep a copy of the backup_manifest in {local_dir(ctx)} ({exc.strerror}): "
                                  f"the next incremental backup cannot use this one as its parent on a public-key "
                                  f"host")

    def reader(self, source: Any) -> "_TeeReader":
        return _TeeReader(source, self)

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()

    def keep(self) -> Optional[str]:
        """After the commit: the copy under its final name (older ones removed); its path, or None."""
        if self._fh is None or self.path is None:
            return None
        final = local_path(self.ctx, self.backup_id)
        try:
            self._fh.close()
            os.replace(self.path, final)
            for name in os.listdir(local_dir(self.ctx)):
                if name.endswith(".backup_manifest") and name != os.path.basename(final):
                    unlink_quietly(os.path.join(local_dir(self.ctx), name))
        except OSError as exc:  # committed already: the backup stands, only the next incremental one is affected
            self.ctx.progress.warn(f"cannot keep the backup_manifest of {self.backup_id} in {local_dir(self.ctx)} "
                                   f"({exc.strerror}); the next incremental backup cannot use it as its parent "
                                   f"on a public-key host")
            return None
        finally:
            self._fh = None
        return final

    def discard(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
        if self.path:
            unlink_quietly(self.path)


class _TeeReader:
    def __init__(self, source: Any, copy: ManifestCopy):
        self._source, self._copy = source, copy

    def read(self, size: int = -1) -> bytes:
        block = self._source.read(size)
        if block:
            self._copy.digest.update(block)
            if self._copy._fh is not None:
                try:
                    self._copy._fh.write(block)
                except OSError as exc:  # e.g. a full state directory: the backup goes on without the copy
                    self._copy.discard()
                    self._copy.ctx.progress.warn(f"cannot keep a copy of the backup_manifest ({exc.strerror}); the "
                                                 f"next incremental backup cannot use this one as its parent on a "
                                                 f"public-key host")
        return block
