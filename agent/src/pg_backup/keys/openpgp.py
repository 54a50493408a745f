"""What an OpenPGP key file holds, read by gpg in a private home (:class:`~pg_backup.crypto.GpgHome`,
never the user's keyring): fingerprint, user IDs, algorithm, expiry for encryption, secret and
passphrase-protected or not, whether it advertises AEAD; and :func:`expiry_verdict`, a pure function
of a key and a clock (ok; warning 30 days ahead; critical once expired, when backups and WAL
archiving stop with exit 8) that ``config validate``, ``health`` and ``keys check`` share.
"""
from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..crypto import GpgHome
from ..errors import EncryptionKeyError

#: ``health`` and ``config validate`` warn this long before a key the host writes with expires.
WARN_DAYS = 30


@dataclass
class KeyInfo:
    fingerprint: str
    user_ids: List[str]
    algorithm: str                     # primary/subkey algorithms, e.g. "ed25519/cv25519"
    created: dt.datetime
    expires: Optional[dt.datetime]     # when it stops being usable for encryption (None: never)
    secret: bool
    protected: Optional[bool]          # secret key protected by a passphrase (None for a public key)
    can_encrypt: bool
    revoked: bool
    advertises_aead: bool              # GnuPG 2.3+ would write OCB to it without the agent's guard

    def as_dict(self) -> Dict[str, Any]:
        d = dict(self.__dict__)
        d["created"] = iso(self.created)
        d["expires"] = iso(self.expires) if self.expires else None
        return d


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(epoch: str) -> Optional[dt.datetime]:
    return dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch else None


def read_key_file(path: str, gpg_binary: str = "gpg") -> List[KeyInfo]:
    """The OpenPGP keys (public or secret) in ``path``; EncryptionKeyError if it holds none."""
    if not os.path.exists(path):
        raise EncryptionKeyError(f"key file {path} does not exist")
    if not os.access(path, os.R_OK):
        raise EncryptionKeyError(f"key file {path} is not readable by this user")
    with GpgHome(gpg_binary) as home:
        listing = home.run("--with-colons", "--fixed-list-mode", "--import-options", "show-only", "--import", path)
        packets = home.run("--list-packets", path)
    keys = parse_colons(listing.stdout.decode(errors="replace"))
    if listing.returncode != 0 or not keys:
        raise EncryptionKeyError(f"{path} holds no readable OpenPGP key",
                                 hint="export one with 'pg-backup keys export' or 'gpg --armor --export KEYID'")
    for key, (features, protected) in zip(keys, parse_packets(packets.stdout.decode(errors="replace"))):
        key.advertises_aead = bool(features & 0x02)
        if key.secret:
            key.protected = protected
    return keys


def parse_colons(text: str) -> List[KeyInfo]:
    """Keys from ``gpg --with-colons`` output: the primary's expiry and its best encryption subkey's."""
    keys: List[KeyInfo] = []
    primary_exp: Optional[dt.datetime] = None
    sub_exps: List[Optional[dt.datetime]] = []
    algos: List[str] = []
    expect_fpr = False

    def close() -> None:
        if keys:
            k = keys[-1]
            k.algorithm = "/".join(dict.fromkeys(algos))
            best = None if any(e is None for e in sub_exps) else max(sub_exps, default=None)
            if not sub_exps and not k.can_encrypt:
                k.expires = primary_exp
            else:
                k.can_encrypt = k.can_encrypt or bool(sub_exps)
                k.expires = min((e for e in (primary_exp, best) if e), default=None)

    for line in text.splitlines():
        f = line.split(":")
        if f[0] in ("pub", "sec"):
            close()
            primary_exp = _when(f[6])
            sub_exps, algos = [], [_algorithm(f)]
            keys.append(KeyInfo(fingerprint="", user_ids=[], algorithm="", created=_when(f[5]) or _when("0"),
                                expires=None, secret=f[0] == "sec", protected=None,
                                can_encrypt="e" in f[11], revoked=f[1] == "r", advertises_aead=False))
            if "e" in f[11]:
                sub_exps.append(primary_exp)
            expect_fpr = True
        elif f[0] == "fpr" and expect_fpr and keys:
            keys[-1].fingerprint = f[9]
            expect_fpr = False
        elif f[0] == "uid" and keys:
            keys[-1].user_ids.append(f[9].replace("\\x3a", ":"))
        elif f[0] in ("sub", "ssb") and keys:
            expect_fpr = False
            algos.append(_algorithm(f))
            if "e" in f[11] and f[1] != "r":
                sub_exps.append(_when(f[6]))
    close()
    return keys


def _algorithm(f: List[str]) -> str:
    """A colon record's algorithm: the curve for ECC keys, else the family and size (rsa4096)."""
    if f[16]:
        return f[16]
    family = {"1": "rsa", "2": "rsa", "3": "rsa", "16": "elg", "17": "dsa"}.get(f[3], f"algo{f[3]}-")
    return f"{family}{f[2]}"


def parse_packets(text: str) -> List[Tuple[int, bool]]:
    """(features of the self-signatures, secret key passphrase-protected) per primary key, in file
    order, from ``gpg --list-packets``."""
    result: List[Tuple[int, bool]] = []
    in_secret = False
    for line in text.splitlines():
        s = line.strip()
        if s in (":public key packet:", ":secret key packet:"):
            result.append((0, False))
            in_secret = s == ":secret key packet:"
        elif not result:
            continue
        elif s.startswith(":"):
            in_secret = False
        elif in_secret and ("S2K" in s or "protection" in s) and "gnu-dummy" not in s:
            result[-1] = (result[-1][0], True)
        else:
            m = re.search(r"\(features: ([0-9A-Fa-f]+)\)", s)
            if m:
                result[-1] = (result[-1][0] | int(m.group(1)[:2], 16), result[-1][1])
    return result


def expiry_verdict(key: KeyInfo, now: dt.datetime, warn_days: int = WARN_DAYS, *,
                   encrypts: bool = True) -> Tuple[str, str, Optional[float]]:
    """(status, message, seconds left) of a key the host writes with; seconds left is None when it never expires.
    ``encrypts`` False: a signing key (docs/signing.md), which needs no encryption subkey."""
    name = f"key {key.fingerprint}"
    if key.revoked:
        return "critical", f"{name} is revoked: gpg refuses to encrypt to it", None
    if encrypts and not key.can_encrypt:
        return "critical", f"{name} has no encryption subkey", None
    if key.expires is None:
        return "ok", f"{name} does not expire", None
    left = (key.expires - now).total_seconds()
    when = key.expires.strftime("%Y-%m-%d %H:%M UTC")
    if left <= 0:
        return "critical", (f"{name} EXPIRED on {when}: backups and WAL archiving stop with exit 8 until its "
                            f"expiry is extended (pg-backup keys extend) or a new key is configured"), round(left)
    days = left / 86400
    if days <= warn_days:
        return "warning", (f"{name} expires on {when}, in {days:.0f} day(s): extend it (pg-backup keys extend) and "
                           f"redistribute the public key before then"), round(left)
    return "ok", f"{name} expires on {when}, in {days:.0f} days", round(left)


def describe(keys: Sequence[KeyInfo], now: Optional[dt.datetime] = None) -> List[str]:
    """Text lines for keys (``keys create/list/check``, ``config validate``)."""
    lines = []
    for k in keys:
        kind = "secret" + (", passphrase-protected" if k.protected else ", NOT protected") if k.secret else "public"
        expired = now is not None and k.expires is not None and k.expires <= now
        exp = f"{'EXPIRED' if expired else 'expires'} {iso(k.expires)}" if k.expires else "never expires"
        lines.append(f"  {k.fingerprint}  {k.algorithm}  {kind}  {exp}" + ("  REVOKED" if k.revoked else "") +
                     ("  advertises AEAD" if k.advertises_aead else ""))
        lines += [f"      {uid}" for uid in k.user_ids]
    return lines
