"""The prefetcher a recovery starts before its server (``prefetch_for_recovery``, called by pitr, verify
--restore and drill): the first segments PostgreSQL will ask for are decrypted into the spool ahead,
and served only as long as they match the archive (a real PostgreSQL 15 archive, the real prefetcher
process, wal-fetch through the CLI)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import VENV_BIN, as_pg_user
from pgb_wal_support import enable_archiving, switch_segments, wait_archived, wait_for

pytestmark = pytest.mark.integration

WARM = ("import sys; from pg_backup import config; from pg_backup.context import Context; "
        "from pg_backup.progress import Progress; from pg_backup.wal.fetch import prefetch_for_recovery; "
        "ctx = Context(config.load(sys.argv[1]), Progress(quiet=True)); "
        "print(prefetch_for_recovery(ctx, sys.argv[2], sys.argv[1])); ctx.close()")


def test_a_recovery_warms_the_spool_before_its_server_starts(make_cluster, workdir, write_config, run_agent):
    cluster = make_cluster("15", archive_mode="on", archive_command="", wal_level="replica")
    cfg = write_config(workdir, "warm", cluster=cluster, wal={"fetch_prefetch": 3})
    try:
        enable_archiving(cluster, cfg)
        names = switch_segments(cluster, 4, rows=20000)
        wait_archived(cluster, names[-1])
        original = {n: (cluster.datadir / "pg_wal" / n).read_bytes() for n in names}
        # pitr gives restore_command a configuration file of its own, new to the fast path (a copy here).
        recovery_cfg = workdir / "recovery.yml"
        shutil.copy2(cfg, recovery_cfg)
        shutil.copystat(cfg, recovery_cfg)
        os.chown(recovery_cfg, os.stat(cfg).st_uid, os.stat(cfg).st_gid)
        out = subprocess.run(as_pg_user([VENV_BIN / "python", "-c", WARM, recovery_cfg, names[0]]),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
        # restore_command's first call (the next timeline's history file, absent) is answered by the fast
        # path at once: the recovery's configuration is known to it before the server starts.
        probe = subprocess.run(as_pg_user([VENV_BIN / "python", "-X", "importtime", "-m", "pg_backup", "--config",
                                           recovery_cfg, "--quiet", "wal-fetch", "00000002.history", str(workdir / "h")]),
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode == 7 and not (workdir / "h").exists(), probe.stderr
        assert "| yaml" not in probe.stderr and "pg_backup.cli" not in probe.stderr   # the CLI never loaded
        spool = workdir / "state" / "wal-spool"
        prefetch = spool / os.listdir(spool)[0] / "prefetch"
        # The first segment itself (the recovery's start) and the ones after it, up to the depth.
        wait_for(lambda: all((prefetch / n).exists() for n in names[:3]), 60, what="the first three segments")
        assert not (prefetch / names[3]).exists()           # bounded: fetch_prefetch segments ahead, no more
        first = run_agent(cfg, "wal-fetch", names[0], str(workdir / "0")).data
        assert first["source"] == "prefetched" and (workdir / "0").read_bytes() == original[names[0]]
        with open(prefetch / names[1], "r+b") as fh:          # damaged in the spool: never served
            fh.seek(4096)
            fh.write(b"\x00\xff\x00")
        second = run_agent(cfg, "wal-fetch", names[1], str(workdir / "1")).data
        assert second["source"] == "archive" and (workdir / "1").read_bytes() == original[names[1]]
        missing = run_agent(cfg, "wal-fetch", "0000000100000000000000F0", str(workdir / "x"), check=False)
        assert missing.rc == 7 and not (workdir / "x").exists()
    finally:
        cluster.destroy()
