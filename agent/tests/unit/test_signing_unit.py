"""The verdict on signatures from gpg's status lines (pg_backup.signing), without running gpg."""
from __future__ import annotations

import pytest

from pg_backup.config_signing import SigningSettings
from pg_backup.errors import IntegrityError
from pg_backup.signing import SignatureError, Signatures

A = "B23E41973D06D9CDD253F0B819E7DF59B99F0B8F"
SUB = "1111111111111111111111111111111111111111"
F = "E617EA28A73E2FDF37EFE5D78A4D06AA01975635"


class Trusting(Signatures):
    def __init__(self, trusted, **settings):
        super().__init__(home=None, settings=SigningSettings(**settings))
        self._fixed = set(trusted)

    def trusted(self):
        return self._fixed


def validsig(fpr, primary):
    return [f"[GNUPG:] NEWSIG", f"[GNUPG:] GOODSIG {primary[-16:]} main", f"[GNUPG:] VALIDSIG {fpr} 2026-12-04 "
            f"1764846000 0 4 0 22 10 00 {primary}", "[GNUPG:] DECRYPTION_OKAY"]


def test_a_trusted_signer_is_named_by_its_primary_fingerprint_even_for_a_subkey_signature():
    sig = Trusting({A}, trusted_public_key_files=["a.pub"])
    assert sig.judge(validsig(SUB, A), "obj") == A


@pytest.mark.parametrize("status, words", [
    (validsig(F, F), [F, "not trusted"]),
    (["[GNUPG:] ERRSIG 8A4D06AA01975635 22 10 00 1764846000 9 " + F, "[GNUPG:] NO_PUBKEY 8A4D06AA01975635"],
     [F, "not trusted"]),
    (["[GNUPG:] ERRSIG 8A4D06AA01975635 22 10 00 1764846000 9 -"], ["8A4D06AA01975635", "not trusted"]),
    (["[GNUPG:] BADSIG 19E7DF59B99F0B8F main"], ["bad signature", "19E7DF59B99F0B8F"]),
    (validsig(A, A) + ["[GNUPG:] REVKEYSIG 19E7DF59B99F0B8F main"], ["revoked"]),
    (["[GNUPG:] DECRYPTION_OKAY"], ["not signed", "--allow-unsigned"]),
])
def test_anything_but_a_trusted_good_signature_is_refused_naming_object_and_signer(status, words):
    sig = Trusting({A}, secret_key_file="a.sec")
    with pytest.raises(SignatureError) as info:
        sig.judge(status, "WAL file 000000010000000000000003")
    text = str(info.value)
    assert "WAL file 000000010000000000000003" in text and all(w in text for w in words), text
    assert isinstance(info.value, IntegrityError) and info.value.exit_code == 4


def test_unsigned_is_admitted_only_when_not_required_and_foreign_never():
    lax = Trusting({A}, trusted_public_key_files=["a.pub"], require=False)
    assert lax.judge(["[GNUPG:] DECRYPTION_OKAY"], "obj") is None
    with pytest.raises(SignatureError):
        lax.judge(validsig(F, F), "obj")


def test_a_host_without_signing_keys_reads_everything_and_requires_nothing():
    none = Signatures(home=None, settings=SigningSettings())
    assert not none.configured and not none.required
    assert none.judge(["[GNUPG:] DECRYPTION_OKAY"], "obj") is None
    assert none.judge(["[GNUPG:] ERRSIG 8A4D06AA01975635 22 10 00 1764846000 9 " + F], "obj") is None
    assert none.sign_args() == []
