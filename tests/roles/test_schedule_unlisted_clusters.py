"""The schedule role removes what it wrote for a cluster dropped from schedule_clusters (cron file, systemd
units, health textfile), run for real with ansible-playbook against localhost: cron files, units and textfiles
go to a temporary directory (the private _schedule_cron_dir points ansible.builtin.cron there). Files the role
did not write (a foreign cron file, even one named pg-backup-*) stay, and a second run changes nothing.

    .venv/bin/python -m pytest tests/roles/test_schedule_unlisted_clusters.py
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from playbook_support import ANSIBLE_PLAYBOOK, pg, playbook_env

pytestmark = pytest.mark.skipif(not pg.IS_ROOT, reason="cron files of the postgres user: needs root")


def _run(tmp_path, method, names, *args):
    host = tmp_path / "host"
    dirs = {d: host / d for d in ("cron.d", "units", "textfiles", "log")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": sys.executable, "schedule_method": method,
                      "schedule_clusters": [{"name": n, "os_user": pg.PG_OS_USER} for n in names],
                      "schedule_agent_bin": str(pg.AGENT_BIN), "schedule_config_dir": str(host / "etc"),
                      "schedule_log_dir": str(dirs["log"]), "schedule_logrotate_file": str(host / "logrotate"),
                      "schedule_install_cron": False, "schedule_log": "journal",
                      "schedule_systemd_unit_dir": str(dirs["units"]),
                      "schedule_health_textfile_dir": str(dirs["textfiles"])},
             "roles": ["miometry.pg_backup.schedule"]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    proc = subprocess.run([str(ANSIBLE_PLAYBOOK), str(tmp_path / "play.yml"), "-e",
                           f"_schedule_cron_dir={dirs['cron.d']}", *args],
                          env=playbook_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    return proc, proc.stdout + proc.stderr, dirs


def _names(path):
    return sorted(p.name for p in path.iterdir())


def _unit(dirs, cluster, job, suffix):
    """A unit as the role's systemd method writes it (templates/job.*.j2: the Description names the cluster)."""
    (dirs["units"] / f"pg-backup-{cluster}-{job}.{suffix}").write_text(
        f"# Ansible managed\n[Unit]\nDescription=pg-backup {job} of cluster {cluster} (*:0/15)\n")


def test_a_dropped_cluster_loses_its_cron_file_units_and_textfile(tmp_path):
    """An earlier systemd schedule of cluster sys-old (units, textfile) and a cron schedule of 'old': each goes
    once its cluster is no longer listed; foreign files (even named like the role's) stay."""
    dirs = {d: tmp_path / "host" / d for d in ("cron.d", "units", "textfiles")}
    for d in dirs.values():
        d.mkdir(parents=True)
    for job in ("daily", "health"):
        for suffix in ("timer", "service"):
            _unit(dirs, "sys-old", job, suffix)
    (dirs["units"] / "pg-backup-other-health.service").write_text("[Unit]\nDescription=not ours\n")
    foreign = {"pg-backup-foreign": "# hand-written\n* * * * * root true\n", "e2scrub_all": "# other\n"}
    for name, text in foreign.items():
        (dirs["cron.d"] / name).write_text(text)
    for name in ("keep", "sys-old"):
        (dirs["textfiles"] / f"pg_backup_{name}.prom").write_text("pg_backup_up 1\n")

    proc, out, dirs = _run(tmp_path, "cron", ["keep", "old"])
    assert proc.returncode == 0, out
    assert _names(dirs["units"]) == ["pg-backup-other-health.service"], out
    assert _names(dirs["textfiles"]) == ["pg_backup_keep.prom"], out
    assert _names(dirs["cron.d"]) == ["e2scrub_all", "pg-backup-foreign", "pg-backup-keep", "pg-backup-old"], out
    assert "#Ansible: pg-backup old daily" in (dirs["cron.d"] / "pg-backup-old").read_text()

    proc, out, dirs = _run(tmp_path, "cron", ["keep"])
    assert proc.returncode == 0, out
    assert _names(dirs["cron.d"]) == ["e2scrub_all", "pg-backup-foreign", "pg-backup-keep"], out
    for name, text in foreign.items():
        assert (dirs["cron.d"] / name).read_text() == text
    again, out, _dirs = _run(tmp_path, "cron", ["keep"])
    assert again.returncode == 0 and "changed=0" in out, out
