"""Authenticity: every object the agent writes is signed with the writing cluster's signing key, and
every reader checks the signature against the keys trusted for that cluster (docs/signing.md).

- Data objects (dumps, globals, base-backup archives, backup_manifest copies, WAL files, erasure
  records) are signed and encrypted in the one gpg pass that already encrypts them
  (``--sign --encrypt``, :meth:`Signatures.sign_args`), so ``gpg --decrypt`` with stock tools shows the
  good signature. The decrypting gpg's status lines are judged by :meth:`Signatures.judge`.
- Plain JSON (``manifest.json``) gets a detached armored signature beside it (``manifest.json.sig``,
  written before the manifest, which stays the commit point): :meth:`Signatures.sign_detached`,
  :meth:`Signatures.verify_detached`.

Trust is a set of primary-key fingerprints per cluster: the key in ``signing.secret_key_file`` and
every key in ``signing.trusted_public_key_files``. Operational records (audit records and chain
entries, verification records, drill reports: ``operational=True``) also accept the records-only keys
of the restore hosts (``signing.record_secret_key_file``, with which a restore host signs what it
writes, and ``signing.record_trusted_public_key_files``); a data object, manifest, WAL file, erasure
record or archive.json signed by one of those is refused, naming it as a records-only key. Only those
keys are imported into the private GnuPG home, and a signature counts only when gpg reports VALIDSIG
and its primary-key fingerprint is in the set: an unknown, untrusted, bad or revoked-key signature is
refused (exit 4) naming the object and the signer. An object without any signature is refused while
``signing.require`` holds and a
signing key is configured; ``--allow-unsigned`` (audited; only for backups written before signing
was enabled) sets ``require`` off for one command.
"""
from __future__ import annotations

import os
import stat
import tempfile
import threading
from typing import Dict, List, Optional, Set

from .config_signing import SigningSettings
from .errors import EncryptionKeyError, IntegrityError
from .signing_cache import VerdictCache, verdict_key

SIGNATURE_SUFFIX = ".sig"
#: The hash signatures are made over. gpg picks SHA-512 for an Ed25519 key; SHA-256 is as strong for the
#: purpose (RFC 9580 asks for >= 256 bits with EdDSA) and runs on the CPU's SHA extensions: signing a
#: 230 MB dump in the one gpg pass costs 0.15 s of CPU instead of 0.3 s (a 2-core host is CPU-bound there).
#: Verification reads the algorithm from each signature, so earlier SHA-512 signatures still verify.
SIGNATURE_DIGEST = "SHA256"


class SignatureError(IntegrityError):
    """An object without a trusted signature (exit 4, like every integrity failure): the catalog leaves
    such a backup out (``Repository.refused``) instead of failing every listing."""

#: Status keywords of a signature gpg could verify cryptographically (the key may since have expired).
_GOOD = {"GOODSIG", "EXPSIG", "EXPKEYSIG"}
#: Status keywords that mean "this object carries a signature we must not accept".
SIGNATURE_TROUBLE = {"BADSIG", "ERRSIG", "REVKEYSIG"}


class Signatures:
    """The signing keys of one cluster, in a private GnuPG home (``home``: a :class:`~pg_backup.crypto.GpgHome`)."""

    def __init__(self, home: "object", settings: SigningSettings):
        self.home = home
        self.settings = settings
        self._lock = threading.Lock()
        #: Primary fingerprints of the secret keys imported so far, by setting name (None: not set).
        self._secrets: Dict[str, Optional[str]] = {}
        self._trusted: Optional[Set[str]] = None
        self._record_trusted: Optional[Set[str]] = None
        #: Optional :class:`~pg_backup.signing_cache.VerdictCache` of positive detached-signature verdicts.
        self.verdict_cache: Optional[VerdictCache] = None

    @property
    def configured(self) -> bool:
        return self.settings.configured

    @property
    def required(self) -> bool:
        """Readers refuse objects without a trusted signature."""
        return self.configured and bool(self.settings.require)

    # -- keys ------------------------------------------------------------------------------------
    def own_fingerprint(self) -> Optional[str]:
        """The primary fingerprint of this cluster's signing key (imported on first use), or None when
        this host has none (a restore host)."""
        return self._secret("secret_key_file")

    def record_fingerprint(self) -> Optional[str]:
        """The key this host signs operational records with: the cluster's own key on a database host,
        else this host's records-only key (``signing.record_secret_key_file``, restore hosts), else None."""
        return self.own_fingerprint() or self._secret("record_secret_key_file")

    def _secret(self, setting: str) -> Optional[str]:
        """The fingerprint of the secret key file in ``signing.<setting>``, imported on first use."""
        with self._lock:
            if setting not in self._secrets:
                path = getattr(self.settings, setting)
                self._secrets[setting] = self._import_secret(path, f"signing.{setting}") if path else None
            return self._secrets[setting]

    def _import_secret(self, path: str, where: str) -> str:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise EncryptionKeyError(f"{where} {path} does not exist",
                                     hint="make one with 'pg-backup keys create --purpose signing'") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise EncryptionKeyError(f"{where} {path} is accessible by group or others (mode "
                                     f"{stat.S_IMODE(st.st_mode):04o}); run chmod 600 {path}")
        if st.st_uid != os.geteuid():
            raise EncryptionKeyError(f"{where} {path} is not owned by this user (uid {os.geteuid()})",
                                     hint=f"chown it to the cluster's OS user, mode 0600")
        res = self.home.run("--import", path)
        if res.returncode != 0:
            raise EncryptionKeyError(f"cannot import {where} {path}: {last_line(res.stderr)}")
        fprs = primary_fingerprints(self.home.run("--with-colons", "--import-options", "show-only", "--import",
                                           path).stdout.decode(errors="replace"), "sec")
        if len(fprs) != 1:
            raise EncryptionKeyError(f"{where} {path} must hold exactly one OpenPGP secret key, found {len(fprs)}")
        return fprs[0]

    def trusted(self) -> Set[str]:
        """Primary fingerprints trusted for this cluster; their public keys are imported on first use."""
        own = self.own_fingerprint()
        with self._lock:
            if self._trusted is None:
                found: Set[str] = {own} if own else set()
                for path in self.settings.trusted_public_key_files:
                    found.update(self._import_public(path, "signing.trusted_public_key_files"))
                self._trusted = found
            return self._trusted

    def record_trusted(self) -> Set[str]:
        """Primary fingerprints trusted for operational records: :meth:`trusted`, this host's records-only
        key and ``signing.record_trusted_public_key_files`` (imported on first use)."""
        trusted = self.trusted()
        mine = self.record_fingerprint()
        with self._lock:
            if self._record_trusted is None:
                found = set(trusted) | ({mine} if mine else set())
                for path in self.settings.record_trusted_public_key_files:
                    found.update(self._import_public(path, "signing.record_trusted_public_key_files"))
                self._record_trusted = found
            return self._record_trusted

    def _import_public(self, path: str, where: str) -> List[str]:
        if not os.path.exists(path):
            raise EncryptionKeyError(f"{where}: {path} does not exist")
        shown = self.home.run("--with-colons", "--import-options", "show-only", "--import", path)
        fprs = primary_fingerprints(shown.stdout.decode(errors="replace"), "pub")
        if shown.returncode != 0 or not fprs:
            raise EncryptionKeyError(f"{where}: {path} is not an OpenPGP public key")
        res = self.home.run("--import", path)
        if res.returncode != 0:
            raise EncryptionKeyError(f"cannot import {path}: {last_line(res.stderr)}")
        return fprs

    def _records_only(self, key: str) -> bool:
        """``key`` (a fingerprint or long key id) is trusted for operational records but not for data."""
        if not (self.settings.record_secret_key_file or self.settings.record_trusted_public_key_files):
            return False
        cluster = self.trusted()
        return any(f.endswith(key.upper()) and f not in cluster for f in self.record_trusted())

    # -- data objects: sign-then-encrypt in one gpg pass --------------------------------------------
    def sign_args(self) -> List[str]:
        """Arguments that make an encrypting gpg sign too (none without a signing key)."""
        fpr = self.own_fingerprint()
        return ["--sign", "--local-user", fpr, "--digest-algo", SIGNATURE_DIGEST] if fpr else []

    def judge(self, status: List[str], what: str) -> Optional[str]:
        """The verdict on the signature of a decrypted object from gpg's status lines: the signer's
        primary fingerprint, or None for an unsigned object admitted because signing is not required.
        Raises IntegrityError (exit 4) naming ``what`` and the signer for anything else."""
        return self._verdict(_parse_status(status), what)

    def _verdict(self, sigs: List[List[str]], what: str, operational: bool = False) -> Optional[str]:
        if not sigs:
            if self.required:
                raise SignatureError(f"{what} is not signed; this cluster requires a signature of a trusted key",
                                     hint="only for backups written before signing was enabled: run the command "
                                          "again with --allow-unsigned (audited)")
            return None
        signer: Optional[str] = None
        for fields in sigs:
            word = fields[0]
            if word == "VALIDSIG":
                signer = fields[10] if len(fields) > 10 else fields[1]
            elif word in ("BADSIG", "REVKEYSIG"):
                raise SignatureError(f"{what} has a {'bad signature' if word == 'BADSIG' else 'signature of a revoked key'} "
                                     f"(key {fields[1] if len(fields) > 1 else '?'}): it was altered or forged")
            elif word == "ERRSIG":
                key = fields[7] if len(fields) > 7 and fields[7] != "-" else (fields[1] if len(fields) > 1 else "?")
                if self.configured and not operational and self._records_only(key):
                    raise _records_only_error(what, key)
                if self.configured:
                    raise SignatureError(f"{what} is signed by key {key}, which is not trusted for this cluster",
                                         hint="if it is this cluster's (new) signing key, add its public key to "
                                              "signing.trusted_public_key_files; otherwise the object is forged or "
                                              "belongs to another cluster")
        if signer is None:                  # ERRSIG on a host with no signing keys: cannot judge
            return None
        if self.configured and signer not in (self.record_trusted() if operational else self.trusted()):
            if not operational and self._records_only(signer):
                raise _records_only_error(what, signer)
            raise SignatureError(f"{what} is signed by key {signer}, which is not trusted for this cluster",
                                 hint="if it is this cluster's (new) signing key, add its public key to "
                                      "signing.trusted_public_key_files; otherwise the object is forged or belongs "
                                      "to another cluster")
        return signer

    # -- plain JSON: detached signatures ------------------------------------------------------------
    def sign_detached(self, data: bytes, what: str, operational: bool = False) -> Optional[bytes]:
        """An armored detached signature of ``data`` (None without a signing key). ``operational``: an
        operational record, which a restore host signs with its records-only key."""
        fpr = self.record_fingerprint() if operational else self.own_fingerprint()
        if not fpr:
            return None
        with self._scratch(data) as path:
            res = self.home.run("--local-user", fpr, "--digest-algo", SIGNATURE_DIGEST, "--armor", "--detach-sign",
                                "--output", "-", path)
        if res.returncode != 0 or not res.stdout:
            raise EncryptionKeyError(f"signing {what} failed: {last_line(res.stderr) or 'gpg exit ' + str(res.returncode)}")
        return res.stdout

    def verify_detached(self, data: bytes, signature: Optional[bytes], what: str,
                        operational: bool = False) -> Optional[str]:
        """The signer of ``data`` (see :meth:`judge`); ``signature`` None means the object has none.
        ``operational``: an operational record, for which records-only keys are trusted too."""
        if signature is None:
            return self._verdict([], what)
        if not self.configured:
            return None
        trusted = self.record_trusted() if operational else self.trusted()
        cache, cache_key = self.verdict_cache, None
        if cache is not None:
            cache_key = verdict_key(data, signature, trusted)
            cached = cache.get(cache_key)
            if cached is not None and cached in trusted:
                return cached
        with self._scratch(data) as data_path, self._scratch(signature) as sig_path:
            res = self.home.run("--status-fd", "1", "--verify", sig_path, data_path)
        sigs = _parse_status(res.stdout.decode(errors="replace").splitlines())
        if not sigs:
            raise IntegrityError(f"{what}: its signature file is not an OpenPGP signature ({last_line(res.stderr)})")
        signer = self._verdict(sigs, what, operational)
        if cache is not None and cache_key is not None and signer is not None:
            cache.put(cache_key, signer)
        return signer

    def _scratch(self, data: bytes) -> "_ScratchFile":
        return _ScratchFile(self.home.home, data)


def _records_only_error(what: str, signer: str) -> SignatureError:
    return SignatureError(f"{what} is signed by key {signer}, which is trusted for operational records only "
                          f"(signing.record_trusted_public_key_files: a restore host's key), never for backups, "
                          f"manifests, WAL or archive.json: forged, or that host's key was misused",
                          hint="if it is this cluster's own (new) signing key, list it in "
                               "signing.trusted_public_key_files instead")


class _ScratchFile:
    """A file in the private GnuPG home holding ``data`` for the length of a ``with`` block."""

    def __init__(self, directory: str, data: bytes):
        fd, self.path = tempfile.mkstemp(dir=directory, prefix="sig-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc: object) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _parse_status(lines: List[str]) -> List[List[str]]:
    """The signature status records (VALIDSIG, GOODSIG, BADSIG, ERRSIG, ...) among gpg status lines."""
    words = _GOOD | SIGNATURE_TROUBLE | {"VALIDSIG"}
    out = []
    for line in lines:
        fields = line.strip().split()
        if len(fields) > 1 and fields[0] == "[GNUPG:]" and fields[1] in words:
            out.append(fields[1:])
    return out


def primary_fingerprints(colons: str, kind: str) -> List[str]:
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


def last_line(data: bytes) -> str:
    """gpg's last message line, without its 'gpg: ' prefix."""
    lines = [ln.strip() for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1].replace("gpg: ", "") if lines else ""
