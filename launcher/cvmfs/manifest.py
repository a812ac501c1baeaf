"""The manifest ``/.cvmfspublished`` (spec section 4).

Field lines (one key letter, then the value), a ``--`` line, the hex hash of
everything before it, then a raw RSA signature to the end of the file.  The
signature is PKCS#1 v1.5 with SHA-1 over the ASCII hash line -- not over the
manifest -- made with the key of the certificate ``X``.  Parsing checks the
form only; :mod:`launcher.cvmfs.trust` decides whether to believe it.
"""

from launcher.cvmfs import hashes
from launcher.errors import CvmfsexecError

EMPTY_PATH_MD5 = "d41d8cd98f00b204e9800998ecf8427e"  # manifest R: MD5 of the root path ""
SEPARATOR = b"\n--\n"


class ManifestError(CvmfsexecError):
    """A manifest that cannot be parsed."""


def split_signed(data):
    """Split ``body\\n--\\nhash\\nsignature`` into ``(body, hash_line, signature)``.

    ``body`` keeps its final newline (it is what the hash covers); without a
    separator, ``hash_line`` and ``signature`` are None.
    """
    data = bytes(data)
    if data.startswith(b"--\n"):
        cut, start = 0, 3
    else:
        cut = data.find(SEPARATOR)
        if cut < 0:
            return data, None, None
        cut, start = cut + 1, cut + len(SEPARATOR)
    end = data.find(b"\n", start)
    if end < 0:
        return data[:cut], data[start:], b""
    return data[:cut], data[start:end], data[end + 1:]


def _int(value, default=0):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


class Manifest(object):
    """A parsed manifest.  Attributes (None when absent):

    ``root_hash`` (ContentHash, suffix C), ``root_catalog_size`` (B, uncompressed
    bytes), ``ttl`` (D, seconds), ``revision`` (S), ``garbage_collectable`` (G),
    ``alt_paths`` (A: fetch C/X/H/M through ``.cvmfsalt-`` names), ``name`` (N),
    ``certificate`` (X), ``history`` (H), ``timestamp`` (T), ``meta_info`` (M),
    ``reflog_hash`` (Y, no suffix), ``root_path_hash`` (R), ``fields`` (raw
    ``{letter: value}``), ``body``, ``hash_line`` (bytes), ``signature`` (bytes),
    ``pinned`` (True for a manifest made up from CVMFS_ROOT_HASH).
    """

    def __init__(self, fields, body=b"", hash_line=None, signature=None):
        self.fields = fields
        self.body = body
        self.hash_line = hash_line
        self.signature = signature
        self.pinned = False
        if "C" not in fields:
            raise ManifestError("manifest has no root catalog hash (field C)")
        self.root_hash = self._hash("C", "C")
        self.root_catalog_size = _int(fields["B"]) if "B" in fields else None
        self.ttl = _int(fields["D"]) if "D" in fields else None
        self.revision = _int(fields.get("S"))
        self.garbage_collectable = fields.get("G") == "yes"
        self.alt_paths = fields.get("A") == "yes"
        self.name = fields.get("N")
        self.certificate = self._hash("X", "X")
        self.history = self._hash("H", "H")
        self.timestamp = _int(fields["T"]) if "T" in fields else None
        self.meta_info = self._hash("M", "M")
        self.reflog_hash = self._hash("Y", "")
        self.micro_catalog = self._hash("L", "L")
        self.root_path_hash = fields.get("R")

    def _hash(self, key, suffix):
        value = self.fields.get(key)
        if not value:
            return None
        try:
            return hashes.ContentHash.parse(value, suffix=suffix)
        except hashes.InvalidHash:
            raise ManifestError("manifest field %s is not a valid hash: %r" % (key, value))

    @classmethod
    def parse(cls, data):
        """Parse manifest bytes (the reference parser's rules, spec 4.1)."""
        body, hash_line, signature = split_signed(data)
        fields = {}
        for raw in body.split(b"\n"):
            line = raw.decode("utf-8", "replace").rstrip("\r")
            if not line:
                continue
            key, value = line[0], line[1:]
            if key == "Z" and key in fields:
                fields[key] += "|" + value
            else:
                fields[key] = value
        return cls(fields, body, hash_line, signature)

    @classmethod
    def for_root_hash(cls, fqrn, root_hash):
        """A stand-in manifest for ``CVMFS_ROOT_HASH``: no signature, no certificate, no TTL."""
        if not isinstance(root_hash, hashes.ContentHash):
            root_hash = hashes.ContentHash.parse(root_hash)
        manifest = cls({"C": root_hash.hex_string(), "N": fqrn, "R": EMPTY_PATH_MD5})
        manifest.pinned = True
        return manifest

    @property
    def is_signed(self):
        return bool(self.hash_line) and bool(self.signature)

    def printed_hash(self):
        """The hash line as a ContentHash, or None if missing or malformed."""
        try:
            return hashes.ContentHash.parse(self.hash_line) if self.hash_line else None
        except hashes.InvalidHash:
            return None

    def body_hash_matches(self):
        """True if the printed hash line is the hash of the field block."""
        printed = self.printed_hash()
        return printed is not None and printed.suffix == "" and printed.matches(self.body)

    def signature_valid(self, public_key):
        """True if ``public_key`` (rsa.PublicKey) signed the hash line (PKCS#1 v1.5, SHA-1)."""
        if not self.is_signed:
            return False
        return public_key.verify_pkcs1v15(self.hash_line, self.signature, "sha1")

    def breadcrumb(self):
        """The client's ``cvmfschecksum.<fqrn>`` text: ``<hash>T<timestamp>R<revision>`` (spec 4.4)."""
        return "%sT%dR%d" % (self.root_hash.hex_string(), self.timestamp or 0, self.revision)

    def __repr__(self):
        return "Manifest(%s revision %d root %s)" % (self.name, self.revision, self.root_hash)
