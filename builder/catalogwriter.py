"""Write CernVM-FS file catalogs and history databases (SQLite), as cvmfs 2.12 does.

The DDL is copied from catalogs the real 2.12 server tools wrote (fixture
small.example.org): schema 2.5 revision 7, named primary-key constraints, the
parent index, all six tables present even when empty, every value of the
``properties`` table stored as TEXT and all 24 ``statistics`` counters
(spec sections 7.1-7.9).  History databases follow spec section 8 (schema 1.0
revision 3: ``branches``, ``tags`` with ``branch``, an empty ``recycle_bin``).

Only the publisher (build side) uses this module; the runtime reader lives in
launcher/cvmfs/catalog.py.
"""
import hashlib
import sqlite3

SCHEMA = "2.5"
SCHEMA_REVISION = "7"

# catalog flags (spec 7.4) and the md5 path key: the reader's definitions
from launcher.cvmfs.catalog import (  # noqa: E402,F401  (re-exported for publish.py)
    FLAG_DIR, FLAG_DIR_NESTED_MOUNTPOINT, FLAG_DIR_NESTED_ROOT, FLAG_FILE, FLAG_FILE_CHUNK,
    FLAG_FILE_SPECIAL, FLAG_LINK, path_key as md5_pair)

NULL_HASH = "0" * 40

CATALOG_DDL = [
    "CREATE TABLE properties (key TEXT, value TEXT, "
    "CONSTRAINT pk_properties PRIMARY KEY (key))",
    "CREATE TABLE catalog (md5path_1 INTEGER, md5path_2 INTEGER, parent_1 INTEGER, "
    "parent_2 INTEGER, hardlinks INTEGER, hash BLOB, size INTEGER, mode INTEGER, "
    "mtime INTEGER, mtimens INTEGER, flags INTEGER, name TEXT, symlink TEXT, uid INTEGER, "
    "gid INTEGER, xattr BLOB,  CONSTRAINT pk_catalog PRIMARY KEY (md5path_1, md5path_2))",
    "CREATE INDEX idx_catalog_parent ON catalog (parent_1, parent_2)",
    "CREATE TABLE chunks (md5path_1 INTEGER, md5path_2 INTEGER, offset INTEGER, "
    "size INTEGER,  hash BLOB,  CONSTRAINT pk_chunks PRIMARY KEY (md5path_1, md5path_2, "
    "offset, size),  FOREIGN KEY (md5path_1, md5path_2) REFERENCES    "
    "catalog(md5path_1, md5path_2))",
    "CREATE TABLE nested_catalogs (path TEXT, sha1 TEXT, size INTEGER, "
    "CONSTRAINT pk_nested_catalogs PRIMARY KEY (path))",
    "CREATE TABLE bind_mountpoints (path TEXT, sha1 TEXT, size INTEGER, "
    "CONSTRAINT pk_bind_mountpoints PRIMARY KEY (path))",
    "CREATE TABLE statistics (counter TEXT, value INTEGER, "
    "CONSTRAINT pk_statistics PRIMARY KEY (counter))",
]

HISTORY_DDL = [
    "CREATE TABLE properties (key TEXT, value TEXT, "
    "CONSTRAINT pk_properties PRIMARY KEY (key))",
    "CREATE TABLE branches (branch TEXT, parent TEXT, initial_revision INTEGER,  "
    "CONSTRAINT pk_branch PRIMARY KEY (branch),   FOREIGN KEY (parent) REFERENCES "
    "branches (branch),   CHECK ((branch <> '') OR (parent IS NULL)),   "
    "CHECK ((branch = '') OR (parent IS NOT NULL)))",
    "CREATE TABLE tags (name TEXT, hash TEXT, revision INTEGER,   timestamp INTEGER, "
    "channel INTEGER, description TEXT, size INTEGER,   branch TEXT, "
    "CONSTRAINT pk_tags PRIMARY KEY (name),   FOREIGN KEY (branch) REFERENCES "
    "branches (branch))",
    "CREATE TABLE recycle_bin (hash TEXT, flags INTEGER,   "
    "CONSTRAINT pk_hash PRIMARY KEY (hash))",
]

# statistics counters of schema 2.5 revision >= 5, without the self_/subtree_ prefix
COUNTERS = ("chunked", "chunked_size", "chunks", "dir", "external", "external_file_size",
            "file_size", "nested", "regular", "special", "symlink", "xattr")


def encode_xattrs(xattrs):
    """Serialize {name(str): value(bytes)} into the xattr BLOB (spec 7.5), or None.

    Version 1, one-byte count and lengths, entries sorted by name.  Names or
    values longer than 255 bytes cannot be represented and raise ValueError.
    """
    if not xattrs:
        return None
    if len(xattrs) > 255:
        raise ValueError("more than 255 extended attributes")
    out = bytearray((1, len(xattrs)))
    for name in sorted(xattrs):
        key = name.encode("utf-8")
        value = bytes(xattrs[name])
        if not key or len(key) > 255 or len(value) > 255:
            raise ValueError("extended attribute %r: name or value longer than 255 bytes" % name)
        out += bytes((len(key), len(value))) + key + value
    return bytes(out)


def new_counters():
    return dict.fromkeys(COUNTERS, 0)


class CatalogWriter(object):
    """Collects the rows of one catalog and writes them into a fresh SQLite file.

    ``mountpoint`` is '' for the root catalog, else the absolute path of the
    nested catalog's root directory.  Statistics of this catalog ('self') are
    counted as rows are added; ``subtree`` counters are summed from children
    with :meth:`add_nested`.
    """

    def __init__(self, mountpoint):
        self.mountpoint = mountpoint
        self.rows = []
        self.chunks = []
        self.nested = []
        self.self_counts = new_counters()
        self.subtree_counts = new_counters()
        self._groups = 0

    def new_hardlink_group(self):
        """Next hard-link group number; groups are numbered 1, 2, ... per catalog."""
        self._groups += 1
        return self._groups

    def add_row(self, path, parent, hardlinks, content_hash, size, mode, mtime, flags,
                name, symlink="", uid=0, gid=0, xattr=None):
        """Add one catalog row; ``parent`` is the parent's path ('' for root children,
        None for the repository root).  Every row is counted in the self_ statistics,
        so a nested mount point counts in both catalogs, as in cvmfs (spec 7.9).
        """
        md5_1, md5_2 = md5_pair(path)
        if path == "" and parent is None:
            par_1 = par_2 = 0
        else:
            par_1, par_2 = md5_pair(parent)
        self.rows.append((md5_1, md5_2, par_1, par_2, hardlinks, content_hash, size, mode,
                          mtime, None, flags, name, symlink, uid, gid, xattr))
        c = self.self_counts
        if flags & FLAG_DIR:
            c["dir"] += 1
        elif flags & FLAG_LINK:
            c["symlink"] += 1
        elif flags & FLAG_FILE_SPECIAL:
            c["special"] += 1
        else:
            c["regular"] += 1
            c["file_size"] += size
            if flags & FLAG_FILE_CHUNK:
                c["chunked"] += 1
                c["chunked_size"] += size
        if xattr is not None:
            c["xattr"] += 1
        return md5_1, md5_2

    def add_chunks(self, path_key, chunks):
        """chunks: [(offset, size, raw_digest)] of one chunked file."""
        for offset, size, digest in chunks:
            self.chunks.append((path_key[0], path_key[1], offset, size, digest))
        self.self_counts["chunks"] += len(chunks)

    def add_nested(self, path, hash_hex, size, child):
        """Reference a finished child catalog (a CatalogWriter) at ``path``."""
        self.nested.append((path, hash_hex, size))
        self.self_counts["nested"] += 1
        for k in COUNTERS:
            self.subtree_counts[k] += child.self_counts[k] + child.subtree_counts[k]

    def content_key(self):
        """Digest of everything but the properties: equal keys mean an unchanged catalog."""
        h = hashlib.sha1()
        for part in (self.rows, self.chunks, self.nested):
            for row in sorted(repr(r) for r in part):
                h.update(row.encode("utf-8", "surrogateescape"))
                h.update(b"\0")
            h.update(b"\1")
        return h.hexdigest()

    def write(self, db_path, properties):
        """Write the catalog database to ``db_path`` (must not exist)."""
        db = sqlite3.connect(db_path)
        try:
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute("PRAGMA page_size=4096")
            for stmt in CATALOG_DDL:
                db.execute(stmt)
            db.executemany("INSERT INTO properties VALUES (?, ?)",
                           [(k, str(v)) for k, v in properties])
            db.executemany("INSERT INTO catalog VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           self.rows)
            db.executemany("INSERT INTO chunks VALUES (?,?,?,?,?)", self.chunks)
            db.executemany("INSERT INTO nested_catalogs VALUES (?,?,?)", self.nested)
            stats = [("self_" + k, self.self_counts[k]) for k in COUNTERS]
            stats += [("subtree_" + k, self.subtree_counts[k]) for k in COUNTERS]
            db.executemany("INSERT INTO statistics VALUES (?, ?)", sorted(stats))
            db.commit()
        finally:
            db.close()


def catalog_content_key(db_path):
    """content_key() of an existing catalog file, to detect unchanged nested catalogs."""
    db = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        cols = [r[1] for r in db.execute("PRAGMA table_info(catalog)")]
        if "mtimens" not in cols or "xattr" not in cols:
            return None
        w = CatalogWriter(None)
        w.rows = [tuple(r) for r in db.execute(
            "SELECT md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, "
            "mtime, mtimens, flags, name, symlink, uid, gid, xattr FROM catalog")]
        w.chunks = [tuple(r) for r in db.execute(
            "SELECT md5path_1, md5path_2, offset, size, hash FROM chunks")]
        w.nested = [tuple(r) for r in db.execute("SELECT path, sha1, size FROM nested_catalogs")]
        return w.content_key()
    finally:
        db.close()


def read_nested(db_path):
    """[(path, hash_hex, size)] of a catalog's direct children, and its properties dict."""
    db = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        nested = [tuple(r) for r in db.execute("SELECT path, sha1, size FROM nested_catalogs")]
        props = dict(db.execute("SELECT key, value FROM properties"))
        return nested, props
    finally:
        db.close()


def root_row(db_path):
    """(mode, mtime, uid, gid, size) of a root catalog's root directory row, or None."""
    db = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        p1, p2 = md5_pair("")
        return db.execute("SELECT mode, mtime, uid, gid, size FROM catalog "
                          "WHERE md5path_1=? AND md5path_2=?", (p1, p2)).fetchone()
    finally:
        db.close()


def write_history(db_path, fqrn, previous_db, previous_hash, tags):
    """Write a history database (spec 8) to ``db_path``.

    previous_db: path of the previous history database to copy tags from, or None.
    previous_hash: hex hash of the previous history object (40 zeros if none).
    tags: [(name, hash_hex, revision, timestamp, description, size)] inserted or
    replaced after the previous rows are copied.
    """
    db = sqlite3.connect(db_path)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        for stmt in HISTORY_DDL:
            db.execute(stmt)
        db.executemany("INSERT INTO properties VALUES (?, ?)", [
            ("schema", "1.0"), ("schema_revision", "3"), ("fqrn", fqrn),
            ("previous_revision", previous_hash)])
        db.execute("INSERT INTO branches VALUES ('', NULL, 0)")
        if previous_db:
            old = sqlite3.connect("file:%s?mode=ro" % previous_db, uri=True)
            try:
                rows = old.execute("SELECT name, hash, revision, timestamp, channel, "
                                   "description, size FROM tags").fetchall()
            finally:
                old.close()
            db.executemany("INSERT INTO tags VALUES (?,?,?,?,?,?,?,'')", rows)
        for name, hash_hex, revision, timestamp, description, size in tags:
            db.execute("INSERT OR REPLACE INTO tags VALUES (?,?,?,?,0,?,?,'')",
                       (name, hash_hex, revision, timestamp, description, size))
        db.commit()
    finally:
        db.close()


def read_tags(db_path):
    """{name: (hash, revision, timestamp, description, size)} of a history database."""
    db = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        return {r[0]: tuple(r[1:]) for r in db.execute(
            "SELECT name, hash, revision, timestamp, description, size FROM tags")}
    finally:
        db.close()

