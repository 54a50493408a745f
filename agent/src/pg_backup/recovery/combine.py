"""Incremental chains on the way to a data directory: every member checked, extracted into scratch
directories of its own, then ``pg_combinebackup`` writes the full data directory.

An incremental physical backup (PostgreSQL 17+) holds only the blocks changed since its parent; its
manifest names its chain (:class:`pg_backup.manifest.ChainInfo`): the full backup it starts from and
every incremental between. Restoring it means: load and check the chain (:func:`load_chain`); check
the SHA-256 of every object of every member before anything is decrypted (one chain member tampered
with refuses the whole restore, exit 4); decrypt and extract the members in parallel, each into its
own directory with its ``backup_manifest``; run ``pg_combinebackup`` (the server's major; a newer
one otherwise) into an output directory the caller chose (:func:`combine_chain`). The repository is
only read. The tool must be of the backup's own major (18's refuses 17's pg_control). ``--link`` is
used where PostgreSQL 18's pg_combinebackup offers it and the output is on
the members' filesystem: unchanged files are hard-linked from the extracted full backup, so the
space needed is about the members' size plus the blocks reconstructed.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..context import Context
from ..errors import IntegrityError, PostgresError, StorageError
from ..manifest import Manifest
from ..physical.layout import BACKUP_MANIFEST_OBJECT, BASE_OBJECT
from ..pipeline import copy_plaintext_to, iter_plaintext
from ..postgres.tools import require_same_major_tool
from ..progress import PhaseTimer, Progress, human_bytes
from .archives import (Checked, Extraction, archive_extractions, archive_objects, checked_objects, extract_all,
                       restore_workers, run_parallel)
from .durable import Writeback

COMBINE = "pg_combinebackup"
LINK_MAJOR = 18                 # the first pg_combinebackup with --link
NO_SPACE = "No space left on device"


def combine_tool(ctx: Context, manifest: Manifest) -> str:
    """pg_combinebackup of exactly the backup's major (a newer one refuses an older backup's
    pg_control): postgres.server_bin_dir when set, else where the server programs are found."""
    return require_same_major_tool(ctx.settings.postgres, manifest.server_version_num // 10000, COMBINE,
                                   what=f"restoring the incremental backup {manifest.backup_id}")


@dataclass
class ChainFiles:
    """What :func:`combine_chain` did: bytes extracted from the members, whether the final member's
    kept configuration was extracted into the output, which pg_combinebackup ran."""

    restored_bytes: int
    config_extracted: bool
    tool: str
    linked: bool


def space_needed(chain: Sequence[Manifest], downloaded: bool) -> int:
    """Bytes the scratch members take: every archive extracted, plus the stored objects when they
    are downloaded first (S3)."""
    need = sum(o.raw_size for m in chain for o in m.objects if o.role != "config")
    return need + (sum(o.size for m in chain for o in m.objects) if downloaded else 0)


def check_space(ctx: Context, chain: Sequence[Manifest], where: str) -> None:
    """Refuse (exit 5) before anything is fetched when ``where`` cannot even hold the members."""
    downloaded = any(ctx.storage.local_path(ctx.repo.object_key(m.backup_id, o.name)) is None
                     for m in chain for o in m.objects[:1])
    need, free = space_needed(chain, downloaded), shutil.disk_usage(where).free
    if need > free:
        raise StorageError(f"not enough space in {where} to restore {chain[-1].backup_id}: its {len(chain)} chain "
                           f"members need at least {human_bytes(need)} extracted (then the combined data "
                           f"directory), {human_bytes(free)} free; nothing was changed",
                           hint="free space there, or recover into a --data-dir on a larger filesystem")


def _member_objects(m: Manifest) -> List[str]:
    return [n for first in [BASE_OBJECT] + [t["object"] for t in m.tablespaces] for n in archive_objects(m, first)] \
        + [BACKUP_MANIFEST_OBJECT]


def _write_plain(ctx: Context, checked: Checked, m: Manifest, name: str, path: str) -> None:
    storage, key = checked.source(m, name)
    obj = m.object_named(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    size = copy_plaintext_to(iter_plaintext(storage, key, ctx.gpg, m.encryption.fingerprint,
                                            what=f"{m.backup_id}/{name}", expected_sha256=obj.sha256),
                             os.fdopen(fd, "wb"))
    if size != obj.raw_size:
        raise IntegrityError(f"{m.backup_id}/{name}: decompressed to {size} bytes, the manifest says {obj.raw_size}")


def _stage_members(ctx: Context, chain: Sequence[Manifest], checked: Checked, work: str, timer: PhaseTimer,
                   progress: Progress) -> Tuple[List[str], int]:
    """Extract each member into ``work/member-N`` (its tablespaces into ``work/member-N-ts/OID``,
    linked from pg_tblspc as pg_combinebackup expects), with its backup_manifest; all in parallel."""
    dirs, jobs = [], []
    for n, m in enumerate(chain):
        data = os.path.join(work, f"member-{n}")
        os.mkdir(data, 0o700)
        dirs.append(data)
        jobs.extend(archive_extractions(m, BASE_OBJECT, data))
        for ts in m.tablespaces:
            dest = os.path.join(work, f"member-{n}-ts", str(ts["oid"]))
            os.makedirs(dest, mode=0o700)
            jobs.extend(archive_extractions(m, ts["object"], dest))
    # The members are scratch copies, except where pg_combinebackup (18+) may hard-link their files into
    # the output: only then is writing them back now work the final sync does not have to do again.
    restored = extract_all(ctx, checked, jobs, timer, progress,
                           writeback=chain[-1].server_version_num // 10000 >= LINK_MAJOR)
    t0 = time.monotonic()
    run_parallel([lambda m=m, d=d: _write_plain(ctx, checked, m, BACKUP_MANIFEST_OBJECT,  # type: ignore[misc]
                                                os.path.join(d, "backup_manifest")) for m, d in zip(chain, dirs)],
                 restore_workers(ctx.settings))
    timer.add("decrypt_decompress", time.monotonic() - t0)
    for n, (m, data) in enumerate(zip(chain, dirs)):
        for ts in m.tablespaces:
            link = os.path.join(data, "pg_tblspc", str(ts["oid"]))
            os.makedirs(os.path.dirname(link), mode=0o700, exist_ok=True)
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(os.path.join(work, f"member-{n}-ts", str(ts["oid"])), link)
    return dirs, restored


def _run_combine(tool: str, cmd: List[str], chain: Sequence[Manifest], env: Dict[str, str], work: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False, env=env)
    if proc.returncode == 0:
        return
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines()
             if ln.strip() and "--link mode was used" not in ln]
    ended = f"killed by signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 else \
        f"exit code {proc.returncode}"
    detail = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else ended)
    ids = f"{chain[0].backup_id} .. {chain[-1].backup_id}"
    # ENOSPC shows as "No space left on device", or as a short write ("wrote 4096 of 8192").
    full = NO_SPACE in proc.stderr or re.search(r"wrote \d+ of \d+", proc.stderr) is not None
    if full or shutil.disk_usage(work).free < 1 << 20:
        raise StorageError(f"disk full while combining the chain {ids} with {os.path.basename(tool)}: {detail}",
                           hint=f"free space on the filesystem of {os.path.dirname(work)} (it needs the extracted "
                                f"members plus the combined data directory; see docs/pitr.md) and run it again")
    raise PostgresError(f"{os.path.basename(tool)} failed combining the chain {ids} ({len(chain)} backups): {detail}")


def combine_chain(ctx: Context, chain: Sequence[Manifest], work: str, out_dir: str, *, timer: PhaseTimer,
                  progress: Progress, tablespace_out: Optional[Callable[[], Dict[int, str]]] = None,
                  link: bool = True, write_manifest: bool = False, config: bool = False) -> ChainFiles:
    """Check every object of every member of ``chain`` (oldest first), extract the members under
    ``work`` and combine them into ``out_dir`` (which must not exist, or be empty).

    ``tablespace_out()`` is called after every check and extraction succeeded, right before the
    combine, and returns where each tablespace (by oid) of the final member goes; by default they go
    under ``work``. ``link``: hard-link unchanged files when the tool and filesystems allow it.
    ``write_manifest``: let pg_combinebackup write a backup_manifest for the result (deep verify).
    ``config``: extract the final member's kept configuration files into ``out_dir`` when the
    combined data directory has no postgresql.conf. Raises IntegrityError (exit 4) before anything is
    extracted when an object does not match its manifest; StorageError (exit 5) on a full disk;
    PostgresError (exit 6) when pg_combinebackup fails."""
    final = chain[-1]
    major = final.server_version_num // 10000
    tool = combine_tool(ctx, final)
    for m in chain:
        ctx.gpg.require_key(m.encryption.fingerprint, f"backup {m.backup_id}")
    config_obj = next((o.name for o in final.objects if o.role == "config"), None)
    wanted = [(m, name) for m in chain for name in _member_objects(m)]
    if config and config_obj:
        wanted.append((final, config_obj))
    progress.stage(f"restoring incremental backup {final.backup_id}: checking the {len(chain)} backups of its "
                   f"chain ({chain[0].backup_id} .. {final.backup_id})")
    with checked_objects(ctx, wanted, work, "download-", timer, progress) as checked:
        dirs, restored = _stage_members(ctx, chain, checked, work, timer, progress)
        if tablespace_out:
            ts_out = tablespace_out()
        else:
            ts_out = {int(t["oid"]): os.path.join(work, "combined-ts", str(t["oid"])) for t in final.tablespaces}
            os.makedirs(os.path.join(work, "combined-ts"), mode=0o700, exist_ok=True)
        devices = {os.stat(p if os.path.exists(p) else os.path.dirname(p)).st_dev
                   for p in [work, out_dir] + list(ts_out.values())}
        linked = link and major >= LINK_MAJOR and len(devices) == 1
        cmd = [tool, "--no-sync", "-o", out_dir] + (["--link"] if linked else []) + \
            ([] if write_manifest else ["--no-manifest"])
        for t in final.tablespaces:
            cmd.append(f"--tablespace-mapping={os.path.join(work, f'member-{len(chain) - 1}-ts', str(t['oid']))}="
                       f"{ts_out[int(t['oid'])]}")
        progress.stage(f"combining {len(chain)} backups with {tool}{' (hard links)' if linked else ''} into {out_dir}")
        t0 = time.monotonic()
        with Writeback([out_dir] + list(ts_out.values())):     # the output's writeback overlaps the combine
            _run_combine(tool, cmd + dirs, chain, ctx.pg.env(), work)
        timer.add("combine", time.monotonic() - t0)
        extracted = False
        if config and not os.path.exists(os.path.join(out_dir, "postgresql.conf")):
            if config_obj is None:
                raise PostgresError(f"backup {final.backup_id} has no postgresql.conf (it lived outside the data "
                                    f"directory and this backup did not keep it); nothing was changed",
                                    hint="copy a postgresql.conf, pg_hba.conf and pg_ident.conf into the data "
                                         "directory and start it yourself (--no-start), or use a newer backup")
            extract_all(ctx, checked, [Extraction(final, config_obj, out_dir)], timer, progress)
            extracted = True
    return ChainFiles(restored, extracted, tool, linked)
