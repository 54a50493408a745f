"""Helpers of test_compat_previous.py: the agent as of an earlier commit, run beside the current one.

- ``build_previous_agent(commit, dest)``: ``git archive`` that commit's ``agent/src`` into ``dest``
  (readable by the postgres user, byte-compiled beforehand so nobody needs to write __pycache__) and
  an executable ``pg-backup`` wrapper running it with this venv's interpreter. The wrapper exports
  PYTHONPATH, so the ``python -m pg_backup.wal`` workers the old agent starts import the old code too.
- ``assert_same(old, new, what)``: two AgentResults with the same exit code, stdout and stderr, or a
  unified diff naming what differs.
- ``subcommands(help_text)``: the command names listed in an argparse ``--help`` (COMMAND / ACTION).
"""
from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import pytest

from conftest import VENV_BIN

REPO_ROOT = Path(__file__).resolve().parents[3]


def _git(*args: str) -> subprocess.CompletedProcess:
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is not installed: the compatibility test builds the previous agent from the "
                    "project's history (CI runs in a full clone)", pytrace=False)
    return subprocess.run([git, "-C", str(REPO_ROOT), *args], capture_output=True, timeout=120)


def build_previous_agent(commit: str, dest: Path) -> Path:
    """The ``pg-backup`` of ``commit`` as an executable in ``dest`` (created; must not exist)."""
    found = _git("cat-file", "-e", f"{commit}^{{commit}}")
    if found.returncode != 0:
        pytest.fail(f"commit {commit} is not in the git history of {REPO_ROOT} "
                    f"({found.stderr.decode(errors='replace').strip() or 'not a git checkout?'}); the "
                    "compatibility test needs the full history (CI: fetch-depth 0)", pytrace=False)
    dest.mkdir(mode=0o755)
    archive = _git("archive", "--format=tar", commit, "agent/src")
    if archive.returncode != 0:
        pytest.fail(f"git archive {commit} agent/src failed: {archive.stderr.decode(errors='replace')}",
                    pytrace=False)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True, timeout=120)
    src = dest / "agent" / "src"
    python = str(VENV_BIN / "python")
    subprocess.run([python, "-m", "compileall", "-q", str(src)], check=True, timeout=300)
    wrapper = dest / "pg-backup"
    # -P: do not put the working directory (PostgreSQL's data directory, for archive_command) first
    # on sys.path; PYTHONPATH still applies and puts the old package before the venv's editable one.
    safe_path = " -P" if sys.version_info >= (3, 11) else ""
    wrapper.write_text(
        "#!/bin/sh\n"
        f"# pg-backup as of commit {commit}\n"
        f"PYTHONPATH={shlex.quote(str(src))}\n"
        "export PYTHONPATH\n"
        f"exec {shlex.quote(python)}{safe_path} -c 'import sys; from pg_backup.wal import console_main; "
        "sys.exit(console_main())' \"$@\"\n", encoding="utf-8")
    for root, dirs, files in os.walk(dest):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
    os.chmod(wrapper, 0o755)
    # The venv holds the current agent too (an editable install): make sure the old one wins.
    where = subprocess.run([python, *safe_path.split(), "-c", "import pg_backup.cli as c; print(c.__file__)"],
                           env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                           timeout=60, cwd="/")
    assert where.stdout.strip().startswith(str(src) + os.sep), \
        f"the previous agent's wrapper would import {where.stdout.strip() or where.stderr}, not {src}"
    return wrapper


def subcommands(help_text: str) -> List[str]:
    """The choices argparse lists under the subcommand metavar (4-space indent, then the name)."""
    return re.findall(r"^    ([a-z][a-z-]*)(?:\s|$)", help_text, flags=re.MULTILINE)


def assert_same(old: Any, new: Any, what: str) -> None:
    problems = []
    if old.rc != new.rc:
        problems.append(f"exit code: previous {old.rc}, now {new.rc}")
    for stream in ("stdout", "stderr"):
        a, b = getattr(old, stream), getattr(new, stream)
        if a != b:
            diff = "".join(difflib.unified_diff(a.splitlines(True), b.splitlines(True), "previous", "now", n=2))
            problems.append(f"{stream} differs:\n{diff[:4000]}")
    assert not problems, f"{what}: output changed\n" + "\n".join(problems)
