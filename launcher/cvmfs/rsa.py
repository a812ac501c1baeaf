"""RSA signature verification for the cvmfs chain of trust (spec 4.3, 6.2, 10).

Verifying is one modular exponentiation (``pow(s, e, n)``, about 0.1 ms for
a 2048-bit key with e = 65537) followed by a comparison with the block the
signer must have produced.  cvmfs uses two forms, both PKCS#1 v1.5 type 1:

* the manifest: ``EVP_Sign`` with SHA-1, i.e. ``00 01 FF.. 00 || DigestInfo ||
  SHA1(message)`` where the message is the ASCII hash line -- :meth:`verify_pkcs1v15`;
* the whitelist: ``RSA_private_encrypt`` of the message itself, without a
  DigestInfo -- :meth:`verify_raw`.
"""

import hashlib
import hmac

from launcher.cvmfs import der
from launcher.cvmfs import hashes

# DER DigestInfo prefixes (RFC 8017 9.2 note 1; RIPEMD-160 OID 1.3.36.3.2.1).
DIGEST_INFO = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "rmd160": bytes.fromhex("3021300906052b2403020105000414"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
}
_MIN_PADDING = 8  # PKCS#1 v1.5 demands at least 8 bytes of FF


def _digest(algorithm, message):
    if algorithm == "sha256":
        return hashlib.sha256(message).digest()
    return hashes.new_hasher(algorithm, message).digest()


class PublicKey(object):
    """An RSA public key ``(n, e)``; ``source`` says where it came from (for messages)."""

    def __init__(self, n, e, source=""):
        self.n = n
        self.e = e
        self.source = source
        self.size = (n.bit_length() + 7) // 8

    @classmethod
    def from_pem(cls, text, source=""):
        n, e = der.public_key_from_pem(text)
        return cls(n, e, source)

    def recover(self, signature):
        """The encoded block ``signature^e mod n`` (k bytes), or None if out of range."""
        if len(signature) != self.size:
            return None
        s = int.from_bytes(signature, "big")
        if s >= self.n:
            return None
        return pow(s, self.e, self.n).to_bytes(self.size, "big")

    def _padded(self, payload):
        padding = self.size - 3 - len(payload)
        if padding < _MIN_PADDING:
            return None
        return b"\x00\x01" + b"\xff" * padding + b"\x00" + payload

    def _matches(self, payload, signature):
        expected = self._padded(payload)
        block = self.recover(signature)
        return expected is not None and block is not None and hmac.compare_digest(block, expected)

    def verify_pkcs1v15(self, message, signature, algorithm="sha1"):
        """RSASSA-PKCS1-v1_5 over ``message`` with ``algorithm`` (sha1, rmd160, sha256)."""
        payload = DIGEST_INFO[algorithm] + _digest(algorithm, message)
        return self._matches(payload, signature)

    def verify_raw(self, message, signature):
        """Type-1 padded ``message`` without DigestInfo (``RSA_private_encrypt``)."""
        return self._matches(message, signature)

    def fingerprint(self):
        """Short identifier for messages: SHA-1 of the modulus, first 16 hex digits."""
        return hashlib.sha1(self.n.to_bytes(self.size, "big")).hexdigest()[:16]

    def __repr__(self):
        return "PublicKey(%d bits, %s)" % (self.n.bit_length(), self.source or self.fingerprint())
