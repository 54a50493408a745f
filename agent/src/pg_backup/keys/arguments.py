"""The ``keys`` command line's arguments (:func:`add_keys_parser`); :mod:`pg_backup.cli` hooks them in
and hands the parsed options to :func:`pg_backup.commands.keys.keys_command`.

Kept out of :mod:`pg_backup.cli` (which must stay under 500 lines) because ``keys`` has five actions
with options of their own.
"""
from __future__ import annotations

import argparse
from typing import Any

from .make import ALGORITHMS, PURPOSES


def _passphrase_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--passphrase-file", metavar="FILE", help="read the passphrase from this file (mode 0600)")
    g.add_argument("--passphrase-fd", type=int, metavar="N", help="read the passphrase from inherited file descriptor N")
    g.add_argument("--passphrase-env", metavar="VAR", help="read the passphrase from environment variable VAR")


def add_keys_parser(sub: Any, common: argparse.ArgumentParser, parser_class: type) -> None:
    k = sub.add_parser("keys", parents=[common], help="make, export, extend, list and check the OpenPGP keys")
    ksub = k.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=parser_class)
    c = ksub.add_parser("create", parents=[common],
                        help="create the restore operators' encryption key pair (secret key passphrase-protected)")
    c.add_argument("--purpose", choices=PURPOSES, default="encryption", help="what the key is for (default encryption)")
    c.add_argument("--name", required=True, help="user ID name, e.g. 'ACME restore operators'")
    c.add_argument("--email", help="user ID e-mail address (optional)")
    c.add_argument("--expire", default="2y", help="lifetime: 2y (default), 18m, 90d, a date 2030-12-31, or never")
    c.add_argument("--algorithm", choices=sorted(ALGORITHMS), default="ed25519",
                   help="ed25519 (ed25519 + cv25519, default) or rsa4096")
    c.add_argument("--secret-out", required=True, metavar="FILE", help="write the secret key here (0600; must not exist)")
    c.add_argument("--public-out", required=True, metavar="FILE", help="write the public key here (must not exist)")
    _passphrase_options(c)
    e = ksub.add_parser("export", parents=[common], help="print (or write) the armored public key of a secret key file")
    e.add_argument("secret_file", metavar="SECRET_KEY_FILE")
    e.add_argument("--out", metavar="FILE", help="write it here (must not exist) instead of stdout")
    x = ksub.add_parser("extend", parents=[common], help="move a key's expiry (primary key and subkeys)")
    x.add_argument("secret_file", metavar="SECRET_KEY_FILE")
    x.add_argument("--expire", required=True, help="new lifetime from now: 2y, 18m, 90d, a date, or never")
    x.add_argument("--public-out", required=True, metavar="FILE", help="write the updated public key here")
    x.add_argument("--secret-out", metavar="FILE", help="also write the updated secret key here (0600)")
    _passphrase_options(x)
    for action, text in (("list", "show the keys in FILEs, or in the files the configuration names"),
                         ("check", "like list, and exit 8 when a key or key file is wrong (expired, mode, owner)")):
        lc = ksub.add_parser(action, parents=[common], help=text)
        lc.add_argument("files", nargs="*", metavar="FILE")
