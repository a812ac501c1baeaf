"""File catalogs: the SQLite databases (object suffix ``C``) that describe a tree.

One :class:`Catalog` wraps one decompressed catalog file, opened read-only.
Nothing is loaded into Python objects up front: every lookup, listing and
chunk list is one indexed SQL query (``pk_catalog`` on the md5 path key,
``idx_catalog_parent`` on the parent key), so memory stays flat whatever the
size of the catalog.  Schemas from the 2.1 era (2.5 rev 0-2, no ``mtimens``, no
``bind_mountpoints``) to the current one (2.5 rev 7) are read by probing the
columns and tables that exist (spec 7.1) instead of trusting the number.

Which catalog answers which path (nested catalogs, mount points, inode
numbers) is the job of :mod:`launcher.cvmfs.repository`; this module knows one
catalog at a time.
"""

import binascii
import hashlib
import os
import sqlite3
import stat
import struct

try:
    from urllib.parse import quote as _url_quote
except ImportError:  # pragma: no cover
    from urllib import quote as _url_quote

from launcher.errors import CvmfsexecError

# Flags of the catalog.flags column (spec 7.4, catalog_sql.h).
FLAG_DIR = 1
FLAG_DIR_NESTED_MOUNTPOINT = 2
FLAG_FILE = 4
FLAG_LINK = 8
FLAG_FILE_SPECIAL = 16
FLAG_DIR_NESTED_ROOT = 32
FLAG_FILE_CHUNK = 64
FLAG_FILE_EXTERNAL = 128
FLAG_DIR_BIND_MOUNTPOINT = 0x4000
FLAG_HIDDEN = 0x8000
FLAG_DIRECT_IO = 0x10000

# (flags >> 8) & 7 -> algorithm id appended to the hex digest (spec 2.1, 3.1).
HASH_ALGORITHM_IDS = {0: "", 1: "-rmd160", 2: "-shake128"}
COMPRESSION_ZLIB = 0
COMPRESSION_NONE = 1

ROOT_PARENT_KEY = (0, 0)


class CatalogError(CvmfsexecError):
    """A catalog that cannot be opened or does not look like a cvmfs catalog."""


def path_key(path):
    """The (md5path_1, md5path_2) key of a repository path ('' is the root).

    The MD5 digest of the UTF-8 path read as two little-endian signed int64
    (spec 7.3).  Undecodable names round-trip through surrogateescape.
    """
    if not isinstance(path, bytes):
        path = path.encode("utf-8", "surrogateescape")
    return struct.unpack("<qq", hashlib.md5(path).digest())


def parent_path(path):
    """'/a/b' -> '/a'; '/a' -> ''; '' -> None."""
    if not path:
        return None
    return path[:path.rindex("/")]


def ancestor_paths(path):
    """'/a/b/c' -> ['/a', '/a/b', '/a/b/c'] (component-wise prefixes)."""
    out = []
    pos = path.find("/", 1)
    while pos != -1:
        out.append(path[:pos])
        pos = path.find("/", pos + 1)
    if path:
        out.append(path)
    return out


def hash_string(digest, flags, suffix=""):
    """Hex string of a raw hash BLOB with the algorithm id from ``flags``."""
    if not digest:
        return None
    algo = HASH_ALGORITHM_IDS.get((flags >> 8) & 7)
    if algo is None:
        raise CatalogError("catalog entry uses unknown hash algorithm %d" % ((flags >> 8) & 7))
    return _hex(digest) + algo + suffix


def _hex(blob):
    return binascii.hexlify(bytes(blob)).decode("ascii")


def is_compressed(flags):
    """False when a file's objects are stored raw (compression bits = none)."""
    return ((flags >> 11) & 7) != COMPRESSION_NONE


def parse_xattrs(blob):
    """Decode an xattr BLOB (spec 7.5) into {name(str): value(bytes)}.

    Layout: uint8 version (1), uint8 count, then count times uint8 len_key,
    uint8 len_value, key, value.  Unknown versions or truncated data are
    "corrupt, no xattrs", as in xattr.cc.
    """
    if not blob:
        return {}
    blob = bytes(blob)
    if len(blob) < 2 or blob[0] != 1:
        return {}
    count = blob[1]
    pos = 2
    out = {}
    for _ in range(count):
        if pos + 2 > len(blob):
            return {}
        klen, vlen = blob[pos], blob[pos + 1]
        pos += 2
        if klen == 0 or pos + klen + vlen > len(blob):
            return {}
        key = blob[pos:pos + klen].decode("utf-8", "surrogateescape")
        out[key] = blob[pos + klen:pos + klen + vlen]
        pos += klen + vlen
    return out


def expand_variant_symlink(target, lookup):
    """Expand $(NAME) and $(NAME:-default) in a symlink target (spec 7.6).

    ``lookup(name)`` returns the value or None when unset.  An unset variable
    without default expands to ''; a '$(' without a closing ')' is kept.
    """
    if "$(" not in target:
        return target
    out = []
    pos = 0
    while True:
        start = target.find("$(", pos)
        if start == -1:
            break
        end = target.find(")", start + 2)
        if end == -1:
            break
        out.append(target[pos:start])
        name = target[start + 2:end]
        default = ""
        if ":-" in name:
            name, default = name.split(":-", 1)
        value = lookup(name)
        out.append(default if value is None else value)
        pos = end + 1
    out.append(target[pos:])
    return "".join(out)


class Row(object):
    """One catalog row, as read (no inode: that depends on the catalog's place)."""

    __slots__ = ("rowid", "md5path", "parent", "hardlinks", "hash", "size", "mode",
                 "mtime", "mtimens", "flags", "name", "symlink", "uid", "gid", "xattr")

    def __init__(self, values):
        (self.rowid, m1, m2, p1, p2, self.hardlinks, self.hash, self.size, self.mode,
         self.mtime, self.mtimens, self.flags, self.name, self.symlink, self.uid,
         self.gid, self.xattr) = values
        self.md5path = (m1, m2)
        self.parent = (p1, p2)
        self.hardlinks = (self.hardlinks or 0) & 0xFFFFFFFFFFFFFFFF
        self.flags = self.flags or 0
        self.symlink = self.symlink or ""

    @property
    def hardlink_group(self):
        return self.hardlinks >> 32

    @property
    def linkcount(self):
        return self.hardlinks & 0xFFFFFFFF

    @property
    def hidden(self):
        return bool(self.flags & FLAG_HIDDEN)

    @property
    def is_mountpoint(self):
        """Directory where a nested (or bind-mounted) catalog starts."""
        return bool(self.flags & (FLAG_DIR_NESTED_MOUNTPOINT | FLAG_DIR_BIND_MOUNTPOINT))

    @property
    def chunked(self):
        return bool(self.flags & FLAG_FILE_CHUNK)

    def content_hash(self):
        """Hex string of the whole-file object (None for dirs, links, pure chunked files)."""
        if not stat.S_ISREG(self.mode):
            return None
        return hash_string(self.hash, self.flags)


def _decode_text(raw):
    return raw.decode("utf-8", "surrogateescape")


class Catalog(object):
    """One catalog database, opened read-only; one query per question.

    ``hash_str`` is the catalog's hex hash (for messages and counters).  The
    connection may be used from several threads; callers serialize access
    (the Repository holds a lock around catalog work).
    """

    def __init__(self, db_path, hash_str=None):
        self.db_path = db_path
        self.hash_str = hash_str
        uri = "file:%s?mode=ro&immutable=1" % _url_quote(os.path.abspath(db_path))
        try:
            self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self.conn.text_factory = _decode_text
            # A small page cache per catalog: lookups are point queries.
            self.conn.execute("PRAGMA cache_size = -512")
            self.properties = dict(self.conn.execute("SELECT key, value FROM properties"))
            columns = self._columns("catalog")
        except sqlite3.DatabaseError as e:
            raise CatalogError("catalog %s is not a readable SQLite catalog: %s"
                               % (hash_str or db_path, e))
        if not columns:
            raise CatalogError("catalog %s has no 'catalog' table" % (hash_str or db_path))
        self.schema = float(self.properties.get("schema", "1.0"))
        self.schema_revision = int(self.properties.get("schema_revision", "0") or 0)
        if self.schema < 2.0 - 0.0005:
            raise CatalogError("catalog %s has schema %s (before cvmfs 2.1); not supported"
                               % (hash_str or db_path, self.schema))
        self.root_prefix = self.properties.get("root_prefix", "")
        if self.root_prefix == "/":
            self.root_prefix = ""
        self.revision = int(self.properties.get("revision", "0") or 0)
        self._select = "SELECT rowid, md5path_1, md5path_2, parent_1, parent_2, %s, hash, size, " \
            "mode, mtime, %s, flags, name, symlink, uid, gid, %s FROM catalog " % (
                "hardlinks" if "hardlinks" in columns else "0",
                "mtimens" if "mtimens" in columns else "NULL",
                "xattr" if "xattr" in columns else "NULL")
        tables = set(r[0] for r in self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table'"))
        self._has_chunks = "chunks" in tables
        self._has_bind = "bind_mountpoints" in tables
        self._has_stats = "statistics" in tables
        self._max_rowid = None

    def _columns(self, table):
        return set(r[1] for r in self.conn.execute("PRAGMA table_info(%s)" % table))

    # --- properties -----------------------------------------------------------
    @property
    def ttl(self):
        """Seconds (catalog property TTL, default 240 s: spec 7.2 / 5.4)."""
        try:
            return int(self.properties.get("TTL", "240"))
        except ValueError:
            return 240

    @property
    def last_modified(self):
        return int(self.properties.get("last_modified", "0") or 0)

    @property
    def max_rowid(self):
        """Largest rowid: the size of this catalog's inode range."""
        if self._max_rowid is None:
            self._max_rowid = self.conn.execute("SELECT max(rowid) FROM catalog").fetchone()[0] or 0
        return self._max_rowid

    # --- rows -------------------------------------------------------------------
    def lookup(self, path):
        """Row of ``path`` (a path inside this catalog's namespace) or None."""
        m1, m2 = path_key(path)
        r = self.conn.execute(self._select + "WHERE md5path_1=? AND md5path_2=?",
                              (m1, m2)).fetchone()
        return Row(r) if r else None

    def listing(self, path):
        """Rows whose parent is ``path`` (catalog row order, hidden rows included)."""
        p1, p2 = path_key(path)
        cur = self.conn.execute(self._select + "WHERE parent_1=? AND parent_2=?", (p1, p2))
        return [Row(r) for r in cur]

    def hardlink_leader(self, row):
        """Smallest rowid of ``row``'s hard-link group (same directory, same catalog)."""
        if not row.hardlink_group:
            return row.rowid
        r = self.conn.execute(
            "SELECT min(rowid) FROM catalog WHERE parent_1=? AND parent_2=? AND hardlinks=?",
            (row.parent[0], row.parent[1], _signed64(row.hardlinks))).fetchone()
        return r[0] or row.rowid

    def chunks(self, row):
        """[(offset, size, hash string with suffix 'P')] of a chunked file, by offset."""
        if not self._has_chunks:
            return []
        cur = self.conn.execute(
            "SELECT offset, size, hash FROM chunks WHERE md5path_1=? AND md5path_2=? "
            "ORDER BY offset", row.md5path)
        return [(off, size, hash_string(h, row.flags, "P")) for off, size, h in cur]

    def nested_for(self, path):
        """(mountpoint, hash string, is_bind) of the child catalog holding ``path``.

        ``path`` is in this catalog's namespace; the nested/bind row is the one
        whose path is a component-wise prefix of it (spec 7.8 step 4).  Paths
        are returned as stored (in this catalog's namespace).
        """
        prefixes = ancestor_paths(path)
        if not prefixes:
            return None
        marks = ",".join("?" * len(prefixes))
        tables = [("nested_catalogs", False)]
        if self._has_bind:
            tables.append(("bind_mountpoints", True))
        for table, is_bind in tables:
            rows = self.conn.execute("SELECT path, sha1 FROM %s WHERE path IN (%s)"
                                     % (table, marks), prefixes).fetchall()
            if rows:
                mnt, sha = max(rows, key=lambda r: len(r[0]))
                return mnt, sha, is_bind
        return None

    def nested_catalogs(self):
        """[(path, hash string, size or None)] of the direct child catalogs."""
        cols = self._columns("nested_catalogs")
        size = "size" if "size" in cols else "NULL"
        return list(self.conn.execute("SELECT path, sha1, %s FROM nested_catalogs" % size))

    def statistics(self):
        """{counter: value} of the statistics table (empty for schemas without it)."""
        if not self._has_stats:
            return {}
        return dict(self.conn.execute("SELECT counter, value FROM statistics"))

    def counters(self):
        """Totals of this catalog and everything below it (self_ + subtree_), by name."""
        stats = self.statistics()
        names = sorted(set(k.split("_", 1)[1] for k in stats if "_" in k))
        return dict((n, int(stats.get("self_" + n, 0)) + int(stats.get("subtree_" + n, 0)))
                    for n in names)

    def close(self):
        try:
            self.conn.close()
        except sqlite3.Error:
            pass


def _signed64(v):
    return v - (1 << 64) if v >= (1 << 63) else v
