"""RPM package files: lead, signature header, main header, compressed cpio payload.

Layout (rpm file format v3/v4): a 96-byte lead; the signature header, padded
to a multiple of 8 bytes; the main header; then the payload, a cpio archive
compressed as the header's PAYLOADCOMPRESSOR tag says.  We read the tags we
need and check the digests the package carries about itself (header SHA-256,
payload SHA-256), which protects packages from HTML-index repositories that
have no checksums in any metadata.  Signatures (PGP) are not checked: trust
comes from the repository metadata over HTTPS, as with the reference makedist.
"""
import bz2
import gzip
import hashlib
import lzma
import struct

from launcher.errors import CvmfsexecError

LEAD_MAGIC = b"\xed\xab\xee\xdb"
HEADER_MAGIC = b"\x8e\xad\xe8\x01"
LEAD_SIZE = 96

# signature tags
SIGTAG_SHA1 = 269
SIGTAG_SHA256 = 273
# header tags
TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_EPOCH = 1000, 1001, 1002, 1003
TAG_ARCH = 1022
TAG_PAYLOADFORMAT = 1124
TAG_PAYLOADCOMPRESSOR = 1125
TAG_PAYLOADDIGEST = 5092
TAG_PAYLOADDIGESTALGO = 5093

PGP_HASH = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}

(T_NULL, T_CHAR, T_INT8, T_INT16, T_INT32, T_INT64, T_STRING, T_BIN,
 T_STRING_ARRAY, T_I18NSTRING) = range(10)


class RpmError(CvmfsexecError):
    pass


class Header(object):
    """A parsed header structure: {tag: value} plus its raw bytes (for digests)."""

    def __init__(self, tags, raw):
        self.tags = tags
        self.raw = raw

    def get(self, tag, default=None):
        return self.tags.get(tag, default)

    def first(self, tag, default=None):
        value = self.tags.get(tag)
        if isinstance(value, list):
            return value[0] if value else default
        return default if value is None else value


def read_header(f, what):
    intro = f.read(16)
    if len(intro) != 16 or intro[:4] != HEADER_MAGIC:
        raise RpmError("%s: bad header magic" % what)
    nindex, hsize = struct.unpack(">II", intro[8:16])
    if nindex > 100000 or hsize > 256 * 1024 * 1024:
        raise RpmError("%s: implausible header size" % what)
    index = f.read(16 * nindex)
    store = f.read(hsize)
    if len(index) != 16 * nindex or len(store) != hsize:
        raise RpmError("%s: truncated header" % what)
    tags = {}
    for i in range(nindex):
        tag, typ, off, count = struct.unpack(">IIiI", index[16 * i:16 * i + 16])
        if off < 0 or off > hsize:
            continue   # region trailers and other oddities we do not need
        tags[tag] = _value(store, typ, off, count)
    return Header(tags, intro + index + store)


def _value(store, typ, off, count):
    if typ in (T_STRING, T_STRING_ARRAY, T_I18NSTRING):
        out = []
        pos = off
        for _ in range(count if typ != T_STRING else 1):
            end = store.index(b"\0", pos)
            out.append(store[pos:end].decode("utf-8", "surrogateescape"))
            pos = end + 1
        return out[0] if typ == T_STRING else out
    if typ == T_BIN:
        return store[off:off + count]
    fmt = {T_CHAR: "B", T_INT8: "B", T_INT16: "H", T_INT32: "I", T_INT64: "Q"}.get(typ)
    if fmt is None:
        return None
    size = struct.calcsize(fmt)
    return list(struct.unpack(">%d%s" % (count, fmt), store[off:off + size * count]))


class RpmFile(object):
    """An RPM on disk: ``RpmFile(path)``; ``open_payload()`` gives the cpio stream."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            lead = f.read(LEAD_SIZE)
            if len(lead) != LEAD_SIZE or lead[:4] != LEAD_MAGIC:
                raise RpmError("%s is not an RPM package (bad lead)" % path,
                               "the server may have returned an error page instead")
            self.signature = read_header(f, path + " (signature)")
            pad = (8 - (f.tell() % 8)) % 8
            f.read(pad)
            self.header = read_header(f, path)
            self.payload_offset = f.tell()
        h = self.header
        self.name = h.first(TAG_NAME)
        self.version = h.first(TAG_VERSION)
        self.release = h.first(TAG_RELEASE)
        self.epoch = h.first(TAG_EPOCH, 0)
        self.arch = h.first(TAG_ARCH)
        self.payload_format = h.first(TAG_PAYLOADFORMAT, "cpio")
        self.compressor = h.first(TAG_PAYLOADCOMPRESSOR, "gzip")

    def __repr__(self):
        return "RpmFile(%s-%s-%s.%s)" % (self.name, self.version, self.release, self.arch)

    def verify_digests(self):
        """Check the header and payload digests the package carries; RpmError on mismatch."""
        expected = self.signature.first(SIGTAG_SHA256)
        algo = "sha256"
        if expected is None:
            expected, algo = self.signature.first(SIGTAG_SHA1), "sha1"
        if expected is not None:
            actual = hashlib.new(algo, self.header.raw).hexdigest()
            if actual != expected:
                raise RpmError("%s: header %s digest mismatch: expected %s, got %s"
                               % (self.path, algo, expected, actual),
                               "the package is corrupt; delete it and download it again")
        digest = self.header.first(TAG_PAYLOADDIGEST)
        if digest is not None:
            algo = PGP_HASH.get(self.header.first(TAG_PAYLOADDIGESTALGO, 8))
            if algo is None:
                return
            h = hashlib.new(algo)
            with open(self.path, "rb") as f:
                f.seek(self.payload_offset)
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != digest:
                raise RpmError("%s: payload %s digest mismatch: expected %s, got %s"
                               % (self.path, algo, digest, h.hexdigest()),
                               "the package is corrupt; delete it and download it again")

    def open_payload(self):
        """A readable file object of the decompressed cpio archive (caller closes it)."""
        if self.payload_format not in ("cpio", "drpm"):
            raise RpmError("%s: unsupported payload format %r" % (self.path, self.payload_format))
        raw = open(self.path, "rb")
        raw.seek(self.payload_offset)
        comp = sniff_compressor(raw.read(6)) or self.compressor
        raw.seek(self.payload_offset)
        if comp == "gzip":
            return _Closing(gzip.GzipFile(fileobj=raw, mode="rb"), raw)
        if comp in ("xz", "lzma"):
            return _Closing(lzma.LZMAFile(raw, "rb"), raw)
        if comp == "bzip2":
            return _Closing(bz2.BZ2File(raw, "rb"), raw)
        if comp == "zstd":
            import zstandard
            return _Closing(zstandard.ZstdDecompressor().stream_reader(raw), raw)
        if comp in ("", "identity", "none"):
            return raw
        raw.close()
        raise RpmError("%s: unsupported payload compressor %r" % (self.path, comp))


def _zstd_error():
    try:
        import zstandard
        return zstandard.ZstdError
    except ImportError:
        return OSError


def sniff_compressor(magic):
    """The payload's compressor from its first bytes; rpm writes 'gzip' even for an
    uncompressed (w.ufdio) payload and reads it through zlib's transparent mode."""
    if magic.startswith(b"\x1f\x8b"):
        return "gzip"
    if magic.startswith(b"\xfd7zXZ"):
        return "xz"
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if magic.startswith(b"BZh"):
        return "bzip2"
    if magic.startswith(b"07070"):
        return "none"
    return None


class _Closing(object):
    """A decompressing reader that also closes the file beneath it."""

    def __init__(self, reader, raw):
        self.reader = reader
        self.raw = raw

    def read(self, n=-1):
        try:
            return self.reader.read(n)
        except (OSError, EOFError, lzma.LZMAError, ValueError, _zstd_error()) as e:
            raise RpmError("%s: corrupt compressed payload: %s" % (self.raw.name, e))

    def close(self):
        self.reader.close()
        self.raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
