"""The repository certificate, object ``data/xx/...X`` (spec sections 3.2 and 5).

A zlib-compressed PEM X.509 certificate.  For cvmfs it is only an envelope
for the key that signs manifests: its dates, issuer and self-signature are not
checked (the real client mounts with an expired certificate).  The whitelist
names it by fingerprint: the hash of its DER encoding.
"""

import zlib

from launcher.cvmfs import der
from launcher.cvmfs import hashes
from launcher.cvmfs.rsa import PublicKey


class Certificate(object):
    """A parsed certificate: ``der``, ``public_key`` (rsa.PublicKey), ``fields`` (der.parse_certificate)."""

    def __init__(self, der_bytes, pem=None):
        self.der = der_bytes
        self.pem = pem
        self.fields = der.parse_certificate(der_bytes)
        n, e = self.fields["public_key"]
        self.public_key = PublicKey(n, e, source="certificate " + self.fields["subject_cn"])

    @classmethod
    def from_pem(cls, pem):
        return cls(der.pem_decode(pem, "CERTIFICATE"), pem)

    @classmethod
    def from_object(cls, data):
        """From the object bytes as stored (zlib-compressed PEM; plain PEM or DER accepted)."""
        if data[:1] == b"\x78":
            try:
                data = zlib.decompress(data)
            except zlib.error as e:
                raise der.DerError("certificate object does not decompress: %s" % e)
        if b"-----BEGIN" in data:
            return cls.from_pem(data)
        return cls(bytes(data))

    @property
    def subject_cn(self):
        return self.fields["subject_cn"]

    def fingerprint(self, algorithm=hashes.SHA1):
        """The fingerprint as a hash hex string (``hex[-rmd160]``), as whitelists list it after normalisation."""
        return hashes.hash_hex_string(self.der, algorithm)

    def fingerprint_text(self, algorithm=hashes.SHA1):
        """The printed form: ``AB:CD:...`` plus ``-RMD160``/``-SHAKE128`` (spec 3.2)."""
        h = hashes.ContentHash.parse(self.fingerprint(algorithm))
        pairs = ":".join(h.digest_hex[i:i + 2] for i in range(0, len(h.digest_hex), 2))
        return (pairs + h.hex_string()[len(h.digest_hex):]).upper()
