"""Client-side encryption with OpenPGP (GnuPG): AES-256, decryptable in a disaster with stock ``gpg``.

Why GnuPG rather than a home-made format: a 7-year archive must stay readable by tools that will
still exist, and every operator already has ``gpg``. Messages are OpenPGP SEIPD (AES-256 with MDC
integrity), compression off (zstd already ran), the widest-compatible choice.

GnuPG always runs in a private, temporary home directory (0700), never the user's keyring, and
secrets reach it through inherited pipes (``--passphrase-fd``), never argv or the environment.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from typing import Dict, List, Optional, Sequence

from .config import EncryptionSettings
from .errors import EncryptionKeyError, IntegrityError, UsageError
from .process import ChildProcess

CIPHER = "AES256"
_BASE = ["--batch", "--no-tty", "--quiet", "--no-greeting", "--no-permission-warning"]
_FPR_SALT = b"pg-backup passphrase fingerprint v1"


def read_secret_file(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().rstrip("\r\n")
    except FileNotFoundError:
        raise EncryptionKeyError(f"{what} {path} does not exist") from None
    except PermissionError:
        raise EncryptionKeyError(f"{what} {path} is not readable by this user") from None
    if not value:
        raise EncryptionKeyError(f"{what} {path} is empty")
    return value


def passphrase_fingerprint(passphrase: str) -> str:
    """A stable name for a passphrase that does not reveal it (scrypt, so guessing stays expensive)."""
    digest = hashlib.scrypt(passphrase.encode(), salt=_FPR_SALT, n=2 ** 14, r=8, p=1, maxmem=2 ** 25, dklen=16)
    return "scrypt:" + digest.hex()


class GnuPG:
    """One private GnuPG home for the lifetime of an agent command."""

    def __init__(self, settings: EncryptionSettings):
        self.settings = settings
        self.binary = shutil.which(settings.gpg_binary) or settings.gpg_binary
        if not os.path.exists(self.binary):
            raise UsageError(f"GnuPG executable {settings.gpg_binary!r} not found",
                             hint="install the gnupg package or set encryption.gpg_binary")
        self.home = tempfile.mkdtemp(prefix="pgb-gpg-")
        os.chmod(self.home, 0o700)
        self._public_fpr: Optional[str] = None
        self._secret_fprs: Optional[List[str]] = None
        self._passphrases: Optional[Dict[str, str]] = None

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        gpgconf = shutil.which("gpgconf")
        if gpgconf and os.path.exists(os.path.join(self.home, "private-keys-v1.d")):
            subprocess.run([gpgconf, "--homedir", self.home, "--kill", "gpg-agent"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "GnuPG":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cmd(self, *args: str) -> List[str]:
        return [self.binary, "--homedir", self.home, *_BASE, *args]

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self._cmd(*args), stdin=subprocess.DEVNULL, capture_output=True, check=False)

    # -- keys ----------------------------------------------------------------------------------
    def encryption_fingerprint(self) -> str:
        """Fingerprint recorded in manifests of new backups."""
        if self.settings.mode == "passphrase":
            return passphrase_fingerprint(self._new_passphrase())
        if self._public_fpr is None:
            path = self.settings.public_key_file
            if not path:
                raise EncryptionKeyError("no encryption.public_key_file configured; this host cannot make backups")
            if not os.path.exists(path):
                raise EncryptionKeyError(f"public key file {path} does not exist")
            res = self._run("--with-colons", "--import-options", "show-only", "--import", path)
            fprs = _primary_fingerprints(res.stdout.decode(errors="replace"), "pub")
            if res.returncode != 0 or not fprs:
                raise EncryptionKeyError(f"{path} is not a readable OpenPGP public key",
                                         hint="export it with 'gpg --export KEYID > file'")
            if len(fprs) > 1:
                raise EncryptionKeyError(f"{path} holds {len(fprs)} keys; put exactly one public key in it")
            self._public_fpr = fprs[0]
        return self._public_fpr

    def _new_passphrase(self) -> str:
        if not self.settings.passphrase_file:
            raise EncryptionKeyError("no encryption.passphrase_file configured")
        return read_secret_file(self.settings.passphrase_file, "passphrase file")

    def _all_passphrases(self) -> Dict[str, str]:
        if self._passphrases is None:
            found: Dict[str, str] = {}
            paths = ([self.settings.passphrase_file] if self.settings.passphrase_file else []) + \
                list(self.settings.old_passphrase_files)
            for path in paths:
                secret = read_secret_file(path, "passphrase file")
                found[passphrase_fingerprint(secret)] = secret
            self._passphrases = found
        return self._passphrases

    def secret_fingerprints(self) -> List[str]:
        """Import the configured secret keys into the private home; return their primary fingerprints."""
        if self._secret_fprs is None:
            for path in self.settings.private_key_files:
                if not os.path.exists(path):
                    raise EncryptionKeyError(f"private key file {path} does not exist")
                res = self._run("--import", path)
                if res.returncode != 0:
                    raise EncryptionKeyError(f"cannot import private key {path}: {_last_line(res.stderr)}")
            res = self._run("--with-colons", "--list-secret-keys")
            self._secret_fprs = _primary_fingerprints(res.stdout.decode(errors="replace"), "sec")
        return self._secret_fprs

    def available_fingerprints(self) -> List[str]:
        """Every key this host could decrypt with (for messages and ``list``)."""
        if self.settings.mode == "passphrase" or self.settings.passphrase_file or self.settings.old_passphrase_files:
            fprs = list(self._all_passphrases())
        else:
            fprs = []
        return fprs + self.secret_fingerprints()

    # -- processes -----------------------------------------------------------------------------
    def start_encrypt(self) -> "GpgProcess":
        """A gpg process encrypting its stdin to its stdout with the key for new backups."""
        common = ["--compress-algo", "none", "--cipher-algo", CIPHER, "--output", "-"]
        if self.settings.mode == "passphrase":
            return GpgProcess(self._cmd(), ["--pinentry-mode", "loopback", "--no-symkey-cache", "--symmetric",
                                            "--s2k-cipher-algo", CIPHER, "--s2k-digest-algo", "SHA512",
                                            "--s2k-mode", "3", "--s2k-count", "65011712", *common],
                              self._new_passphrase())
        self.encryption_fingerprint()
        return GpgProcess(self._cmd(), ["--trust-model", "always", "--recipient-file",
                                        self.settings.public_key_file or "", "--encrypt", *common], None)

    def require_key(self, fingerprint: str, what: str) -> Optional[str]:
        """Check a configured key can decrypt what ``fingerprint`` names, before any work starts.

        Returns the passphrase gpg needs (the symmetric one, or the one protecting the secret key)."""
        if fingerprint.startswith("scrypt:"):
            secret = self._all_passphrases().get(fingerprint)
            if secret is None:
                raise EncryptionKeyError(
                    f"{what} was encrypted with passphrase {fingerprint}, which none of the configured "
                    f"passphrases matches", hint="add the old passphrase file to encryption.old_passphrase_files")
            return secret
        if fingerprint not in self.secret_fingerprints():
            raise EncryptionKeyError(
                f"{what} was encrypted to key {fingerprint}, whose private key is not configured",
                hint="list its secret key file in encryption.private_key_files")
        if self.settings.private_key_passphrase_file:
            return read_secret_file(self.settings.private_key_passphrase_file, "private key passphrase file")
        return None

    def start_decrypt(self, fingerprint: str, what: str) -> "GpgProcess":
        """A gpg process decrypting its stdin to its stdout."""
        secret = self.require_key(fingerprint, what)
        return GpgProcess(self._cmd(), ["--pinentry-mode", "loopback", "--no-symkey-cache", "--decrypt",
                                        "--output", "-"], secret, decrypt=True)


class GpgProcess(ChildProcess):
    """A running gpg whose stdin/stdout carry the data; status and stderr are collected aside."""

    def __init__(self, prefix: Sequence[str], rest: Sequence[str], secret: Optional[str],
                 decrypt: bool = False):
        self.decrypt = decrypt
        self.status: List[str] = []
        self.stderr: List[bytes] = []
        status_r, status_w = os.pipe()
        fds = [status_w]
        args = [*prefix, "--status-fd", str(status_w)]
        secret_r = None
        if secret is not None:
            secret_r, secret_w = os.pipe()
            # A passphrase is far smaller than a pipe buffer: the write never blocks. Only the fd
            # number appears in argv.
            os.write(secret_w, secret.encode() + b"\n")
            os.close(secret_w)
            fds.append(secret_r)
            args += ["--passphrase-fd", str(secret_r)]
        args += list(rest)
        super().__init__(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=fds)
        os.close(status_w)
        if secret_r is not None:
            os.close(secret_r)
        self.drain(os.fdopen(status_r, "rb"), self.on_status)

    def on_status(self, raw: bytes) -> None:
        self.status.append(raw.decode(errors="replace").strip())

    def on_stderr(self, raw: bytes) -> None:
        if len(self.stderr) < 50:
            self.stderr.append(raw)

    def finish(self, what: str) -> None:
        """Wait for gpg; translate its verdict into the agent's errors."""
        rc = self.wait()
        tokens = {s.split()[1] for s in self.status if s.startswith("[GNUPG:] ") and len(s.split()) > 1}
        message = _last_line(b"".join(self.stderr))
        if self.decrypt:
            if "NO_SECKEY" in tokens and "DECRYPTION_OKAY" not in tokens:
                raise EncryptionKeyError(f"cannot decrypt {what}: its private key is not available")
            if "BAD_PASSPHRASE" in tokens or "Bad session key" in message or "Bad passphrase" in message:
                raise EncryptionKeyError(f"cannot decrypt {what}: wrong passphrase ({message})")
            if rc != 0 or "DECRYPTION_OKAY" not in tokens:
                raise IntegrityError(f"decryption of {what} failed authentication ({message or 'gpg exit ' + str(rc)})",
                                     hint="the object is damaged or was tampered with")
            return
        if rc != 0:
            raise EncryptionKeyError(f"encryption of {what} failed: {message or 'gpg exit ' + str(rc)}")


def _primary_fingerprints(colons: str, kind: str) -> List[str]:
    """The fingerprint line that follows each primary-key record of ``kind`` ('pub' or 'sec')."""
    result: List[str] = []
    expect = False
    for line in colons.splitlines():
        fields = line.split(":")
        if fields[0] == kind:
            expect = True
        elif fields[0] == "fpr" and expect:
            result.append(fields[9])
            expect = False
        elif fields[0] in ("sub", "ssb"):
            expect = False
    return result


def _last_line(data: bytes) -> str:
    lines = [ln.strip() for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1].replace("gpg: ", "") if lines else ""
