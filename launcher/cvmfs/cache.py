"""The local object cache of the builtin client, in cvmfs's POSIX cache layout.

Layout (spec cvmfs-client-configuration section 6), so that cvmfs2 and this
client can use or inspect the same directory::

    $CVMFS_CACHE_BASE/shared/          (or /<fqrn> with CVMFS_SHARED_CACHE=no,
                                        or $CVMFS_CACHE_DIR)
        00/ .. ff/                      objects, DECOMPRESSED and verified, named by
                                        hash minus its first two hex digits, with the
                                        algorithm id (-rmd160) but no type suffix (C, X)
        txn/                            downloads in progress
        quarantaine/                    objects found corrupt (cvmfs's spelling)
        .cvmfscache                     marker
        cvmfschecksum.<fqrn>            breadcrumb <hash>T<timestamp>R<revision>

Several client processes (several jobs on one node) may share one directory:

* an object is written to a private temp file in ``txn/`` and hard-linked into
  place; ``EEXIST`` means another process won the race with identical content
  (the name is its content hash), so we drop ours.  Nobody ever sees a partial
  object under its final name.
* LRU state is the objects' mtime, bumped on lookup: no database that a crashed
  process could leave corrupt.  The quota (``CVMFS_QUOTA_LIMIT`` MB, <= 0 =
  unmanaged) is enforced by whoever's insert crosses it: under an flock of
  ``lock_cvmfsexec_quota`` it scans the cache and removes the least recently
  used objects until usage is at most half the limit, as cvmfs does.  A running
  byte count in ``cvmfsexec_usage`` (updated under the same lock) avoids a scan
  per insert; every scan rewrites it from the truth.
* pinned objects (loaded catalogs, files in use) hold a shared flock on an open
  descriptor; eviction takes an exclusive non-blocking flock before unlinking and
  skips what it cannot lock.  The kernel drops the locks of a process that dies,
  so a crash cannot pin anything forever.  Evicting a file that a reader has
  open is harmless: the reader keeps its data through its descriptor.

We do not maintain cvmfs's ``cachedb``: cvmfs rebuilds it from the directory
tree when it is missing.
"""

import errno
import fcntl
import os
import re
import shutil
import tempfile
import threading
import time

from launcher.errors import CvmfsexecError

# digests are lower-case hex; type suffixes (C, X, H, ...) are upper case
_NAME_RE = re.compile(r"^([0-9a-f]{4,})(-[a-z0-9]+)?")
_KNOWN_ALGORITHMS = ("rmd160", "shake128")
_TOUCH_GRANULARITY = 1.0     # seconds: do not rewrite an mtime newer than this
QUOTA_LOCK = "lock_cvmfsexec_quota"
USAGE_FILE = "cvmfsexec_usage"


def object_name(content_hash):
    """Cache file name of a content hash (ContentHash or its string form).

    '0123...ab-rmd160C' -> '0123...ab-rmd160' (type suffix dropped, algorithm kept).
    """
    digest = getattr(content_hash, "digest_hex", None)
    if digest is not None:
        algo = getattr(content_hash, "algorithm", "sha1")
        return digest.lower() + ("-" + algo if algo in _KNOWN_ALGORITHMS else "")
    text = str(content_hash)
    m = _NAME_RE.match(text)
    if not m:
        raise ValueError("not a content hash: %r" % text)
    digest, algo = m.group(1), m.group(2)
    if algo and algo[1:] in _KNOWN_ALGORITHMS:
        return digest + algo
    return digest


def _is_yes(value, default):
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("yes", "on", "1", "true")


class Cache(object):
    """Content-addressed cache of one repository (see the module docstring)."""

    def __init__(self, config, fqrn, log=None):
        self.fqrn = fqrn
        self._log = log.info if log is not None and hasattr(log, "info") else log
        base = config.get("CVMFS_CACHE_BASE") or "/var/lib/cvmfs"
        if config.get("CVMFS_CACHE_DIR"):
            self.dir = config["CVMFS_CACHE_DIR"]
        elif _is_yes(config.get("CVMFS_SHARED_CACHE"), True):
            self.dir = os.path.join(base, "shared")
        else:
            self.dir = os.path.join(base, fqrn)
        limit = (config.get("CVMFS_QUOTA_LIMIT") or "").strip()
        try:
            limit_mb = float(limit) if limit else 4000.0
        except ValueError:
            raise CvmfsexecError("CVMFS_QUOTA_LIMIT=%r is not a number of MB" % limit,
                                 "fix the cvmfs configuration")
        self.limit_bytes = int(limit_mb * 1024 * 1024) if limit_mb > 0 else 0
        self.txn_dir = os.path.join(self.dir, "txn")
        self._pins = {}              # name -> [fd, count]
        self._lock = threading.Lock()
        self._create_layout()

    # -- layout -------------------------------------------------------------------
    def _create_layout(self):
        marker = os.path.join(self.dir, ".cvmfscache")
        if os.path.exists(os.path.join(self.dir, "cvmfscatalog.cache")):
            raise CvmfsexecError("%s is a cvmfs 2.0 cache, which cannot be used" % self.dir,
                                 "remove it or choose another CVMFS_CACHE_BASE")
        if os.path.exists(marker):
            return
        try:
            os.makedirs(self.dir, 0o770, exist_ok=True)
            for i in range(256):
                _mkdir(os.path.join(self.dir, "%02x" % i), 0o700)
            _mkdir(self.txn_dir, 0o700)
            _mkdir(os.path.join(self.dir, "quarantaine"), 0o700)
            # the marker comes last: its presence means the layout is complete
            with open(marker, "ab"):
                pass
        except OSError as e:
            raise CvmfsexecError("cannot create the cache directory %s: %s"
                                 % (self.dir, e.strerror or e),
                                 "set CVMFS_CACHE_BASE to a writable directory")

    # -- objects ------------------------------------------------------------------
    def path(self, content_hash):
        name = object_name(content_hash)
        return os.path.join(self.dir, name[:2], name[2:])

    def lookup(self, content_hash):
        """Path of the cached object, or None; marks it recently used."""
        p = self.path(content_hash)
        try:
            st = os.stat(p)
        except OSError:
            return None
        now = time.time()
        if now - st.st_mtime > _TOUCH_GRANULARITY:
            try:
                os.utime(p, (now, now))
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return None      # evicted by another process just now
        return p

    def insert(self, content_hash, data):
        """Store ``data`` (bytes or a readable binary file object); return the path.

        The caller has verified (and decompressed) the data.  Atomic and safe
        against other processes inserting the same object.
        """
        txn = self.txn()
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                txn.file.write(data)
            else:
                shutil.copyfileobj(data, txn.file, 1024 * 1024)
            return txn.commit(content_hash)
        finally:
            txn.abort()

    def txn(self):
        """A :class:`Transaction`: write to ``.file``, then ``.commit(hash)``."""
        return Transaction(self)

    def _commit(self, tmp_path, content_hash):
        final = self.path(content_hash)
        if self.limit_bytes <= 0:
            added = _link_into_place(tmp_path, final)
        else:
            # link and count under the quota lock, so that an eviction scan by
            # another process never sees an object that is not counted yet
            size = os.stat(tmp_path).st_size
            with _FileLock(os.path.join(self.dir, QUOTA_LOCK)):
                added = _link_into_place(tmp_path, final)
                if added:
                    self._account_locked(size, final)
        if not added:
            self.lookup(content_hash)
        return final

    def quarantine(self, content_hash):
        """Move a cached object found corrupt aside (to quarantaine/)."""
        p = self.path(content_hash)
        try:
            os.rename(p, os.path.join(self.dir, "quarantaine", object_name(content_hash)))
        except OSError:
            pass

    # -- pinning --------------------------------------------------------------------
    def pin(self, content_hash):
        """Protect a cached object from eviction (in every process). False if absent."""
        name = object_name(content_hash)
        with self._lock:
            entry = self._pins.get(name)
            if entry is not None:
                entry[1] += 1
                return True
            p = self.path(content_hash)
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                return False
            fcntl.flock(fd, fcntl.LOCK_SH)
            # an evictor may have unlinked it between our open and our lock
            try:
                same = os.stat(p).st_ino == os.fstat(fd).st_ino
            except OSError:
                same = False
            if not same:
                os.close(fd)
                return False
            self._pins[name] = [fd, 1]
            return True

    def unpin(self, content_hash):
        name = object_name(content_hash)
        with self._lock:
            entry = self._pins.get(name)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                del self._pins[name]
                os.close(entry[0])

    def close(self):
        with self._lock:
            pins, self._pins = self._pins, {}
        for fd, _count in pins.values():
            os.close(fd)

    # -- quota ------------------------------------------------------------------------
    def _account_locked(self, size, new_path):
        usage = self._read_usage()
        if usage is None:
            usage = self.scan_usage()      # already includes the new object
        else:
            usage += size
        if usage > self.limit_bytes:
            usage = self._evict(self.limit_bytes // 2, keep=new_path)
        self._write_usage(usage)

    def usage(self):
        """Bytes used by cached objects: the shared running count (cheap), else a scan."""
        if self.limit_bytes > 0:
            counted = self._read_usage()
            if counted is not None:
                return counted
        return self.scan_usage()

    def scan_usage(self):
        """Bytes used by cached objects, summed over the directory tree (the truth)."""
        return sum(size for _m, size, _p in self._objects())

    def cleanup(self, target_bytes):
        """Evict least recently used unpinned objects down to ``target_bytes``."""
        with _FileLock(os.path.join(self.dir, QUOTA_LOCK)):
            usage = self._evict(target_bytes)
            self._write_usage(usage)
            return usage

    def _objects(self):
        """[(mtime, size, path)] of every cached object."""
        found = []
        for i in range(256):
            sub = os.path.join(self.dir, "%02x" % i)
            try:
                names = os.listdir(sub)
            except OSError:
                continue
            for n in names:
                p = os.path.join(sub, n)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                found.append((st.st_mtime, st.st_size, p))
        return found

    def _evict(self, target, keep=None):
        """Remove LRU unpinned objects until usage <= target; return the usage."""
        objects = sorted(self._objects())
        usage = sum(size for _m, size, _p in objects)
        removed = 0
        for _mtime, size, p in objects:
            if usage <= target:
                break
            if p == keep or self._pinned_by_us(p):
                continue
            if _remove_unless_pinned(p):
                usage -= size
                removed += 1
        if self._log:
            self._log("cache %s: evicted %d objects, %d bytes in use (limit %d)"
                      % (self.dir, removed, usage, self.limit_bytes))
        return usage

    def _pinned_by_us(self, p):
        name = os.path.basename(os.path.dirname(p)) + os.path.basename(p)
        with self._lock:
            return name in self._pins

    def _read_usage(self):
        try:
            with open(os.path.join(self.dir, USAGE_FILE)) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def _write_usage(self, usage):
        # in place, fixed width, under the quota lock: cheaper than temp+rename, and a
        # torn write (crash) only makes the next reader rescan
        fd = os.open(os.path.join(self.dir, USAGE_FILE), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, ("%20d\n" % usage).encode())
        finally:
            os.close(fd)

    # -- per-repository metadata (offline mode) -----------------------------------------
    def _meta_path(self, name):
        if not re.match(r"^[A-Za-z0-9_.-]+$", name):
            raise ValueError("bad metadata name %r" % name)
        return os.path.join(self.dir, "cvmfsexec.%s.%s" % (name, self.fqrn))

    def store_meta(self, name, data):
        """Keep the last ``manifest``/``whitelist``/``certificate`` (bytes) of this repository."""
        final = self._meta_path(name)
        fd, tmp = tempfile.mkstemp(dir=self.txn_dir, prefix="meta.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.rename(tmp, final)
        except BaseException:
            _unlink(tmp)
            raise

    def load_meta(self, name):
        try:
            with open(self._meta_path(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    def write_breadcrumb(self, root_hash, timestamp, revision):
        """cvmfs's ``cvmfschecksum.<fqrn>``: ``<hash>T<timestamp>R<revision>``, no newline."""
        final = os.path.join(self.dir, "cvmfschecksum." + self.fqrn)
        fd, tmp = tempfile.mkstemp(dir=self.txn_dir, prefix="breadcrumb.")
        with os.fdopen(fd, "w") as f:
            f.write("%sT%dR%d" % (root_hash, int(timestamp), int(revision)))
        os.rename(tmp, final)

    def read_breadcrumb(self):
        """(hash string, timestamp, revision) or None."""
        try:
            with open(os.path.join(self.dir, "cvmfschecksum." + self.fqrn)) as f:
                text = f.read().strip()
        except OSError:
            return None
        m = re.match(r"^([^T]+)T(\d+)(?:R(\d+))?$", text)
        if not m:
            return None
        return m.group(1), int(m.group(2)), int(m.group(3) or 0)


class Transaction(object):
    """A temp file in the cache's ``txn/``; ``commit(hash)`` links it into place."""

    def __init__(self, cache):
        self._cache = cache
        fd, self.tmp_path = tempfile.mkstemp(dir=cache.txn_dir, prefix="obj.")
        self.file = os.fdopen(fd, "wb")

    def commit(self, content_hash):
        self.file.close()
        try:
            return self._cache._commit(self.tmp_path, content_hash)
        finally:
            self.abort()

    def abort(self):
        if not self.file.closed:
            self.file.close()
        if self.tmp_path:
            _unlink(self.tmp_path)
            self.tmp_path = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.abort()


class _FileLock(object):
    """Exclusive flock on a lock file for a ``with`` block."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)      # releases the lock
        self.fd = None


def _link_into_place(tmp_path, final):
    """Hard-link the finished temp file to its final name; False if it was there."""
    try:
        os.link(tmp_path, final)
        return True
    except FileExistsError:
        return False    # another process stored the same object: keep theirs
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
    added = not os.path.exists(final)     # a file system without hard links: rename
    os.rename(tmp_path, final)
    return added


def _remove_unless_pinned(p):
    """Unlink ``p`` unless some process holds a (shared) pin lock on it."""
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False
            raise
        try:
            os.unlink(p)
        except OSError:
            return False
        return True
    finally:
        os.close(fd)


def _mkdir(path, mode):
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass
