"""Helpers of test_compat_previous.py: the agent as of an earlier commit, run beside the current one.

- ``build_previous_agent(commit, dest)``: ``git archive`` that commit's ``agent/src`` into ``dest``
  (readable by the postgres user, byte-compiled beforehand so nobody needs to write __pycache__) and
  an executable ``pg-backup`` wrapper running it with this venv's interpreter. The wrapper exports
  PYTHONPATH, so the ``python -m pg_backup.wal`` workers the old agent starts import the old code too.
- ``assert_same(old, new, what)``: two AgentResults with the same exit code, stdout and stderr, or a
  unified diff naming what differs.
- ``assert_compatible(old, new, what, changed=())``: the same exit code, and the current output
  *extends* the previous one: a JSON document keeps every key and value of the previous one (new
  keys are additions; a message of three words or more may say more, keeping every word; ``changed``
  names the JSON paths whose value changed on purpose), a text keeps every option, command and word
  of the previous text, stderr included.
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
from typing import Any, List, Sequence

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


WORD = re.compile(r"--?[A-Za-z][\w-]*|[\w.:/@+-]+")


def _extends(old: Any, new: Any, path: str, changed: Sequence[str], problems: List[str]) -> None:
    if any(re.fullmatch(pattern, path) for pattern in changed):
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key, value in old.items():
            if key not in new:
                problems.append(f"{path}.{key}: removed (was {value!r:.200})")
            else:
                _extends(value, new[key], f"{path}.{key}", changed, problems)
    elif isinstance(old, list) and isinstance(new, list) and _identity(old) and _identity(old) == _identity(new):
        key = _identity(old)  # items named by a key (options by path, checks by name...): match by it
        now = {item[key]: item for item in new}
        for item in old:
            if item[key] not in now:
                problems.append(f"{path}[{key}={item[key]!r}]: removed")
            else:
                _extends(item, now[item[key]], f"{path}[{key}={item[key]!r}]", changed, problems)
    elif isinstance(old, list) and isinstance(new, list):
        if len(old) > len(new):
            problems.append(f"{path}: {len(old)} items before, {len(new)} now")
        for i, (a, b) in enumerate(zip(old, new)):
            _extends(a, b, f"{path}[{i}]", changed, problems)
    elif old is None and new is not None:
        return  # a value the previous version left empty (an example, a limit) is an addition
    elif isinstance(old, str) and isinstance(new, str) and len(_words(old)) >= 3 \
            and not _missing_words(old, new):
        return  # a message or a description that says more than before, every old word kept
    elif old != new:
        problems.append(f"{path}: {old!r:.200} before, {new!r:.200} now")


IDENTITY_KEYS = ("path", "backup_id", "name", "code", "segment")


def _identity(items: List[Any]) -> str:
    """The key that names every item of a list of objects uniquely, or ""."""
    if not items or not all(isinstance(i, dict) for i in items):
        return ""
    for key in IDENTITY_KEYS:
        values = [i.get(key) for i in items]
        if None not in values and len(set(map(repr, values))) == len(values):
            return key
    return ""


def _words(text: str) -> List[str]:
    return [w for w in (w.rstrip(".:,") for w in WORD.findall(text)) if w]


def _missing_words(old: str, new: str) -> List[str]:
    have = set(_words(new))
    return sorted({w for w in _words(old) if w not in have})


def assert_compatible(old: Any, new: Any, what: str, changed: Sequence[str] = ()) -> None:
    """``new`` extends ``old`` (see the module docstring); ``changed`` are regular expressions of
    JSON paths (``$.error.message``) allowed to differ, each a documented change of behaviour."""
    problems: List[str] = []
    if old.rc != new.rc:
        problems.append(f"exit code: previous {old.rc}, now {new.rc}")
    if old.data is not None and new.data is not None:
        _extends(old.data, new.data, "$", changed, problems)
    elif not any(re.fullmatch(pattern, "stdout") for pattern in changed):
        gone = _missing_words(old.stdout, new.stdout)
        if gone:
            problems.append(f"stdout lost {gone[:40]}")
    gone = _missing_words(old.stderr, new.stderr)
    if gone and not any(re.fullmatch(pattern, "stderr") for pattern in changed):
        problems.append(f"stderr lost {gone[:40]}")
    assert not problems, f"{what}: not compatible with the previous version\n" + "\n".join(problems)
