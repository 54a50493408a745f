"""Real OpenPGP keys for tests, made with the same gpg the agent uses (no fixtures on disk)."""
from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Optional


@dataclass
class KeyPair:
    public_file: str
    secret_file: str
    fingerprint: str
    passphrase_file: Optional[str] = None


def make_keypair(directory: str, name: str = "restore-operator", passphrase: Optional[str] = None) -> KeyPair:
    """An ed25519/cv25519 key pair exported to files (secret file 0600)."""
    home = tempfile.mkdtemp(prefix="pgb-test-gpg-")
    base = ["gpg", "--homedir", home, "--batch", "--quiet", "--pinentry-mode", "loopback",
            "--passphrase", passphrase or ""]
    subprocess.run(base + ["--quick-gen-key", f"{name} <{name}@example.invalid>", "future-default", "default", "never"],
                   check=True, capture_output=True)
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
