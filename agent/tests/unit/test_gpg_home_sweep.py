"""Private GnuPG homes of agent processes that died without closing them (SIGKILL, the OOM killer) are
removed by the next agent process, agent and imported secret keys included; a live process's home, another
user's and one without a pid in its name are left alone (crypto.sweep_stale_homes)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from keys import make_keypair
from pg_backup.crypto import GpgHome, sweep_stale_homes


def _agents(home: str) -> list:
    return subprocess.run(["pgrep", "-f", f"gpg-agent --homedir {home}"], capture_output=True, text=True).stdout.split()


def test_the_home_of_a_killed_process_is_removed_with_its_agent_and_keys(tmp_path):
    key = make_keypair(str(tmp_path), "sweep")
    code = (f"import os, sys; sys.path.insert(0, {os.path.dirname(os.path.dirname(__file__))!r});"
            f"from pg_backup.crypto import GpgHome; h = GpgHome(); assert h.run('--import', {key.secret_file!r})"
            f".returncode == 0; print(h.home, flush=True); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == -9, proc.stderr
    home = proc.stdout.strip()
    assert os.path.exists(os.path.join(home, "private-keys-v1.d")) and _agents(home)   # what a SIGKILL leaves

    live = GpgHome()       # the next agent process: its new home sweeps the dead one's away, never its own
    legacy = os.path.join(os.path.dirname(home), "pgb-gpg-oldstyle")
    os.makedirs(legacy, exist_ok=True)
    try:
        assert home not in sweep_stale_homes()              # GpgHome() removed it already
        assert not os.path.exists(home) and os.path.exists(live.home) and os.path.exists(legacy)
        deadline = time.monotonic() + 5
        while _agents(home) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _agents(home)
        assert os.path.basename(live.home).startswith(f"pgb-gpg-{os.getpid()}-")
    finally:
        live.close()
        os.rmdir(legacy)


def test_only_homes_of_this_user_and_of_dead_processes(tmp_path):
    child = subprocess.Popen(["true"])                         # a pid that is gone
    child.wait()
    gone = tmp_path / f"pgb-gpg-{child.pid}-abc"
    alive = tmp_path / f"pgb-gpg-{os.getpid()}-abc"
    noise = tmp_path / "pgb-gpg-12345678"
    for d in (gone, alive, noise):
        d.mkdir()
    assert sweep_stale_homes(str(tmp_path)) == [str(gone)]
    assert not gone.exists() and alive.exists() and noise.exists()
    if os.getuid() == 0:                                       # another user's home is not ours to judge
        other = tmp_path / f"pgb-gpg-{child.pid}-xyz"
        other.mkdir()
        os.chown(other, 65534, 65534)
        assert sweep_stale_homes(str(tmp_path)) == [] and other.exists()
