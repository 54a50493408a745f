"""Real OpenPGP keys for tests, made with the same gpg the agent uses (no fixtures on disk)."""
from __future__ import annotations

import os
import pty
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple


@dataclass
class KeyPair:
    public_file: str
    secret_file: str
    fingerprint: str
    passphrase_file: Optional[str] = None


def make_keypair(directory: str, name: str = "restore-operator", passphrase: Optional[str] = None,
                 expire: str = "never", created: Optional[str] = None) -> KeyPair:
    """An ed25519/cv25519 key pair exported to files (secret file 0600).

    ``expire``: gpg's expiry (``never``, ``1y``, ``20d``, a date). ``created``: make the key as if
    the clock said this (gpg ``--faked-system-time``, e.g. ``20200101T000000``), so a key that has
    already expired is a real one: created in 2020 with ``expire="1y"``."""
    home = tempfile.mkdtemp(prefix="pgb-test-gpg-")
    base = ["gpg", "--homedir", home, "--batch", "--quiet", "--pinentry-mode", "loopback",
            "--passphrase", passphrase or ""]
    fake = ["--faked-system-time", created] if created else []
    subprocess.run(base + fake + ["--quick-gen-key", f"{name} <{name}@example.invalid>", "future-default", "default",
                                  expire], check=True, capture_output=True)
    out = subprocess.run(["gpg", "--homedir", home, "--batch", "--with-colons", "--list-keys"],
                         check=True, capture_output=True, text=True).stdout
    fpr = [ln.split(":")[9] for ln in out.splitlines() if ln.startswith("fpr")][0]
    pub = os.path.join(directory, f"{name}.pub.asc")
    sec = os.path.join(directory, f"{name}.sec.asc")
    with open(pub, "wb") as fh:
        fh.write(subprocess.run(["gpg", "--homedir", home, "--batch", "--armor", "--export", fpr],
                                check=True, capture_output=True).stdout)
    fd = os.open(sec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(subprocess.run(base + ["--armor", "--export-secret-keys", fpr], check=True, capture_output=True).stdout)
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], check=False, capture_output=True)
    subprocess.run(["rm", "-rf", home], check=False)
    pp_file = None
    if passphrase:
        pp_file = os.path.join(directory, f"{name}.pass")
        fd = os.open(pp_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(passphrase + "\n")
    return KeyPair(pub, sec, fpr, pp_file)


# -- a key that advertises AEAD --------------------------------------------------------------------
# GnuPG 2.2 cannot make one (2.4 does by default), so it is built packet by packet (RFC 4880 / 9580
# v4 key, RSA so the signatures are plain PKCS#1 v1.5 from the `cryptography` package): features
# 0x03 (MDC + AEAD) and an AEAD preference (OCB) on the user ID's self-signature, exactly what makes
# GnuPG 2.3+ write OCB packets to it.

def _packet(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 192:
        length = bytes([n])
    elif n < 8384:
        length = bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    else:
        length = b"\xff" + n.to_bytes(4, "big")
    return bytes([0xC0 | tag]) + length + body


def _mpi(value: int) -> bytes:
    return value.bit_length().to_bytes(2, "big") + value.to_bytes((value.bit_length() + 7) // 8, "big")


def _subpacket(kind: int, data: bytes) -> bytes:
    return bytes([len(data) + 1, kind]) + data


def _key_body(created: int, numbers) -> bytes:  # type: ignore[no-untyped-def]
    return b"\x04" + created.to_bytes(4, "big") + b"\x01" + _mpi(numbers.n) + _mpi(numbers.e)


def _secret_body(created: int, key) -> bytes:  # type: ignore[no-untyped-def]
    priv = key.private_numbers()
    # OpenPGP wants p < q and u = p^-1 mod q; cryptography's iqmp is q^-1 mod p: swap p and q.
    p, q = sorted((priv.p, priv.q))
    u = pow(p, -1, q)
    secret = _mpi(priv.d) + _mpi(p) + _mpi(q) + _mpi(u)
    return _key_body(created, priv.public_numbers) + b"\x00" + secret + (sum(secret) % 65536).to_bytes(2, "big")


def _signature(signer, sig_type: int, hashed_prefix: bytes, hashed_subpackets: bytes, fpr: bytes) -> bytes:  # type: ignore[no-untyped-def]
    import hashlib

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    head = bytes([4, sig_type, 1, 8]) + len(hashed_subpackets).to_bytes(2, "big") + hashed_subpackets
    data = hashed_prefix + head + b"\x04\xff" + len(head).to_bytes(4, "big")
    sig = signer.sign(data, padding.PKCS1v15(), hashes.SHA256())
    unhashed = _subpacket(16, fpr[-8:])
    return _packet(2, head + len(unhashed).to_bytes(2, "big") + unhashed + hashlib.sha256(data).digest()[:2]
                   + _mpi(int.from_bytes(sig, "big")))


def make_aead_keypair(directory: str, name: str = "aead-operator") -> KeyPair:
    """An RSA key pair whose self-signature advertises AEAD (features 0x03, preferred AEAD: OCB),
    written as binary OpenPGP files (secret file 0600, not passphrase-protected)."""
    import hashlib
    import time

    from cryptography.hazmat.primitives.asymmetric import rsa

    created = int(time.time()) - 60
    primary = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sub = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub_body = _key_body(created, primary.public_key().public_numbers())
    sub_body = _key_body(created, sub.public_key().public_numbers())
    fpr = hashlib.sha1(b"\x99" + len(pub_body).to_bytes(2, "big") + pub_body).digest()
    uid = f"{name} <{name}@example.invalid>".encode()
    when = _subpacket(2, created.to_bytes(4, "big"))
    issuer = _subpacket(33, b"\x04" + fpr)
    cert_sub = (when + issuer + _subpacket(27, b"\x03") + _subpacket(11, b"\x09\x08\x07")
                + _subpacket(21, b"\x08\x0a") + _subpacket(34, b"\x02") + _subpacket(30, b"\x03"))
    key_prefix = b"\x99" + len(pub_body).to_bytes(2, "big") + pub_body
    uid_sig = _signature(primary, 0x13, key_prefix + b"\xb4" + len(uid).to_bytes(4, "big") + uid, cert_sub, fpr)
    bind_sig = _signature(primary, 0x18, key_prefix + b"\x99" + len(sub_body).to_bytes(2, "big") + sub_body,
                          when + issuer + _subpacket(27, b"\x0c"), fpr)
    public = _packet(6, pub_body) + _packet(13, uid) + uid_sig + _packet(14, sub_body) + bind_sig
    secret = (_packet(5, _secret_body(created, primary)) + _packet(13, uid) + uid_sig
              + _packet(7, _secret_body(created, sub)) + bind_sig)
    pub_path = os.path.join(directory, f"{name}.pub.gpg")
    sec_path = os.path.join(directory, f"{name}.sec.gpg")
    with open(pub_path, "wb") as fh:
        fh.write(public)
    fd = os.open(sec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secret)
    return KeyPair(pub_path, sec_path, fpr.hex().upper())


# -- a program that asks on its terminal ------------------------------------------------------------

def run_in_terminal(argv: List[str], prompt: bytes, answer: str, *, env: Optional[Dict[str, str]] = None,
                    timeout: float = 120) -> Tuple[int, str, int]:
    """Run ``argv`` on a pseudo-terminal (its controlling terminal, where getpass and sq read
    passwords) and type ``answer`` each time its output shows ``prompt`` once more (case-insensitive).
    Returns (exit code, what it printed on the terminal, how many times it was answered)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the program, with the pseudo-terminal as its terminal
        if env is None:
            os.execvp(argv[0], argv)
        os.execvpe(argv[0], argv, env)
    output, answered, deadline = b"", 0, time.time() + timeout
    while time.time() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
        if output.lower().count(prompt.lower()) > answered:
            os.write(fd, answer.encode() + b"\n")
            answered += 1
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace").replace("\r", ""), answered
