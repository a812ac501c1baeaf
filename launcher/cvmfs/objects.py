"""Content-addressed objects: cache lookup, else download, verify, decompress, store.

``ObjectStore.get_path(hash)`` is the one road from a content hash to a local,
verified, decompressed file: the cache is asked first (a cached object is
trusted without re-hashing, as cvmfs does, because only verified bytes are ever
inserted); on a miss the object is downloaded with the hash check as the
downloader's ``validate`` callback -- so corrupted bytes make the downloader
try the next proxy/host -- then zlib-decompressed (unless the catalog flags say
the object is stored raw) and inserted atomically.

Every failure (no server has it, every copy is corrupt, the zlib stream is
broken, the cache cannot be written) is an :class:`ObjectError`: an ``OSError``
with ``errno.EIO``, which the FUSE layer returns as EIO and never as data.
"""

import errno
import tempfile
import zlib

from launcher.cvmfs.hashes import ContentHash

# Objects larger than this (compressed) are decompressed into a temporary file
# in pieces, so a 16 MiB chunk does not cost 2 x 16 MiB of RSS.
_STREAM_THRESHOLD = 1 << 20
_PIECE = 1 << 20


class ObjectError(OSError):
    """An object that cannot be fetched, verified or decompressed (errno EIO)."""

    def __init__(self, message, content_hash=None):
        OSError.__init__(self, errno.EIO, message)
        self.message = message
        self.content_hash = content_hash
        self.hint = None

    def __str__(self):
        return self.message


class ObjectStore(object):
    """Verified objects of one repository, through a Cache and a Downloader."""

    def __init__(self, downloader, cache):
        self.downloader = downloader
        self.cache = cache
        self.stats = {"hits": 0, "misses": 0, "bytes_downloaded": 0, "errors": 0}

    def get_path(self, content_hash, compressed=True):
        """Local path of the verified, decompressed object; downloads on a miss."""
        if not isinstance(content_hash, ContentHash):
            content_hash = ContentHash.parse(content_hash)
        path = self.cache.lookup(content_hash)
        if path is not None:
            self.stats["hits"] += 1
            return path
        self.stats["misses"] += 1
        raw = self.fetch_raw(content_hash)
        try:
            if not compressed:
                return self.cache.insert(content_hash, raw)
            if len(raw) < _STREAM_THRESHOLD:
                return self.cache.insert(content_hash, zlib.decompress(raw))
            return self._insert_streamed(content_hash, raw)
        except zlib.error as e:
            self.stats["errors"] += 1
            raise ObjectError("object %s: cannot decompress (%s)" % (content_hash, e),
                              content_hash)
        except EnvironmentError as e:
            if isinstance(e, ObjectError):
                raise
            self.stats["errors"] += 1
            raise ObjectError("object %s: cannot store in the cache: %s"
                              % (content_hash, e.strerror or e), content_hash)

    def get_bytes(self, content_hash, compressed=True):
        """Contents of a (small) object: certificates, meta-info."""
        with open(self.get_path(content_hash, compressed), "rb") as f:
            return f.read()

    def fetch_raw(self, content_hash):
        """The object's bytes as stored on the server, hash-verified (no cache).

        The hash is checked by the downloader's ``validate`` callback, so that a
        corrupt copy makes it fail over to the next proxy / host.
        """
        from launcher.cvmfs.download import DownloadError
        try:
            raw = self.downloader.fetch(content_hash.url_path(), validate=content_hash.matches)
        except DownloadError as e:
            self.stats["errors"] += 1
            raise ObjectError("object %s: %s" % (content_hash, e), content_hash)
        self.stats["bytes_downloaded"] += len(raw)
        return raw

    def _insert_streamed(self, content_hash, raw):
        """Inflate piecewise straight into a cache transaction (no full copy in memory)."""
        dec = zlib.decompressobj()
        view = memoryview(raw)
        txn_factory = getattr(self.cache, "txn", None)
        if txn_factory is None:        # a cache with only insert(): go through a temp file
            with tempfile.TemporaryFile() as tmp:
                _inflate_into(dec, view, tmp)
                tmp.seek(0)
                return self.cache.insert(content_hash, tmp)
        txn = txn_factory()
        try:
            _inflate_into(dec, view, txn.file)
            return txn.commit(content_hash)
        finally:
            txn.abort()


def _inflate_into(dec, view, out):
    for pos in range(0, len(view), _PIECE):
        out.write(dec.decompress(view[pos:pos + _PIECE]))
    out.write(dec.flush())
    if not dec.eof:
        raise zlib.error("truncated zlib stream")
