"""Content hashes of CernVM-FS objects (spec sections 2 and 3).

A repository names every object by the hash of its bytes *as stored on the
server* (compressed objects are hashed compressed, spec 2.2).  Three
algorithms exist: SHA-1 (no id), RIPEMD-160 (``-rmd160``) and SHAKE-128 with a
160-bit output (``-shake128``); MD5 is used only for path keys and the
manifest ``R`` field.  The printed "hex string" of a hash is the lowercase hex
digest followed by the algorithm id; an object name adds a one-letter type
suffix (``C`` catalog, ``P`` chunk, ``X`` certificate, ...).

``hashlib`` may lack RIPEMD-160 (OpenSSL 3 without the legacy provider, and
the Python 3.6 builds we target): :class:`Ripemd160` is a pure-Python
fallback, used automatically.
"""

import hashlib
import re
import struct

from launcher.errors import CvmfsexecError

SHA1 = "sha1"
RMD160 = "rmd160"
SHAKE128 = "shake128"
MD5 = "md5"

# Algorithm id as written after the hex digits (spec 3.1).
_ID_OF = {SHA1: "", RMD160: "-rmd160", SHAKE128: "-shake128", MD5: ""}
# Catalog flags bits 8-10 hold (shash id - 1): 0 SHA-1, 1 RIPEMD-160, 2 SHAKE-128 (spec 7.4).
_BY_FLAG_VALUE = (SHA1, RMD160, SHAKE128)
_DIGEST_SIZE = 20

_HASH_RE = re.compile(r"^([0-9a-f]{40}|[0-9a-f]{32})(-rmd160|-shake128)?([A-Z]?)$")


class InvalidHash(CvmfsexecError, ValueError):
    """A string that is not a valid cvmfs hash."""

    def __init__(self, text):
        CvmfsexecError.__init__(self, "invalid content hash %r" % (text,))


def algorithm_from_flags(flags):
    """Hash algorithm of a catalog entry from its ``flags`` column (bits 8-10)."""
    value = (flags >> 8) & 7
    if value >= len(_BY_FLAG_VALUE):
        raise InvalidHash("algorithm %d in catalog flags %d" % (value, flags))
    return _BY_FLAG_VALUE[value]


class _Shake128(object):
    """hashlib.shake_128 with cvmfs' fixed 160-bit output."""

    name = SHAKE128
    digest_size = _DIGEST_SIZE

    def __init__(self, data=b""):
        self._h = hashlib.shake_128(data)

    def update(self, data):
        self._h.update(data)

    def digest(self):
        return self._h.digest(_DIGEST_SIZE)

    def hexdigest(self):
        return self._h.hexdigest(_DIGEST_SIZE)


# --- pure-Python RIPEMD-160 (Dobbertin, Bosselaers, Preneel 1996) ----------

_RMD_RL = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    7, 4, 13, 1, 10, 6, 15, 3, 12, 0, 9, 5, 2, 14, 11, 8,
    3, 10, 14, 4, 9, 15, 8, 1, 2, 7, 0, 6, 13, 11, 5, 12,
    1, 9, 11, 10, 0, 8, 12, 4, 13, 3, 7, 15, 14, 5, 6, 2,
    4, 0, 5, 9, 7, 12, 2, 10, 14, 1, 3, 8, 11, 6, 15, 13)
_RMD_RR = (
    5, 14, 7, 0, 9, 2, 11, 4, 13, 6, 15, 8, 1, 10, 3, 12,
    6, 11, 3, 7, 0, 13, 5, 10, 14, 15, 8, 12, 4, 9, 1, 2,
    15, 5, 1, 3, 7, 14, 6, 9, 11, 8, 12, 2, 10, 0, 4, 13,
    8, 6, 4, 1, 3, 11, 15, 0, 5, 12, 2, 13, 9, 7, 10, 14,
    12, 15, 10, 4, 1, 5, 8, 7, 6, 2, 13, 14, 0, 3, 9, 11)
_RMD_SL = (
    11, 14, 15, 12, 5, 8, 7, 9, 11, 13, 14, 15, 6, 7, 9, 8,
    7, 6, 8, 13, 11, 9, 7, 15, 7, 12, 15, 9, 11, 7, 13, 12,
    11, 13, 6, 7, 14, 9, 13, 15, 14, 8, 13, 6, 5, 12, 7, 5,
    11, 12, 14, 15, 14, 15, 9, 8, 9, 14, 5, 6, 8, 6, 5, 12,
    9, 15, 5, 11, 6, 8, 13, 12, 5, 12, 13, 14, 11, 8, 5, 6)
_RMD_SR = (
    8, 9, 9, 11, 13, 15, 15, 5, 7, 7, 8, 11, 14, 14, 12, 6,
    9, 13, 15, 7, 12, 8, 9, 11, 7, 7, 12, 7, 6, 15, 13, 11,
    9, 7, 15, 11, 8, 6, 6, 14, 12, 13, 5, 14, 13, 13, 7, 5,
    15, 5, 8, 11, 14, 14, 6, 14, 6, 9, 12, 9, 12, 5, 15, 8,
    8, 5, 12, 9, 12, 5, 14, 6, 8, 13, 6, 5, 15, 13, 11, 11)
_M32 = 0xFFFFFFFF


def _rmd_compress(h, buf, off):
    # Five rounds written out: the boolean function of each round is inlined
    # (a call per step doubles the cost); the right line uses them in reverse.
    x = struct.unpack_from('<16L', buf, off)
    rl, rr, sl, sr, m = _RMD_RL, _RMD_RR, _RMD_SL, _RMD_SR, _M32
    al, bl, cl, dl, el = h
    ar, br, cr, dr, er = h
    for j in range(0, 16):
        t = (al + (bl ^ cl ^ dl) + x[rl[j]]) & m
        s = sl[j]
        t = (((t << s) | (t >> (32 - s))) + el) & m
        al, el, dl, cl, bl = el, dl, ((cl << 10) | (cl >> 22)) & m, bl, t
        t = (ar + (br ^ (cr | ~dr)) + x[rr[j]] + 0x50A28BE6) & m
        s = sr[j]
        t = (((t << s) | (t >> (32 - s))) + er) & m
        ar, er, dr, cr, br = er, dr, ((cr << 10) | (cr >> 22)) & m, br, t
    for j in range(16, 32):
        t = (al + ((bl & cl) | (~bl & dl)) + x[rl[j]] + 0x5A827999) & m
        s = sl[j]
        t = (((t << s) | (t >> (32 - s))) + el) & m
        al, el, dl, cl, bl = el, dl, ((cl << 10) | (cl >> 22)) & m, bl, t
        t = (ar + ((br & dr) | (cr & ~dr)) + x[rr[j]] + 0x5C4DD124) & m
        s = sr[j]
        t = (((t << s) | (t >> (32 - s))) + er) & m
        ar, er, dr, cr, br = er, dr, ((cr << 10) | (cr >> 22)) & m, br, t
    for j in range(32, 48):
        t = (al + ((bl | ~cl) ^ dl) + x[rl[j]] + 0x6ED9EBA1) & m
        s = sl[j]
        t = (((t << s) | (t >> (32 - s))) + el) & m
        al, el, dl, cl, bl = el, dl, ((cl << 10) | (cl >> 22)) & m, bl, t
        t = (ar + ((br | ~cr) ^ dr) + x[rr[j]] + 0x6D703EF3) & m
        s = sr[j]
        t = (((t << s) | (t >> (32 - s))) + er) & m
        ar, er, dr, cr, br = er, dr, ((cr << 10) | (cr >> 22)) & m, br, t
    for j in range(48, 64):
        t = (al + ((bl & dl) | (cl & ~dl)) + x[rl[j]] + 0x8F1BBCDC) & m
        s = sl[j]
        t = (((t << s) | (t >> (32 - s))) + el) & m
        al, el, dl, cl, bl = el, dl, ((cl << 10) | (cl >> 22)) & m, bl, t
        t = (ar + ((br & cr) | (~br & dr)) + x[rr[j]] + 0x7A6D76E9) & m
        s = sr[j]
        t = (((t << s) | (t >> (32 - s))) + er) & m
        ar, er, dr, cr, br = er, dr, ((cr << 10) | (cr >> 22)) & m, br, t
    for j in range(64, 80):
        t = (al + (bl ^ (cl | ~dl)) + x[rl[j]] + 0xA953FD4E) & m
        s = sl[j]
        t = (((t << s) | (t >> (32 - s))) + el) & m
        al, el, dl, cl, bl = el, dl, ((cl << 10) | (cl >> 22)) & m, bl, t
        t = (ar + (br ^ cr ^ dr) + x[rr[j]]) & m
        s = sr[j]
        t = (((t << s) | (t >> (32 - s))) + er) & m
        ar, er, dr, cr, br = er, dr, ((cr << 10) | (cr >> 22)) & m, br, t
    return ((h[1] + cl + dr) & m, (h[2] + dl + er) & m, (h[3] + el + ar) & m,
            (h[4] + al + br) & m, (h[0] + bl + cr) & m)


class Ripemd160(object):
    """Pure-Python RIPEMD-160 with the hashlib object interface (slow: about 0.7 MB/s)."""

    name = RMD160
    digest_size = _DIGEST_SIZE
    block_size = 64

    def __init__(self, data=b""):
        self._h = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)
        self._buf = b""
        self._length = 0
        if data:
            self.update(data)

    def update(self, data):
        data = bytes(data)
        self._length += len(data)
        buf = self._buf + data
        h = self._h
        end = len(buf) - len(buf) % 64
        for i in range(0, end, 64):
            h = _rmd_compress(h, buf, i)
        self._h = h
        self._buf = buf[end:]

    def copy(self):
        other = Ripemd160()
        other._h, other._buf, other._length = self._h, self._buf, self._length
        return other

    def digest(self):
        pad = b"\x80" + b"\x00" * ((55 - self._length) % 64)
        tail = self._buf + pad + struct.pack("<Q", (self._length * 8) & 0xFFFFFFFFFFFFFFFF)
        h = self._h
        for i in range(0, len(tail), 64):
            h = _rmd_compress(h, tail, i)
        return struct.pack("<5L", *h)

    def hexdigest(self):
        return self.digest().hex()


def _hashlib_has_rmd160():
    try:
        hashlib.new("ripemd160", b"abc").digest()
        return True
    except ValueError:
        return False


_NATIVE_RMD160 = _hashlib_has_rmd160()


def new_hasher(algorithm, data=b""):
    """A hasher object (``update``/``digest``/``hexdigest``) for a cvmfs algorithm name."""
    if algorithm == SHA1:
        return hashlib.sha1(data)
    if algorithm == RMD160:
        if _NATIVE_RMD160:
            return hashlib.new("ripemd160", data)
        return Ripemd160(data)
    if algorithm == SHAKE128:
        return _Shake128(data)
    if algorithm == MD5:
        return hashlib.md5(data)
    raise InvalidHash("unknown algorithm %s" % algorithm)


def hash_hex_string(data, algorithm=SHA1):
    """The printed hex string of ``data``'s hash: hex digest plus algorithm id."""
    return new_hasher(algorithm, data).hexdigest() + _ID_OF[algorithm]


class ContentHash(object):
    """A parsed ``hex[-rmd160|-shake128][suffix]`` hash; immutable and hashable."""

    __slots__ = ("algorithm", "digest_hex", "suffix")

    def __init__(self, algorithm, digest_hex, suffix=""):
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "digest_hex", digest_hex)
        object.__setattr__(self, "suffix", suffix)

    def __setattr__(self, name, value):
        raise AttributeError("ContentHash is immutable")

    @classmethod
    def parse(cls, text, suffix=None):
        """Parse a hash string; ``suffix`` (if given) replaces/sets the type suffix.

        Raises :class:`InvalidHash` (a ValueError) for anything malformed.
        """
        if isinstance(text, bytes):
            text = text.decode("ascii", "replace")
        m = _HASH_RE.match(text.strip())
        if not m:
            raise InvalidHash(text)
        hexpart, algo_id, sfx = m.groups()
        if len(hexpart) == 32:
            if algo_id:
                raise InvalidHash(text)
            algorithm = MD5
        else:
            algorithm = {None: SHA1, "-rmd160": RMD160, "-shake128": SHAKE128}[algo_id]
        return cls(algorithm, hexpart, sfx if suffix is None else suffix)

    @classmethod
    def from_digest(cls, digest, algorithm=SHA1, suffix=""):
        """From a raw digest (catalogs store 20-byte BLOBs, the algorithm in the flags)."""
        if len(digest) != (16 if algorithm == MD5 else _DIGEST_SIZE) or algorithm not in _ID_OF:
            raise InvalidHash("%r (%s)" % (digest, algorithm))
        return cls(algorithm, bytes(digest).hex(), suffix)

    @classmethod
    def of_data(cls, data, algorithm=SHA1, suffix=""):
        """The hash of ``data`` (as stored) with the given algorithm and suffix."""
        return cls(algorithm, new_hasher(algorithm, data).hexdigest(), suffix)

    def hex_string(self):
        """Digest hex plus algorithm id, no suffix (``user.root_hash``, signed hash lines)."""
        return self.digest_hex + _ID_OF[self.algorithm]

    def with_suffix(self, suffix):
        return ContentHash(self.algorithm, self.digest_hex, suffix)

    def url_path(self):
        """Object path relative to the repository URL: ``data/01/23..ab-rmd160C``."""
        return "data/%s/%s%s%s" % (self.digest_hex[:2], self.digest_hex[2:],
                                   _ID_OF[self.algorithm], self.suffix)

    def alt_path(self):
        """Alternative path (manifest ``Ayes``): ``.cvmfsalt-<hex string><suffix>``."""
        return ".cvmfsalt-" + self.hex_string() + self.suffix

    def digest(self):
        return bytes.fromhex(self.digest_hex)

    def new_hasher(self):
        return new_hasher(self.algorithm)

    def matches(self, data):
        return new_hasher(self.algorithm, data).hexdigest() == self.digest_hex

    def __str__(self):
        return self.hex_string() + self.suffix

    def __repr__(self):
        return "ContentHash(%r)" % str(self)

    def _key(self):
        return (self.algorithm, self.digest_hex, self.suffix)

    def __eq__(self, other):
        return isinstance(other, ContentHash) and self._key() == other._key()

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(self._key())


def verify_bytes(data, content_hash):
    """True if ``data`` (the object bytes as stored, i.e. compressed) has this hash."""
    if not isinstance(content_hash, ContentHash):
        content_hash = ContentHash.parse(content_hash)
    return content_hash.matches(data)


verify = verify_bytes


def hash_file(path, algorithm=SHA1, blocksize=1 << 20):
    """Hex digest of a file's bytes, read in blocks."""
    h = new_hasher(algorithm)
    with open(path, "rb") as f:
        while True:
            block = f.read(blocksize)
            if not block:
                return h.hexdigest()
            h.update(block)
