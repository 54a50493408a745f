"""``config validate``, ``config reference`` and ``exit-codes``: they need no context (no storage, no
server), only the configuration schema and the exit-code table."""
from __future__ import annotations

from .. import config as config_mod
from ..errors import EXIT_CODES, ConfigError
from . import CommandResult


def config_validate(*, path: str) -> CommandResult:
    _, problems = config_mod.parse(config_mod.read_file(path))
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s)", problems=problems)
    return CommandResult({"path": path, "valid": True, "problems": []}, [f"{path}: valid"])


def config_reference() -> CommandResult:
    text = config_mod.reference_markdown()
    return CommandResult({"options": [o.__dict__ for o in config_mod.iter_options()]}, [text.rstrip("\n")])


def exit_codes() -> CommandResult:
    return CommandResult({"exit_codes": {str(k): v for k, v in EXIT_CODES.items()}},
                         [f"{k:>3}  {v}" for k, v in EXIT_CODES.items()])
