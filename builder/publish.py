"""Publish a directory tree as a real CernVM-FS repository (the publisher of issue 5).

    python3 build.py publish SRC_DIR --fqrn NAME --out DIR [--keys KEYDIR]
                             [--whitelist-days N] [--ttl SECONDS]

writes the repository to DIR/srv/cvmfs/NAME/ (serve DIR/srv over HTTP and it is
at /cvmfs/NAME) and, unless --keys names a directory that already holds them,
new keys to DIR/keys/NAME.{pub,crt,key,masterkey}.  Run again on the same DIR
it publishes the next revision: it reads the previous manifest, reuses the
keys, increments the revision, keeps unchanged nested catalogs and extends the
history database (tags ``trunk``, ``trunk-previous`` and one ``generic-<time>``
tag per publish).

What is written follows the cvmfs 2.12 server tools (spec
shared/spec/cvmfs-repository-format.md, sections 2-9 and the checklist in 11):
zlib-compressed, SHA-1 content-addressed objects in data/XX/ (suffixes C, H, X,
P), catalogs of schema 2.5 revision 7 with nested catalogs where a
``.cvmfscatalog`` marker is, hard-link groups, symlinks, special files, user.*
extended attributes, a history database, a self-signed certificate, a
whitelist signed with the master key, and a manifest signed with the
repository key.  Like the real tools, the first publish also writes the empty
revision-0 catalog (it is the previous_revision of revision 1) and the root
directory keeps that revision-0 metadata (mode 0755, owner 0:0, size 4096,
mtime of the first publish) instead of the source's top directory.

Deliberate simplifications:
* Chunking: files larger than CHUNK_SIZE (8 MiB) are cut at fixed 8 MiB
  offsets (objects with suffix P, flags |64).  cvmfs cuts content-defined
  chunks of 4/8/16 MiB (min/avg/max); clients do not care where the
  boundaries are (spec 7.7).
* Hard links are grouped per directory (cvmfs supports no others): names of one
  inode in different directories become independent files.
* Only ``user.*`` extended attributes are recorded (names and values of at most
  255 bytes, the limit of the catalog's xattr format).
* No reflog (.cvmfsreflog, manifest Y) and no meta-info (M): clients ignore both.

Atomicity: objects are content-addressed and written via data/txn/ + rename,
catalogs bottom-up, then history and certificate, then the whitelist, and the
manifest last by rename.  A publish that fails before that leaves the previous
revision served intact (at most some unreferenced objects remain).
"""
import argparse
import fcntl
import hashlib
import itertools
import os
import re
import stat
import threading
import time
import zlib

from launcher.errors import CvmfsexecError, UsageError
from builder import catalogwriter as cw
from launcher.cvmfs.manifest import Manifest

CHUNK_SIZE = 8 * 1024 * 1024
WORKER_THREADS = min(2, os.cpu_count() or 1)
ROOT_PATH_MD5 = hashlib.md5(b"").hexdigest()
SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")
LOCK_TIMEOUT = 300
FQRN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------------------
# keys, certificate, signatures

class Keys(object):
    """The repository key pair + certificate and the master key pair of one fqrn."""

    def __init__(self, keys_dir, repo_key, cert_pem, master_key):
        self.keys_dir = keys_dir
        self.repo_key = repo_key
        self.cert_pem = cert_pem
        self.master_key = master_key

    def cert_der(self):
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        return cert.public_bytes(serialization.Encoding.DER)


KEY_SUFFIXES = ("key", "crt", "masterkey", "pub")


def key_paths(keys_dir, fqrn):
    return {s: os.path.join(keys_dir, "%s.%s" % (fqrn, s)) for s in KEY_SUFFIXES}


def make_certificate(fqrn, repo_key):
    """Self-signed X.509 certificate for the repository key (subject as cvmfs_server makes it)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID
    cn = fqrn if len(fqrn) <= 30 else fqrn[:30] + "[...]"
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                         "%s CernVM-FS Release Managers" % cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(repo_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(repo_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_private(path, data, mode):
    tmp = path + ".tmp%d" % os.getpid()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def generate_keys(keys_dir, fqrn):
    """Create 2048-bit RSA repository and master keys, certificate, public master key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    os.makedirs(keys_dir, exist_ok=True)
    repo_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    master_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = dict(encoding=serialization.Encoding.PEM,
               format=serialization.PrivateFormat.PKCS8,
               encryption_algorithm=serialization.NoEncryption())
    cert_pem = make_certificate(fqrn, repo_key)
    paths = key_paths(keys_dir, fqrn)
    _write_private(paths["key"], repo_key.private_bytes(**pem), 0o600)
    _write_private(paths["masterkey"], master_key.private_bytes(**pem), 0o600)
    _write_private(paths["crt"], cert_pem, 0o644)
    _write_private(paths["pub"], master_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    return Keys(keys_dir, repo_key, cert_pem, master_key)


def load_keys(keys_dir, fqrn):
    """Load existing keys; CvmfsexecError if incomplete, unreadable or not matching."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    paths = key_paths(keys_dir, fqrn)
    missing = [p for s, p in paths.items() if s != "pub" and not os.path.exists(p)]
    if missing:
        raise CvmfsexecError(
            "incomplete keys for %s in %s: missing %s" % (fqrn, keys_dir, ", ".join(missing)),
            "a publisher needs %s.key, %s.crt and %s.masterkey" % (fqrn, fqrn, fqrn))
    try:
        repo_key = serialization.load_pem_private_key(_read(paths["key"]), None)
        master_key = serialization.load_pem_private_key(_read(paths["masterkey"]), None)
        cert_pem = _read(paths["crt"])
        cert = x509.load_pem_x509_certificate(cert_pem)
    except (ValueError, TypeError) as e:
        raise CvmfsexecError("cannot load the keys of %s from %s: %s" % (fqrn, keys_dir, e))
    if cert.public_key().public_numbers() != repo_key.public_key().public_numbers():
        raise CvmfsexecError("%s does not hold the public key of %s"
                             % (paths["crt"], paths["key"]))
    return Keys(keys_dir, repo_key, cert_pem, master_key)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def rsa_sign_pkcs1(private_key, message):
    """RSA PKCS#1 v1.5 type-1 signature of ``message`` as is (no hashing, no DigestInfo).

    cvmfs signs whitelists this way (``openssl pkeyutl -sign``, spec 6.3); a
    manifest signature is the same with SHA1 DigestInfo + SHA-1 digest as message.
    """
    nums = private_key.private_numbers()
    n = nums.public_numbers.n
    k = (n.bit_length() + 7) // 8
    if len(message) > k - 11:
        raise ValueError("message too long for the RSA key")
    em = b"\x00\x01" + b"\xff" * (k - 3 - len(message)) + b"\x00" + message
    return pow(int.from_bytes(em, "big"), nums.d, n).to_bytes(k, "big")


def sign_manifest_hash(repo_key, hash_line):
    """RSASSA-PKCS1-v1_5 with SHA-1 over the ASCII hash line (spec 4.3)."""
    return rsa_sign_pkcs1(repo_key, SHA1_DIGEST_INFO + hashlib.sha1(hash_line).digest())


def fingerprint(der):
    """Certificate fingerprint as written in whitelists: 'AB:CD:...' (SHA-1 of the DER)."""
    return ":".join("%02X" % b for b in hashlib.sha1(der).digest())


def make_whitelist(fqrn, keys, days, now):
    exp = now + days * 86400
    body = ("%s\nE%s\nN%s\n%s\n" % (
        time.strftime("%Y%m%d%H%M%S", time.gmtime(now)),
        time.strftime("%Y%m%d%H%M%S", time.gmtime(exp)),
        fqrn, fingerprint(keys.cert_der()))).encode("ascii")
    h = hashlib.sha1(body).hexdigest().encode("ascii")
    return body + b"--\n" + h + b"\n" + rsa_sign_pkcs1(keys.master_key, h)


def make_manifest(fields, repo_key):
    body = "".join("%s%s\n" % (k, v) for k, v in fields).encode("utf-8")
    h = hashlib.sha1(body).hexdigest().encode("ascii")
    return body + b"--\n" + h + b"\n" + sign_manifest_hash(repo_key, h)


def parse_manifest(data):
    """{letter: value} of the fields of a manifest (the reader's parser)."""
    return Manifest.parse(data).fields


# ---------------------------------------------------------------------------
# objects

class ObjectWriter(object):
    """Content-addressed writer of data/XX/... objects (zlib, SHA-1 of the stored bytes)."""

    def __init__(self, repo_dir):
        self.data = os.path.join(repo_dir, "data")
        self.txn = os.path.join(self.data, "txn")
        os.makedirs(self.txn, exist_ok=True)
        for i in range(256):
            os.makedirs(os.path.join(self.data, "%02x" % i), exist_ok=True)
        self._seen = set()
        self._tmp_counter = itertools.count(1)    # next() is atomic: threads share it
        self._stats_lock = threading.Lock()
        self.written = 0
        self.bytes_written = 0

    def path(self, hash_hex, suffix=""):
        return os.path.join(self.data, hash_hex[:2], hash_hex[2:] + suffix)

    def tmp_path(self, tag="tmp"):
        return os.path.join(self.txn, "%s.%d.%d" % (tag, os.getpid(), next(self._tmp_counter)))

    def put(self, data, suffix=""):
        """Compress and store ``data``; return (hex hash, raw digest)."""
        return self.put_stored(zlib.compress(data), suffix)

    def put_stored(self, blob, suffix=""):
        d = hashlib.sha1(blob)
        hex_ = d.hexdigest()
        name = hex_ + suffix
        if name not in self._seen:
            final = self.path(hex_, suffix)
            if not os.path.exists(final):
                # two threads storing one object race harmlessly: same bytes, atomic rename
                tmp = self.tmp_path()
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    view = memoryview(blob)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
                os.rename(tmp, final)
                with self._stats_lock:
                    self.written += 1
                    self.bytes_written += len(blob)
            self._seen.add(name)
        return hex_, d.digest()

    def get(self, hash_hex, suffix):
        """Decompressed bytes of an existing object."""
        try:
            return zlib.decompress(_read(self.path(hash_hex, suffix)))
        except (OSError, zlib.error) as e:
            raise CvmfsexecError("cannot read object %s%s of the previous revision: %s"
                                 % (hash_hex, suffix, e),
                                 "the repository in --out is damaged; publish to a new --out")

    def get_to_file(self, hash_hex, suffix):
        tmp = self.tmp_path("prev")
        with open(tmp, "wb") as f:
            f.write(self.get(hash_hex, suffix))
        return tmp

    def cleanup_txn(self):
        prefix = ".%d." % os.getpid()
        for name in os.listdir(self.txn):
            if prefix in name:
                try:
                    os.unlink(os.path.join(self.txn, name))
                except OSError:
                    pass


# ---------------------------------------------------------------------------
# source tree

class Node(object):
    __slots__ = ("name", "path", "src", "st", "children", "nested", "target", "xattrs")

    def __init__(self, name, path, src, st):
        self.name = name          # last component (str)
        self.path = path          # absolute repository path ('' for the root)
        self.src = src            # path in the source tree
        self.st = st              # os.lstat result
        self.children = None      # directories: [Node] sorted by name
        self.nested = False       # directories: root of a nested catalog
        self.target = None        # symlinks: target
        self.xattrs = None        # {name: bytes} or None


def _check_name(name, parent_src):
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise CvmfsexecError("file name is not valid UTF-8: %r in %s" % (name, parent_src),
                             "cvmfs catalogs store names as UTF-8 text; rename the file")


def read_xattrs(src):
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        return None
    out = {}
    for n in names:
        if not n.startswith("user."):
            continue
        try:
            v = os.getxattr(src, n, follow_symlinks=False)
        except OSError:
            continue
        if len(n.encode("utf-8")) > 255 or len(v) > 255:
            raise CvmfsexecError("extended attribute %s of %s is longer than 255 bytes" % (n, src),
                                 "cvmfs catalogs cannot store it; remove it or shorten it")
        out[n] = v
    return out or None


def scan(src_root, exclude=None):
    """Read the source tree into Nodes (lstat, readlink, user.* xattrs).

    ``exclude``: (st_dev, st_ino) of a directory to leave out -- the output
    directory when it lies inside the source tree.
    """
    try:
        root = Node("", "", src_root, os.lstat(src_root))
    except OSError as e:
        raise CvmfsexecError("cannot read source directory %s: %s" % (src_root, e.strerror))
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            entries = sorted(os.scandir(d.src), key=lambda e: e.name)
        except OSError as e:
            raise CvmfsexecError("cannot list %s: %s" % (d.src, e.strerror))
        d.children = []
        for e in entries:
            _check_name(e.name, d.src)
            try:
                st = e.stat(follow_symlinks=False)
            except OSError as err:
                raise CvmfsexecError("cannot stat %s: %s" % (e.path, err.strerror))
            n = Node(e.name, d.path + "/" + e.name, e.path, st)
            if stat.S_ISLNK(st.st_mode):
                n.target = os.readlink(e.path)
                _check_name(n.target, d.src)
            else:
                n.xattrs = read_xattrs(e.path)
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) == exclude:
                    continue
                stack.append(n)
            elif e.name == ".cvmfscatalog" and d.path != "":
                d.nested = True
            d.children.append(n)
    return root


# ---------------------------------------------------------------------------
# catalogs

class PreviousRevision(object):
    """What the publisher needs from the revision currently served in --out."""

    def __init__(self, objects, manifest):
        self.fields = parse_manifest(manifest)
        try:
            self.revision = int(self.fields.get("S", "0"))
            self.root_hash = self.fields["C"]
            self.timestamp = int(self.fields.get("T", "0"))
        except (KeyError, ValueError):
            raise CvmfsexecError("the manifest of the repository in %s is damaged"
                                 % os.path.dirname(objects.data),
                                 "publish to a new --out directory")
        self.history = self.fields.get("H")
        self.catalogs = {}     # mountpoint -> (hash, size)
        self.root_meta = None
        self._objects = objects
        self._keys = {}
        db = objects.get_to_file(self.root_hash, "C")
        try:
            self.root_meta = cw.root_row(db)
            self.root_size = os.path.getsize(db)
            nested, _ = cw.read_nested(db)
        finally:
            os.unlink(db)
        self._pending = list(nested)

    def catalog(self, mountpoint):
        """(hash, size, content key) of the previous catalog at ``mountpoint``, or None."""
        while mountpoint not in self.catalogs and self._pending:
            self._load_next()
        entry = self.catalogs.get(mountpoint)
        if entry is None:
            return None
        h, size = entry
        return h, size, self._keys[h]

    def _load_next(self):
        path, h, size = self._pending.pop()
        self.catalogs[path] = (h, size)
        db = self._objects.get_to_file(h, "C")
        try:
            nested, _ = cw.read_nested(db)
            self._keys[h] = cw.catalog_content_key(db)
        finally:
            os.unlink(db)
        self._pending.extend(nested)


class CatalogBuilder(object):
    """Turns the Node tree into catalogs (bottom-up) and file contents into objects."""

    def __init__(self, objects, revision, timestamp, ttl, root_meta, previous,
                 previous_root, chunk_size=CHUNK_SIZE):
        self.objects = objects
        self.revision = revision
        self.timestamp = timestamp
        self.ttl = ttl
        self.root_meta = root_meta      # (mode, mtime, uid, gid, size) of the root row
        self.previous = previous        # PreviousRevision or None
        self.previous_root = previous_root   # hash of the previous root catalog
        self.chunk_size = chunk_size
        self._content = {}              # (st_dev, st_ino) -> (digest or None, chunks)
        self._stored = {}               # id(node) -> store_file() result, filled in parallel
        self.catalog_count = 0
        self.entries = 0

    # -- file contents

    def store_all(self, root, threads=None):
        """Store the contents of every regular file below ``root`` with a thread pool.

        zlib, hashlib and file I/O release the GIL, so threads overlap reading,
        compressing and writing objects.  Catalog rows are still added in
        order, later, by build().
        """
        files = []
        stack = [root]
        while stack:
            d = stack.pop()
            for c in d.children:
                if stat.S_ISDIR(c.st.st_mode):
                    stack.append(c)
                elif stat.S_ISREG(c.st.st_mode):
                    files.append(c)
        threads = WORKER_THREADS if threads is None else threads
        if threads <= 1 or len(files) < 64:
            return
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for node, result in zip(files, pool.map(self.store_file, files)):
                self._stored[id(node)] = result

    def store_file(self, node):
        """(raw digest or None, [(offset, size, digest)] or None, size) of a regular file."""
        done = self._stored.get(id(node))
        if done is not None:
            return done
        key = (node.st.st_dev, node.st.st_ino)
        hit = self._content.get(key)
        if hit is not None:
            return hit
        try:
            with open(node.src, "rb") as f:
                first = f.read(self.chunk_size + 1)
                if len(first) <= self.chunk_size:
                    result = (self.objects.put(first)[1], None, len(first))
                else:
                    result = self._store_chunks(f, first)
        except OSError as e:
            raise CvmfsexecError("cannot read %s: %s" % (node.src, e.strerror))
        if node.st.st_nlink > 1:
            self._content[key] = result
        return result

    def _store_chunks(self, f, first):
        """Cut a big file into chunk_size pieces; compress them WORKER_THREADS at a time
        (at most that many pieces in memory)."""
        from concurrent.futures import ThreadPoolExecutor
        pending, chunks = [], []
        offset = 0
        buf = first
        with ThreadPoolExecutor(max_workers=max(1, WORKER_THREADS)) as pool:
            while buf:
                piece, buf = buf[:self.chunk_size], buf[self.chunk_size:]
                if len(buf) < self.chunk_size:
                    buf += f.read(self.chunk_size - len(buf))
                pending.append((offset, len(piece), pool.submit(self.objects.put, piece, "P")))
                offset += len(piece)
                if len(pending) >= max(1, WORKER_THREADS):
                    off, size, fut = pending.pop(0)
                    chunks.append((off, size, fut.result()[1]))
            for off, size, fut in pending:
                chunks.append((off, size, fut.result()[1]))
        return None, chunks, offset

    # -- rows

    def dir_row(self, w, node, parent, flags):
        st = node.st
        nsub = sum(1 for c in node.children if stat.S_ISDIR(c.st.st_mode))
        if node.path == "":
            mode, mtime, uid, gid, size = self.root_meta
            return w.add_row("", None, 2 + nsub, None, size, mode, mtime, flags, "", "",
                             uid, gid, None)
        return w.add_row(node.path, parent, 2 + nsub, None, st.st_size, st.st_mode,
                         int(st.st_mtime), flags, node.name, "", st.st_uid, st.st_gid,
                         cw.encode_xattrs(node.xattrs))

    def leaf_row(self, w, node, parent, hardlinks):
        st = node.st
        mode = st.st_mode
        common = dict(uid=st.st_uid, gid=st.st_gid, xattr=cw.encode_xattrs(node.xattrs))
        if stat.S_ISLNK(mode):
            return w.add_row(node.path, parent, hardlinks, None,
                             len(node.target.encode("utf-8")), mode, int(st.st_mtime),
                             cw.FLAG_FILE | cw.FLAG_LINK, node.name, node.target,
                             st.st_uid, st.st_gid, None)
        if stat.S_ISREG(mode):
            digest, chunks, size = self.store_file(node)
            flags = cw.FLAG_FILE | (cw.FLAG_FILE_CHUNK if chunks else 0)
            key = w.add_row(node.path, parent, hardlinks, digest, size, mode,
                            int(st.st_mtime), flags, node.name, "", **common)
            if chunks:
                w.add_chunks(key, chunks)
            return key
        size = st.st_rdev if (stat.S_ISBLK(mode) or stat.S_ISCHR(mode)) else 0
        return w.add_row(node.path, parent, hardlinks, None, size, mode, int(st.st_mtime),
                         cw.FLAG_FILE | cw.FLAG_FILE_SPECIAL, node.name, "", **common)

    def fill(self, w, d):
        """Add the rows below directory ``d`` (already added) to catalog ``w``."""
        groups = {}
        for c in d.children:
            if not stat.S_ISDIR(c.st.st_mode) and c.st.st_nlink > 1:
                groups.setdefault((c.st.st_dev, c.st.st_ino), []).append(c)
        hardlinks = {}
        for names in groups.values():
            if len(names) > 1:
                value = (w.new_hardlink_group() << 32) | len(names)
                for c in names:
                    hardlinks[id(c)] = value
        later = []
        for c in d.children:
            self.entries += 1
            if stat.S_ISDIR(c.st.st_mode):
                if c.nested:
                    child_hash, child_size, child = self.build(c, d.path)
                    self.dir_row(w, c, d.path, cw.FLAG_DIR | cw.FLAG_DIR_NESTED_MOUNTPOINT)
                    w.add_nested(c.path, child_hash, child_size, child)
                else:
                    self.dir_row(w, c, d.path, cw.FLAG_DIR)
                    later.append(c)
            elif id(c) in hardlinks:
                later.append(c)    # like cvmfs: hard-link names after the ordinary rows
            else:
                self.leaf_row(w, c, d.path, 1)
        for c in later:
            if stat.S_ISDIR(c.st.st_mode):
                self.fill(w, c)
            else:
                self.leaf_row(w, c, d.path, hardlinks[id(c)])

    def build(self, d, parent):
        """Build the catalog rooted at directory ``d``; return (hash, size, writer)."""
        w = cw.CatalogWriter(d.path)
        if d.path == "":
            self.dir_row(w, d, None, cw.FLAG_DIR)
        else:
            self.dir_row(w, d, parent, cw.FLAG_DIR | cw.FLAG_DIR_NESTED_ROOT)
        self.fill(w, d)
        prev = self.previous.catalog(d.path) if (self.previous and d.path) else None
        if prev is not None and prev[2] == w.content_key():
            return prev[0], prev[1], w          # unchanged nested catalog: keep it
        if d.path == "":
            props = [("schema", cw.SCHEMA), ("schema_revision", cw.SCHEMA_REVISION),
                     ("TTL", self.ttl), ("last_modified", self.timestamp),
                     ("revision", self.revision),
                     ("previous_revision", self.previous_root)]
        else:
            props = [("schema", cw.SCHEMA), ("schema_revision", cw.SCHEMA_REVISION),
                     ("root_prefix", d.path), ("last_modified", self.timestamp),
                     ("revision", self.revision),
                     ("previous_revision", prev[0] if prev else cw.NULL_HASH)]
        h, size = self.write_catalog(w, props)
        return h, size, w

    def write_catalog(self, w, props):
        tmp = self.objects.tmp_path("catalog")
        try:
            w.write(tmp, props)
            data = _read(tmp)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.catalog_count += 1
        return self.objects.put(data, "C")[0], len(data)


def write_revision0(objects, timestamp):
    """The empty catalog ``swissknife create`` (mkfs) writes; returns (hash, size)."""
    w = cw.CatalogWriter("")
    w.add_row("", None, 2, None, 4096, 0o40755, timestamp, cw.FLAG_DIR, "")
    tmp = objects.tmp_path("catalog")
    try:
        w.write(tmp, [("schema", cw.SCHEMA), ("schema_revision", cw.SCHEMA_REVISION),
                      ("revision", 0), ("last_modified", timestamp)])
        data = _read(tmp)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return objects.put(data, "C")[0], len(data)


# ---------------------------------------------------------------------------
# history

def write_history(objects, fqrn, previous, root_hash, root_size, revision, timestamp):
    tag_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
    prev_db = None
    old_tags = {}
    try:
        if previous is not None and previous.history:
            prev_db = objects.get_to_file(previous.history, "H")
            old_tags = cw.read_tags(prev_db)
        generic = "generic-" + tag_time
        if generic in old_tags:       # two publishes within one second
            generic = "%s-r%d" % (generic, revision)
        tags = [(generic, root_hash, revision, timestamp, "", root_size)]
        if "trunk" in old_tags:
            h, rev, ts, _, size = old_tags["trunk"]
            tags.append(("trunk-previous", h, rev, ts, "default undo target", size))
        tags.append(("trunk", root_hash, revision, timestamp, "current HEAD", root_size))
        tmp = objects.tmp_path("history")
        try:
            cw.write_history(tmp, fqrn, prev_db,
                             previous.history if (previous and previous.history)
                             else cw.NULL_HASH, tags)
            data = _read(tmp)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    finally:
        if prev_db:
            os.unlink(prev_db)
    return objects.put(data, "H")[0]


# ---------------------------------------------------------------------------
# the publish operation

def _atomic_write(path, data):
    tmp = "%s.tmp%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _Lock(object):
    """flock on DIR/.publish-<fqrn>.lock with a deadline: one publisher per repository."""

    def __init__(self, path, timeout=LOCK_TIMEOUT):
        self.path = path
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise CvmfsexecError("another publish of this repository holds %s"
                                         % self.path, "wait for it to finish")
                time.sleep(0.1)

    def __exit__(self, *exc):
        os.close(self.fd)


def resolve_keys(fqrn, out_dir, keys_dir, has_previous):
    """Existing keys from keys_dir (or DIR/keys), else fresh ones."""
    kdir = os.path.abspath(keys_dir or os.path.join(out_dir, "keys"))
    paths = key_paths(kdir, fqrn)
    present = [s for s in ("key", "crt", "masterkey") if os.path.exists(paths[s])]
    if present:
        return load_keys(kdir, fqrn)
    if has_previous:
        raise CvmfsexecError(
            "%s already holds a revision of %s but its keys are not in %s" % (out_dir, fqrn, kdir),
            "pass --keys with the directory holding %s.key, .crt and .masterkey" % fqrn)
    return generate_keys(kdir, fqrn)


def publish(src_dir, fqrn, out_dir, keys_dir=None, whitelist_days=30, ttl=240,
            chunk_size=CHUNK_SIZE, now=None):
    """Publish ``src_dir`` as the next revision of repository ``fqrn`` in ``out_dir``.

    Returns dict(revision, root_hash, repo_dir, keys_dir, fqrn, timestamp,
    certificate, history, whitelist_expires, catalogs, entries, objects_written).
    ``chunk_size``: files larger than this are chunked; ``now``: publish time
    (UNIX seconds; default the clock) for the manifest, catalogs, history and
    whitelist.  If ``out_dir`` lies inside ``src_dir`` it is left out.
    """
    if not FQRN_RE.match(fqrn or ""):
        raise UsageError("invalid repository name %r" % fqrn, "use a name like demo.example.org")
    if not os.path.isdir(src_dir):
        raise UsageError("source %s is not a directory" % src_dir)
    if int(ttl) <= 0 or int(whitelist_days) <= 0:
        raise UsageError("--ttl and --whitelist-days must be positive")
    src_dir = os.path.abspath(src_dir)
    out_dir = os.path.abspath(out_dir)
    repo_dir = os.path.join(out_dir, "srv", "cvmfs", fqrn)
    try:
        os.makedirs(repo_dir, exist_ok=True)
        with _Lock(os.path.join(out_dir, ".publish-%s.lock" % fqrn)):
            return _publish_locked(src_dir, fqrn, out_dir, repo_dir, keys_dir,
                                   int(whitelist_days), int(ttl), chunk_size, now)
    except OSError as e:
        where = e.filename or out_dir
        raise CvmfsexecError("publishing %s to %s failed: %s: %s"
                             % (fqrn, out_dir, where, e.strerror or e),
                             "check that --out is writable and has free space")


def _publish_locked(src_dir, fqrn, out_dir, repo_dir, keys_dir, whitelist_days, ttl,
                    chunk_size, now):
    manifest_path = os.path.join(repo_dir, ".cvmfspublished")
    objects = ObjectWriter(repo_dir)
    try:
        previous = None
        if os.path.exists(manifest_path):
            served = _read(manifest_path)
            if parse_manifest(served).get("N") != fqrn:
                raise CvmfsexecError("%s holds a manifest for another repository" % repo_dir,
                                     "publish to a new --out directory")
            previous = PreviousRevision(objects, served)
        keys = resolve_keys(fqrn, out_dir, keys_dir, previous is not None)
        timestamp = int(now if now is not None else time.time())
        if previous is not None:
            timestamp = max(timestamp, previous.timestamp)    # never roll back T
            revision = previous.revision + 1
            root_meta = previous.root_meta or (0o40755, timestamp, 0, 0, 4096)
        else:
            revision = 1
            root_meta = (0o40755, timestamp, 0, 0, 4096)
        out_st = os.stat(out_dir)
        tree = scan(src_dir, exclude=(out_st.st_dev, out_st.st_ino))
        if previous is None:
            # revision 0 as mkfs writes it: the previous_revision of revision 1
            previous_root = write_revision0(objects, timestamp)[0]
        else:
            previous_root = previous.root_hash
        builder = CatalogBuilder(objects, revision, timestamp, ttl, root_meta, previous,
                                 previous_root, chunk_size)
        builder.store_all(tree)
        root_hash, root_size, _ = builder.build(tree, None)
        history = write_history(objects, fqrn, previous, root_hash, root_size, revision,
                                timestamp)
        cert_hash = objects.put(keys.cert_pem, "X")[0]
        whitelist = make_whitelist(fqrn, keys, whitelist_days, timestamp)
        manifest = make_manifest([
            ("C", root_hash), ("B", root_size), ("R", ROOT_PATH_MD5), ("D", ttl),
            ("S", revision), ("G", "no"), ("A", "no"), ("N", fqrn), ("X", cert_hash),
            ("H", history), ("T", timestamp)], keys.repo_key)
        _atomic_write(os.path.join(repo_dir, ".cvmfswhitelist"), whitelist)
        _atomic_write(manifest_path, manifest)
    finally:
        objects.cleanup_txn()
    return dict(revision=revision, root_hash=root_hash, repo_dir=repo_dir,
                keys_dir=keys.keys_dir, fqrn=fqrn, timestamp=timestamp,
                certificate=cert_hash, history=history,
                whitelist_expires=timestamp + whitelist_days * 86400,
                catalogs=builder.catalog_count, entries=builder.entries + 1,
                objects_written=objects.written)


def main(argv):
    parser = argparse.ArgumentParser(
        prog="build.py publish",
        description="Publish SRC_DIR as a CernVM-FS repository in DIR/srv/cvmfs/NAME "
                    "(the next revision if DIR already holds one).")
    parser.add_argument("src_dir", metavar="SRC_DIR")
    parser.add_argument("--fqrn", required=True, metavar="NAME")
    parser.add_argument("--out", required=True, metavar="DIR")
    parser.add_argument("--keys", metavar="KEYDIR",
                        help="directory with NAME.{key,crt,masterkey,pub} (default DIR/keys; "
                             "created there when absent)")
    parser.add_argument("--whitelist-days", type=int, default=30, metavar="N")
    parser.add_argument("--ttl", type=int, default=240, metavar="SECONDS")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        if e.code in (0, None):
            return 0
        raise UsageError("invalid arguments for publish (see above)")
    t0 = time.monotonic()
    info = publish(args.src_dir, args.fqrn, args.out, keys_dir=args.keys,
                   whitelist_days=args.whitelist_days, ttl=args.ttl)
    print("published %s revision %d (root catalog %s, %d entries, catalogs written: %d) in %s; "
          "keys in %s; %.1f s" % (info["fqrn"], info["revision"], info["root_hash"],
                                  info["entries"], info["catalogs"], info["repo_dir"],
                                  info["keys_dir"], time.monotonic() - t0))
    return 0
