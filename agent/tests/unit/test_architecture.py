"""The agent's shape, asserted from its source so that it cannot silently come back (issue 9).

- no import cycle between the agent's modules (imports inside functions count: a lazy import is
  still a dependency);
- a command module (``pg_backup.commands.*``) imports services only, never another command; only
  the CLI imports commands, and only the entry module imports the CLI;
- no private name (``_x``) imported from another module;
- no file over 500 lines;
- only ``storage/`` and ``config.py`` branch on the repository's backend type;
- the entry module and the WAL fast path load the standard library only.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

import pg_backup

PACKAGE_DIR = Path(pg_backup.__file__).resolve().parent
MAX_LINES = 500


def _modules() -> Dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        found[name] = path
    return found


MODULES = _modules()


def _resolve(module: str, level: int, name: str) -> str:
    if not level:
        return name
    parts = module.split(".")
    base = parts if MODULES[module].name == "__init__.py" else parts[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _imports(module: str) -> List[tuple]:
    """(imported module, imported name or None) for every import anywhere in the module."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, node.level, node.module or "")
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if full in MODULES:
                    found.append((full, None))
                elif target in MODULES:
                    found.append((target, alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    found.append((alias.name, None))
    return found


EDGES: Dict[str, Set[str]] = {m: {t for t, _ in _imports(m) if t != m} for m in MODULES}


def _cycles() -> List[List[str]]:
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    result: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(EDGES[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    return result


def test_no_import_cycle():
    assert _cycles() == [], "import cycles between the agent's modules"


def test_commands_import_services_only():
    commands = {m for m in MODULES if m.startswith("pg_backup.commands.")}
    assert commands, "the command modules live in pg_backup/commands/"
    wrong = sorted(f"{m} imports {t}" for m in commands for t in EDGES[m] if t in commands)
    assert wrong == [], "a command module imports another command module"
    outside = sorted(f"{m} imports {t}" for m in MODULES for t in EDGES[m]
                     if t.startswith("pg_backup.commands") and not m.startswith("pg_backup.commands")
                     and m != "pg_backup.cli")
    assert outside == [], "only the CLI imports command modules"
    cli_users = sorted(m for m in MODULES if "pg_backup.cli" in EDGES[m])
    assert cli_users == ["pg_backup.main"], "only the entry module imports the CLI"


def test_no_private_name_imported_across_modules():
    private = sorted(f"{m} imports {t}.{name}" for m in MODULES for t, name in _imports(m)
                     if name and name.startswith("_") and not name.startswith("__") and t != m)
    assert private == []


def test_files_fit_in_a_readers_head():
    big = sorted(f"{p.relative_to(PACKAGE_DIR)} ({n} lines)" for p in MODULES.values()
                 if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES)
    assert big == [], f"agent files over {MAX_LINES} lines"


def test_only_storage_and_config_branch_on_the_backend_type():
    needles = ("repository.type", "repo.type", ".type == \"s3\"", ".type == \"local\"", ".type != \"local\"",
               ".type != \"s3\"")
    found = []
    for name, path in MODULES.items():
        rel = path.relative_to(PACKAGE_DIR).as_posix()
        if rel.startswith("storage/") or rel in ("config.py", "config_repository.py"):
            continue
        text = path.read_text(encoding="utf-8")
        found += [f"{rel}: {n}" for n in needles if n in text]
    assert found == []


@pytest.mark.parametrize("module", ["pg_backup.main", "pg_backup.wal.fast"])
def test_entry_and_fast_path_load_the_standard_library_only(module):
    heavy = ["yaml", "boto3", "botocore", "psycopg", "zstandard", "argparse"]
    code = (f"import sys, {module}; heavy = {heavy!r}; "
            "print(','.join(h for h in heavy if h in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(PACKAGE_DIR.parent)})
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"
