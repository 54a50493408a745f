"""``keys create | export | extend | list | check``: the OpenPGP keys of public-key mode.

They need no context (no storage, no server): ``create``, ``export`` and ``extend`` work on files
(on an operator's workstation, where the secret key lives); ``list`` and ``check`` read the files the
configuration names (or the files given). Passphrases come from a file, an inherited file
descriptor, an environment variable or the terminal, never from the command line.

Exit codes: 0 done (``check``: nothing wrong, warnings allowed); 2 bad input (option, expiry,
passphrase source, too short a passphrase); 8 a key file that cannot be read, a wrong passphrase,
gpg failing, or (``check``) a problem found; 9 an output file already exists (never overwritten).
"""
from __future__ import annotations

import datetime as dt
import getpass
import os
import stat
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..errors import EXIT_KEY, PgBackupError, UsageError
from ..keys.host import HeldFile, KeyFile, host_keys, inspect_file
from ..keys.make import create_keypair, create_signing_key, export_public, extend_expiry, write_new
from ..keys.openpgp import describe, read_key_file
from . import CommandResult


def keys_command(action: Optional[str], options: Dict[str, Any], *, load_settings: Callable[[], Any],
                 now: dt.datetime) -> CommandResult:
    """Run ``keys ACTION`` with the parsed ``options`` (see :mod:`pg_backup.keys.arguments`)."""
    o = options
    if action == "create" and o["purpose"] == "signing":      # no passphrase: the agent signs unattended
        return keys_create_signing(name=o["name"], email=o["email"], expire=o["expire"], algorithm=o["algorithm"],
                                   secret_out=o["secret_out"], public_out=o["public_out"])
    if action in ("create", "extend"):
        passphrase = read_passphrase(file=o["passphrase_file"], fd=o["passphrase_fd"], env=o["passphrase_env"],
                                     confirm=action == "create")
        if action == "create":
            return keys_create(purpose=o["purpose"], name=o["name"], email=o["email"], expire=o["expire"],
                               algorithm=o["algorithm"], secret_out=o["secret_out"], public_out=o["public_out"],
                               passphrase=passphrase)
        return keys_extend(secret_file=o["secret_file"], expire=o["expire"], passphrase=passphrase,
                           public_out=o["public_out"], secret_out=o["secret_out"])
    if action == "export":
        return keys_export(secret_file=o["secret_file"], out=o["out"], as_json=bool(o.get("json")))
    if action in ("list", "check"):
        settings = None if o["files"] else load_settings()   # FILEs given: the configuration is not read
        return keys_list(files=o["files"], settings=settings, now=now, check=action == "check")
    raise UsageError("keys needs an action: create, export, extend, list or check")


def read_passphrase(*, file: Optional[str], fd: Optional[int], env: Optional[str], confirm: bool) -> str:
    """The passphrase from exactly one source; the terminal (asked twice when ``confirm``) if none is given."""
    if sum(x is not None for x in (file, fd, env)) > 1:
        raise UsageError("give one of --passphrase-file, --passphrase-fd and --passphrase-env")
    if file is not None:
        try:
            st = os.stat(file)
            if stat.S_IMODE(st.st_mode) & 0o077:
                raise UsageError(f"passphrase file {file} is mode {stat.S_IMODE(st.st_mode):04o}; make it 0600")
            with open(file, encoding="utf-8") as fh:
                value = fh.read()
        except OSError as exc:
            raise UsageError(f"cannot read passphrase file {file}: {exc.strerror}") from None
    elif fd is not None:
        try:
            with os.fdopen(fd, "r", encoding="utf-8", closefd=True) as fh:
                value = fh.read()
        except OSError as exc:
            raise UsageError(f"cannot read the passphrase from file descriptor {fd}: {exc.strerror}") from None
    elif env is not None:
        if env not in os.environ:
            raise UsageError(f"environment variable {env} is not set")
        value = os.environ[env]
    else:
        if not sys.stdin.isatty():
            raise UsageError("no passphrase given: use --passphrase-file, --passphrase-fd or --passphrase-env "
                             "(a passphrase never goes on the command line), or run on a terminal")
        value = getpass.getpass("Passphrase for the secret key: ")
        if confirm and getpass.getpass("Repeat the passphrase for the secret key: ") != value:
            raise UsageError("the two passphrases differ")
    value = value.rstrip("\r\n")
    if not value:
        raise UsageError("the passphrase is empty")
    return value


def keys_create(*, purpose: str, name: str, email: Optional[str], expire: str, algorithm: str, secret_out: str,
                public_out: str, passphrase: str, gpg_binary: str = "gpg") -> CommandResult:
    if not name.strip() or any(c in name for c in "<>\n"):
        raise UsageError(f"--name {name!r}: give a plain name such as 'Restore operators of ACME'")
    key = create_keypair(name=name, email=email, expire=expire, algorithm=algorithm, passphrase=passphrase,
                         secret_out=secret_out, public_out=public_out, gpg_binary=gpg_binary)
    text = [f"created the {purpose} key pair {key.fingerprint}", *describe([key]),
            f"  secret key: {secret_out} (0600, passphrase-protected): keep it OFF the database hosts "
            f"(Ansible Vault, a password manager, an offline copy)",
            f"  public key: {public_out}: set encryption.public_key_file to it on every database host"]
    return CommandResult({"purpose": purpose, "key": key.as_dict(), "secret_key_file": secret_out,
                          "public_key_file": public_out}, text)


def keys_create_signing(*, name: str, email: Optional[str], expire: str, algorithm: str, secret_out: str,
                        public_out: str, gpg_binary: str = "gpg") -> CommandResult:
    if not name.strip() or any(c in name for c in "<>\n"):
        raise UsageError(f"--name {name!r}: give a plain name such as 'pg-backup signing key of cluster main'")
    key = create_signing_key(name=name, email=email, expire=expire, algorithm=algorithm, secret_out=secret_out,
                             public_out=public_out, gpg_binary=gpg_binary)
    text = [f"created the signing key {key.fingerprint}", *describe([key]),
            f"  secret key: {secret_out} (0600, no passphrase): only on this cluster's database host, owned by its "
            f"OS user; set signing.secret_key_file to it",
            f"  public key: {public_out}: list it in signing.trusted_public_key_files on the restore hosts",
            f"  (a restore host's own key for the records it writes: signing.record_secret_key_file here, the public "
            f"key in signing.record_trusted_public_key_files on the cluster's hosts)"]
    return CommandResult({"purpose": "signing", "key": key.as_dict(), "secret_key_file": secret_out,
                          "public_key_file": public_out}, text)


def keys_export(*, secret_file: str, out: Optional[str], as_json: bool = False,
                gpg_binary: str = "gpg") -> CommandResult:
    armored = export_public(secret_file, gpg_binary)
    if out is None:
        return CommandResult({"public_key": armored.decode()}) if as_json else CommandResult(raw=armored.decode())
    write_new(out, armored, 0o644)
    keys = read_key_file(out, gpg_binary)
    return CommandResult({"public_key_file": out, "keys": [k.as_dict() for k in keys]},
                         [f"wrote the public key of {secret_file} to {out}", *describe(keys)])


def keys_extend(*, secret_file: str, expire: str, passphrase: str, public_out: str, secret_out: Optional[str],
                gpg_binary: str = "gpg") -> CommandResult:
    key = extend_expiry(secret_file=secret_file, expire=expire, passphrase=passphrase, public_out=public_out,
                        secret_out=secret_out, gpg_binary=gpg_binary)
    text = [f"extended key {key.fingerprint}", *describe([key]),
            f"  public key: {public_out}: distribute it to the database hosts (same fingerprint, new expiry)"]
    if secret_out:
        text.append(f"  secret key: {secret_out} (0600): replaces the old copy (the old one still decrypts)")
    return CommandResult({"key": key.as_dict(), "public_key_file": public_out, "secret_key_file": secret_out}, text)


def keys_list(*, files: Sequence[str], settings: Any, now: dt.datetime, check: bool) -> CommandResult:
    """The keys in ``files``, or in the files the configuration names; ``check``: exit 8 on a problem."""
    if files:
        held = [_inspect_given(path, "gpg", now) for path in files]
    else:
        held = host_keys(settings, now)
    problems = [p for h in held for p in h.problems]
    warnings = [w for h in held for w in h.warnings]
    text: List[str] = []
    for h in held:
        where = (f"{h.path}, mode {h.mode}, owner {h.owner}, directory mode {h.directory_mode}" if h.exists
                 else f"{h.path} (missing)")
        text.append(f"{h.setting} ({h.purpose}): {where}" if h.setting != h.path else where)
        text += describe(h.keys, now)
    if not held:
        text.append("no key or secret file configured")
    text += [f"PROBLEM: {p}" for p in problems] + [f"warning: {w}" for w in warnings]
    result = CommandResult({"files": [h.as_dict() for h in held], "problems": problems, "warnings": warnings}, text)
    unreadable = [h.path for h in held if files and not h.keys]
    if (check and problems) or unreadable:
        result.exit_code = EXIT_KEY
        result.error = (f"{len(problems)} key problem(s): {problems[0]}" if check and problems
                        else f"no readable OpenPGP key in {', '.join(unreadable)}")
    elif check:
        text.append("keys: OK" + (f" ({len(warnings)} warning(s))" if warnings else ""))
    return result


def _inspect_given(path: str, gpg_binary: str, now: dt.datetime) -> HeldFile:
    try:
        secret = any(k.secret for k in read_key_file(path, gpg_binary))
    except PgBackupError:  # inspect_file reports why it cannot be read, with the rest
        secret = False
    # A public key given by name is checked as one to encrypt to (its expiry matters); a secret one decrypts.
    row = KeyFile(path, "secret key" if secret else "public key", secret=secret, openpgp=True, writes=not secret)
    return inspect_file(path, row, gpg_binary, now)
