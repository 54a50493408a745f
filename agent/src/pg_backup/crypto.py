"""Client-side encryption with OpenPGP (GnuPG): AES-256, decryptable in a disaster with stock ``gpg``.

Why GnuPG rather than a home-made format: a 7-year archive must stay readable by tools that will
still exist, and every operator already has ``gpg``.

The packet format is pinned to what every OpenPGP implementation reads, whatever the key advertises
or the local GnuPG prefers: a Symmetrically Encrypted Integrity Protected Data packet version 1
(SEIPD v1: CFB with the SHA-1 modification detection code), AES-256, compression off (zstd already
ran). GnuPG 2.3+ writes OCB (an AEAD packet only GnuPG reads) when every recipient key advertises
AEAD, and no option turns that off, so the agent asks gpg what it is writing (the
``BEGIN_ENCRYPTION <mdc> <cipher> [<aead>]`` status line) and kills it at once when that is not
SEIPD v1 + AES-256: the backup or WAL push fails with exit 8, nothing is committed
(:func:`packet_format_problem`). ``--no-options`` keeps a system-wide gpg.conf (``force-aead``,
another cipher) out as well.

GnuPG always runs in a private, temporary home directory (0700, :class:`GpgHome`), never the user's
keyring, and secrets reach it through inherited pipes (``--passphrase-fd``), never argv or the
environment.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .config import EncryptionSettings
from .config_signing import SigningSettings
from .errors import EncryptionKeyError, IntegrityError, UsageError
from .fingerprint_cache import FingerprintCache, file_identity
from .process import ChildProcess
from .signing import SIGNATURE_TROUBLE, Signatures, last_line, primary_fingerprints

CIPHER = "AES256"
#: ``BEGIN_ENCRYPTION`` values of the one format the agent writes: MDC method 2 (SHA-1), cipher 9 (AES-256).
_MDC_SHA1, _AES256 = "2", "9"
_BASE = ["--no-options", "--batch", "--no-tty", "--quiet", "--no-greeting", "--no-permission-warning"]
_FPR_SALT = b"pg-backup passphrase fingerprint v1"


def read_secret_file(path: str, what: str) -> str:
    return _read_secret_identified(path, what)[0]


def _read_secret_identified(path: str, what: str) -> Tuple[str, str, float]:
    """The secret in ``path``, and the identity of the file it was read from (see fingerprint_cache)."""
    try:
        with open(path, encoding="utf-8") as fh:
            identity, ctime = file_identity(fh.fileno(), path)
            value = fh.read().rstrip("\r\n")
    except FileNotFoundError:
        raise EncryptionKeyError(f"{what} {path} does not exist") from None
    except PermissionError:
        raise EncryptionKeyError(f"{what} {path} is not readable by this user") from None
    if not value:
        raise EncryptionKeyError(f"{what} {path} is empty")
    return value, identity, ctime


def passphrase_fingerprint(passphrase: str) -> str:
    """A stable name for a passphrase that does not reveal it (scrypt, so guessing stays expensive)."""
    digest = hashlib.scrypt(passphrase.encode(), salt=_FPR_SALT, n=2 ** 14, r=8, p=1, maxmem=2 ** 25, dklen=16)
    return "scrypt:" + digest.hex()


HOME_PREFIX = "pgb-gpg-"


def sweep_stale_homes(parent: Optional[str] = None) -> List[str]:
    """Remove the private GnuPG homes (and stop the agents) of this user's agent processes that died
    without closing theirs: killed by SIGKILL or the OOM killer, they would leave imported secret keys
    (a restore's decryption key, a signing key) in the temporary directory for good. A home is named
    ``pgb-gpg-<pid>-<random>``; it is removed only when it belongs to this user and no process has that
    pid any more (a live process's home is never touched; homes of agents before the pid was in the
    name are left alone; a process of another pid namespace sharing this directory would look dead:
    give such hosts a private temporary directory, as systemd's PrivateTmp does). Returns the homes
    removed."""
    parent = parent or tempfile.gettempdir()
    removed: List[str] = []
    try:
        names = [n for n in os.listdir(parent) if n.startswith(HOME_PREFIX)]
    except OSError:
        return removed
    uid = os.getuid()
    for name in names:
        pid_text, _, rest = name[len(HOME_PREFIX):].partition("-")
        path = os.path.join(parent, name)
        try:
            if not (pid_text.isdigit() and rest) or os.lstat(path).st_uid != uid:
                continue
            os.kill(int(pid_text), 0)
            continue                            # that process still runs
        except ProcessLookupError:
            pass
        except OSError:                         # gone already, or a pid of another user: not ours to judge
            continue
        gpgconf = shutil.which("gpgconf")
        if gpgconf and os.path.exists(os.path.join(path, "private-keys-v1.d")):
            subprocess.run([gpgconf, "--homedir", path, "--kill", "gpg-agent"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


class GpgHome:
    """A private, temporary GnuPG home (0700) and the gpg that runs in it; removed by :meth:`close`
    (with the gpg-agent a secret-key import started)."""

    def __init__(self, gpg_binary: str = "gpg"):
        self.binary = shutil.which(gpg_binary) or gpg_binary
        if not os.path.exists(self.binary):
            raise UsageError(f"GnuPG executable {gpg_binary!r} not found",
                             hint="install the gnupg package or set encryption.gpg_binary")
        sweep_stale_homes()
        self.home = tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-")
        os.chmod(self.home, 0o700)

    def close(self) -> None:
        gpgconf = shutil.which("gpgconf")
        if gpgconf and os.path.exists(os.path.join(self.home, "private-keys-v1.d")):
            subprocess.run([gpgconf, "--homedir", self.home, "--kill", "gpg-agent"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "GpgHome":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cmd(self, *args: str) -> List[str]:
        return [self.binary, "--homedir", self.home, *_BASE, *args]

    def run(self, *args: str, secret: Optional[str] = None) -> subprocess.CompletedProcess:
        """gpg with ``args``; ``secret`` (a passphrase) reaches it through an inherited pipe."""
        if secret is None:
            return subprocess.run(self.cmd(*args), stdin=subprocess.DEVNULL, capture_output=True, check=False)
        read_end, write_end = os.pipe()
        os.write(write_end, secret.encode() + b"\n")
        os.close(write_end)
        try:
            return subprocess.run(self.cmd("--pinentry-mode", "loopback", "--passphrase-fd", str(read_end), *args),
                                  stdin=subprocess.DEVNULL, capture_output=True, check=False, pass_fds=(read_end,))
        finally:
            os.close(read_end)


class GnuPG(GpgHome):
    """One private GnuPG home for the lifetime of an agent command."""

    def __init__(self, settings: EncryptionSettings, signing: Optional[SigningSettings] = None):
        super().__init__(settings.gpg_binary)
        self.settings = settings
        #: The cluster's signing keys (pg_backup.signing): writers sign, readers judge signatures.
        self.signatures = Signatures(self, signing or SigningSettings())
        self._public_fpr: Optional[str] = None
        self._secret_fprs: Optional[List[str]] = None
        self._passphrases: Optional[Dict[str, str]] = None
        #: Public fingerprints by key-file identity (the context points it at paths.state_dir).
        self.fingerprint_cache = FingerprintCache(None)

    def __enter__(self) -> "GnuPG":
        return self

    # -- keys ----------------------------------------------------------------------------------
    def encryption_fingerprint(self) -> str:
        """Fingerprint recorded in manifests of new backups."""
        if self.settings.mode == "passphrase":
            if not self.settings.passphrase_file:
                raise EncryptionKeyError("no encryption.passphrase_file configured")
            fingerprint = self._passphrase_file(self.settings.passphrase_file)[0]
            self.signatures.own_fingerprint()   # once, as below (a backup does both beside its server checks)
            return fingerprint
        if self._public_fpr is None:
            path = self.settings.public_key_file
            if not path:
                raise EncryptionKeyError("no encryption.public_key_file configured; this host cannot make backups")
            if not os.path.exists(path):
                raise EncryptionKeyError(f"public key file {path} does not exist")
            self._public_fpr = self._public_key_file(path)
            self.signatures.own_fingerprint()   # once, before threads encrypt at once
        return self._public_fpr

    def _public_key_file(self, path: str) -> str:
        """The primary fingerprint of the one usable public key in ``path``; gpg runs unless the cache knows
        this very file (identity and SHA-256 of its content) and the key has not expired since."""
        try:
            with open(path, "rb") as fh:
                identity, ctime = file_identity(fh.fileno(), path)
                digest = hashlib.sha256(fh.read()).hexdigest()
        except OSError as exc:
            raise EncryptionKeyError(f"public key file {path} is not readable: {exc.strerror}") from None

        def compute() -> str:
            res = self.run("--with-colons", "--import-options", "show-only", "--import", path)
            colons = res.stdout.decode(errors="replace")
            fprs = primary_fingerprints(colons, "pub")
            if res.returncode != 0 or not fprs:
                raise EncryptionKeyError(f"{path} is not a readable OpenPGP public key", hint="export it with "
                                         "'pg-backup keys export' or 'gpg --armor --export KEYID'")
            if len(fprs) > 1:
                raise EncryptionKeyError(f"{path} holds {len(fprs)} keys; put exactly one public key in it")
            _refuse_unusable(colons, fprs[0], path)
            return f"{fprs[0]}:{colon_expiry(colons)}"

        # A key that expired since it was cached is a miss: gpg runs and names the problem.
        found = self.fingerprint_cache.lookup(f"public-key|{identity}|{digest}", ctime, compute,
                                              valid=lambda value: not _expired(value.partition(":")[2]))
        return found.partition(":")[0]

    def _new_passphrase(self) -> str:
        if not self.settings.passphrase_file:
            raise EncryptionKeyError("no encryption.passphrase_file configured")
        return read_secret_file(self.settings.passphrase_file, "passphrase file")

    def _passphrase_file(self, path: str) -> Tuple[str, str]:
        """(fingerprint, passphrase) of a passphrase file; the scrypt is skipped when the cache knows the file."""
        secret, identity, ctime = _read_secret_identified(path, "passphrase file")
        return self.fingerprint_cache.lookup("passphrase|" + identity, ctime,
                                             lambda: passphrase_fingerprint(secret)), secret

    def _all_passphrases(self) -> Dict[str, str]:
        if self._passphrases is None:
            found: Dict[str, str] = {}
            paths = ([self.settings.passphrase_file] if self.settings.passphrase_file else []) + \
                list(self.settings.old_passphrase_files)
            for path in paths:
                fingerprint, secret = self._passphrase_file(path)
                found[fingerprint] = secret
            self._passphrases = found
        return self._passphrases

    def secret_fingerprints(self) -> List[str]:
        """Import the configured secret keys into the private home; return their primary fingerprints."""
        if self._secret_fprs is None:
            for path in self.settings.private_key_files:
                if not os.path.exists(path):
                    raise EncryptionKeyError(f"private key file {path} does not exist")
                res = self.run("--import", path)
                if res.returncode != 0:
                    raise EncryptionKeyError(f"cannot import private key {path}: {last_line(res.stderr)}")
            res = self.run("--with-colons", "--list-secret-keys")
            self._secret_fprs = primary_fingerprints(res.stdout.decode(errors="replace"), "sec")
        return self._secret_fprs

    def available_fingerprints(self) -> List[str]:
        """Every key this host could decrypt with (for messages and ``list``)."""
        if self.settings.mode == "passphrase" or self.settings.passphrase_file or self.settings.old_passphrase_files:
            fprs = list(self._all_passphrases())
        else:
            fprs = []
        fprs = fprs + self.secret_fingerprints()
        self.signatures.trusted()   # import the trusted signing keys once, before threads decrypt at once
        return fprs

    # -- processes -----------------------------------------------------------------------------
    def start_encrypt(self) -> "GpgProcess":
        """A gpg process encrypting its stdin to its stdout with the key for new backups."""
        common = ["--compress-algo", "none", "--cipher-algo", CIPHER, *self.signatures.sign_args(), "--output", "-"]
        if self.settings.mode == "passphrase":
            return GpgProcess(self.cmd(), ["--pinentry-mode", "loopback", "--no-symkey-cache", "--symmetric",
                                            "--s2k-cipher-algo", CIPHER, "--s2k-digest-algo", "SHA512",
                                            "--s2k-mode", "3", "--s2k-count", str(self.settings.s2k_count), *common],
                              self._new_passphrase(), encrypt=True)
        self.encryption_fingerprint()
        return GpgProcess(self.cmd(), ["--trust-model", "always", "--recipient-file",
                                        self.settings.public_key_file or "", "--encrypt", *common], None,
                          encrypt=True)

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
        self.signatures.trusted()
        return GpgProcess(self.cmd(), ["--pinentry-mode", "loopback", "--no-symkey-cache", "--decrypt",
                                        "--output", "-"], secret, decrypt=True, judge=self.signatures.judge)


class GpgProcess(ChildProcess):
    """A running gpg whose stdin/stdout carry the data; status and stderr are collected aside."""

    def __init__(self, prefix: Sequence[str], rest: Sequence[str], secret: Optional[str],
                 decrypt: bool = False, encrypt: bool = False,
                 judge: Optional[Callable[[List[str], str], Optional[str]]] = None):
        self.decrypt = decrypt
        self.judge = judge                  # decrypt: the verdict on the signature (raises, or the signer)
        self.signer: Optional[str] = None
        self.encrypt = encrypt
        self.format_seen = False            # a BEGIN_ENCRYPTION status line arrived
        self.format_problem: Optional[str] = None
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
        line = raw.decode(errors="replace").strip()
        self.status.append(line)
        if self.encrypt and line.startswith("[GNUPG:] BEGIN_ENCRYPTION"):
            self.format_seen = True
            self.format_problem = packet_format_problem(line)
            if self.format_problem and self.proc.poll() is None:
                self.proc.kill()  # not one more byte of a format other tools may not read

    def on_stderr(self, raw: bytes) -> None:
        if len(self.stderr) < 50:
            self.stderr.append(raw)

    def finish(self, what: str) -> None:
        """Wait for gpg; translate its verdict into the agent's errors."""
        rc = self.wait()
        tokens = {s.split()[1] for s in self.status if s.startswith("[GNUPG:] ") and len(s.split()) > 1}
        message = last_line(b"".join(self.stderr))
        if self.decrypt:
            if "NO_SECKEY" in tokens and "DECRYPTION_OKAY" not in tokens:
                raise EncryptionKeyError(f"cannot decrypt {what}: its private key is not available")
            if "BAD_PASSPHRASE" in tokens or "Bad session key" in message or "Bad passphrase" in message:
                raise EncryptionKeyError(f"cannot decrypt {what}: wrong passphrase ({message})")
            # gpg exits 2 for a signature it cannot verify: the judge decides on signatures, not rc.
            signature_only = rc == 2 and bool(tokens & SIGNATURE_TROUBLE) and "DECRYPTION_FAILED" not in tokens
            if (rc != 0 and not signature_only) or "DECRYPTION_OKAY" not in tokens:
                raise IntegrityError(f"decryption of {what} failed authentication ({message or 'gpg exit ' + str(rc)})",
                                     hint="the object is damaged or was tampered with")
            if self.judge is not None:
                self.signer = self.judge(self.status, what)
            return
        if self.format_problem:
            raise EncryptionKeyError(f"refusing to store {what}: {self.format_problem}",
                                     hint="see 'Keys' in the README (pg-backup keys check)")
        if rc != 0:
            raise EncryptionKeyError(f"encryption of {what} failed: {message or 'gpg exit ' + str(rc)}")
        if self.encrypt and not self.format_seen:   # fail closed: never store what we could not check
            raise EncryptionKeyError(f"refusing to store {what}: gpg did not report the packet format it wrote")


def packet_format_problem(status_line: str) -> Optional[str]:
    """What is wrong with the format a ``[GNUPG:] BEGIN_ENCRYPTION <mdc> <cipher> [<aead>]`` line
    announces, or None for SEIPD v1 with MDC and AES-256 (the only format the agent writes)."""
    fields = status_line.split()[2:]
    mdc, cipher = (fields + ["", ""])[:2]
    aead = fields[2] if len(fields) > 2 else "0"
    if aead != "0":
        return (f"gpg chose an AEAD packet (OCB, algorithm {aead}) because the key advertises AEAD; few OpenPGP "
                f"implementations read it. Remove AEAD from the key's preferences (gpg --edit-key KEY setpref "
                f"'AES256 AES192 AES SHA512 SHA384 SHA256 ZLIB BZIP2 ZIP Uncompressed', then export the public key "
                f"again) or make a key with 'pg-backup keys create'")
    if cipher != _AES256:
        return f"gpg chose cipher algorithm {cipher or '?'} instead of AES-256 (9)"
    if mdc != _MDC_SHA1:
        return "gpg chose a packet without integrity protection (no MDC)"
    return None


def colon_expiry(colons: str) -> str:
    """The expiry (seconds since the epoch, or "") of the first primary key in gpg's colon listing."""
    pub = next(line.split(":") for line in colons.splitlines() if line.startswith("pub:"))
    return pub[6] if len(pub) > 6 else ""


def _expired(expiry: str) -> bool:
    return bool(expiry) and expiry.isdigit() and int(expiry) <= time.time()


def _refuse_unusable(colons: str, fingerprint: str, path: str) -> None:
    """Name an expired or revoked public key before any work starts (gpg would only say "Unusable public key")."""
    pub = next(line.split(":") for line in colons.splitlines() if line.startswith("pub:"))
    if pub[1] == "r":
        raise EncryptionKeyError(f"public key {fingerprint} in {path} is revoked: nothing can be encrypted to it",
                                 hint="configure a new key (pg-backup keys create)")
    if pub[1] == "e" and pub[6]:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(int(pub[6])))
        raise EncryptionKeyError(f"public key {fingerprint} in {path} expired on {when}: backups and WAL archiving "
                                 f"cannot encrypt to it", hint="extend it (pg-backup keys extend) and redistribute "
                                 "the public key, or configure a new key")
