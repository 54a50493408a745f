"""``config validate``, ``config reference`` and ``exit-codes``: they need no context (no storage, no
server), only the configuration schema, the key files it names and the exit-code table."""
from __future__ import annotations

import datetime as dt
from typing import Optional

from .. import config as config_mod
from ..errors import EXIT_CODES, ConfigError
from ..keys.host import host_keys
from ..keys.openpgp import describe
from ..manifest import utcnow
from . import CommandResult


def config_validate(*, path: str, now: Optional[dt.datetime] = None) -> CommandResult:
    """Every problem of the file; once it parses, also the key and secret files it names (modes,
    owner, what the keys are, when the keys the host writes with expire: a warning 30 days ahead,
    a problem once expired)."""
    settings, problems = config_mod.parse(config_mod.read_file(path))
    held = [] if problems else host_keys(settings, now or utcnow())
    for h in held:
        problems += [p for p in h.problems if p not in problems]
    warnings = [w for h in held for w in h.warnings]
    sign = settings.signing
    if settings.encryption.mode == "public-key" and not (sign.secret_key_file or sign.trusted_public_key_files):
        warnings.append("no signing key configured: anyone who can write to the bucket can forge backups and WAL "
                        "this host would accept (set signing.secret_key_file on database hosts, "
                        "signing.trusted_public_key_files on restore hosts; docs/signing.md)")
    if not problems and sign.records_key_missing:
        warnings.append("no signing key for the records this host writes: restore, pitr, verify, drill and erasure "
                        "refuse to run (exit 8) rather than write audit entries that read as forged (set "
                        "signing.record_secret_key_file; docs/signing.md, 'Restore hosts')")
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s)", problems=problems)
    text = [f"{path}: valid" + (f" with {len(warnings)} warning(s)" if warnings else "")]
    text += [f"  warning: {w}" for w in warnings]
    for h in held:
        if h.keys:
            text.append(f"{h.setting} ({h.purpose}): {h.path}, mode {h.mode}, owner {h.owner}")
            text += describe(h.keys, now or utcnow())
    return CommandResult({"path": path, "valid": True, "problems": [], "warnings": warnings,
                          "key_files": [h.as_dict() for h in held]}, text)


def config_reference() -> CommandResult:
    text = config_mod.reference_markdown()
    return CommandResult({"options": [o.__dict__ for o in config_mod.iter_options()]}, [text.rstrip("\n")])


def exit_codes() -> CommandResult:
    return CommandResult({"exit_codes": {str(k): v for k, v in EXIT_CODES.items()}},
                         [f"{k:>3}  {v}" for k, v in EXIT_CODES.items()])
