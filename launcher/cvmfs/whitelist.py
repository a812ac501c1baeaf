"""The whitelist ``/.cvmfswhitelist`` (spec section 6).

Lists the fingerprints of the certificates allowed to sign manifests, names
the repository and expires.  It is signed with the repository's *master* key
(the ``.pub`` files a client is configured with): a type-1 padded RSA block
holding the ASCII hash of the body, with no DigestInfo.
"""

import datetime

from launcher.cvmfs import hashes
from launcher.cvmfs.manifest import split_signed
from launcher.errors import CvmfsexecError

_TIME_FORMAT = "%Y%m%d%H%M%S"


class WhitelistError(CvmfsexecError):
    """A whitelist that cannot be parsed."""


def parse_fingerprint(text):
    """A fingerprint line (``AB:CD:..[-RMD160] # comment``) as a ContentHash, or None (spec 3.2)."""
    for stop in (" ", "\t", "#"):
        text = text.split(stop, 1)[0]
    try:
        return hashes.ContentHash.parse(text.replace(":", "").lower(), suffix="")
    except hashes.InvalidHash:
        return None


def utc_datetime(now):
    """``now`` (UNIX seconds, a naive UTC datetime or an aware datetime) as a naive UTC datetime."""
    utc = datetime.timezone.utc
    if now is None:
        return datetime.datetime.now(utc).replace(tzinfo=None)
    if isinstance(now, datetime.datetime):
        if now.tzinfo is not None:
            now = now.astimezone(utc).replace(tzinfo=None)
        return now
    return datetime.datetime.fromtimestamp(now, utc).replace(tzinfo=None)


class Whitelist(object):
    """A parsed whitelist: ``created``, ``expires`` (naive UTC datetimes), ``expires_text``,
    ``name``, ``fingerprints`` (ContentHash list), ``pkcs7``, ``cachain``, ``body``,
    ``hash_line``, ``signature``."""

    def __init__(self, data):
        self.body, self.hash_line, self.signature = split_signed(data)
        lines = self.body.decode("utf-8", "replace").split("\n")
        if len(lines) < 3 or len(lines[0]) != 14 or len(lines[1]) != 15 or lines[1][:1] != "E":
            raise WhitelistError("whitelist is malformed (creation or expiry line)")
        try:
            self.created = datetime.datetime.strptime(lines[0], _TIME_FORMAT)
            self.expires = datetime.datetime.strptime(lines[1][1:], _TIME_FORMAT)
        except ValueError:
            raise WhitelistError("whitelist is malformed (bad timestamp %r)" % lines[1])
        self.expires_text = self.expires.strftime("%Y-%m-%d %H:%M:%S UTC")
        if not lines[2].startswith("N"):
            raise WhitelistError("whitelist is malformed (no repository name line)")
        self.name = lines[2][1:]
        self.pkcs7 = False
        self.cachain = False
        self.fingerprints = []
        for line in lines[3:]:
            if line == "Vpkcs7":
                self.pkcs7 = True
            elif line == "Wcachain":
                self.cachain = True
            else:
                fingerprint = parse_fingerprint(line)
                # unparsable lines are ignored, as cvmfs does; MD5 is no certificate hash
                if fingerprint is not None and fingerprint.algorithm != hashes.MD5:
                    self.fingerprints.append(fingerprint)

    @classmethod
    def parse(cls, data):
        return cls(data)

    def is_expired(self, now=None):
        """cvmfs compares (year, month, day, hour) only: valid while now's tuple is smaller."""
        now = utc_datetime(now)
        key = lambda t: (t.year, t.month, t.day, t.hour)
        return not key(now) < key(self.expires)

    def body_hash_matches(self):
        try:
            printed = hashes.ContentHash.parse(self.hash_line) if self.hash_line else None
        except hashes.InvalidHash:
            return False
        return printed is not None and printed.suffix == "" and printed.matches(self.body)

    def signed_by(self, public_keys):
        """The first key (rsa.PublicKey) whose raw signature over the hash line matches, or None."""
        if not self.hash_line or not self.signature:
            return None
        for key in public_keys:
            if key.verify_raw(self.hash_line, self.signature):
                return key
        return None

    def lists(self, certificate):
        """True if the certificate's fingerprint (in each listed algorithm) is on the list."""
        for fingerprint in self.fingerprints:
            if certificate.fingerprint(fingerprint.algorithm) == fingerprint.hex_string():
                return True
        return False
