"""The Repository facade: what is at a path of a repository, and its verified bytes.

``Repository(fqrn, config)`` opens one repository the way cvmfs2 mounts it:

1. the manifest and whitelist are downloaded (or, when every server is down,
   taken from the cache where the last successful open left them) and the
   chain of trust is verified (keys -> whitelist -> certificate -> manifest,
   :mod:`launcher.cvmfs.trust`), refusing a manifest older than the cache's
   breadcrumb and what the blacklist files list (:func:`blacklist_paths`);
   ``CVMFS_ROOT_HASH`` skips all of this and pins
   a root catalog, ``CVMFS_REPOSITORY_TAG`` / ``CVMFS_REPOSITORY_DATE`` pick an
   older root catalog from the history database;
2. the root catalog is fetched through the :class:`ObjectStore` (hash-checked,
   so the Merkle chain from the signed manifest covers every catalog and every
   file) and opened; nested catalogs are attached lazily, the first time a
   path below their mount point is asked for (spec 7.8);
3. after the TTL (root catalog property, capped by ``CVMFS_MAX_TTL``) the next
   :meth:`Repository.reload` fetches the manifest again and switches to a new
   revision; entries and open handles of the old revision keep working.

Inode numbers follow the reference client: row *k* of the root catalog is
inode 255 + *k*; each nested catalog gets the next range when it is loaded;
all names of a hard-link group share the inode of the group's first row; a
mount-point directory has the inode of its row in the parent catalog.  So
inodes are stable within a revision (for one Repository object).

Memory: catalogs are queried per lookup with SQLite; nothing is preloaded.
"""

import bisect
import errno
import os
import stat
import threading
import time

from launcher.errors import CvmfsexecError
from launcher.cvmfs import catalog as catalog_mod
from launcher.cvmfs.catalog import Catalog, CatalogError, ancestor_paths
from launcher.cvmfs.hashes import ContentHash
from launcher.cvmfs.history import History, parse_date
from launcher.cvmfs.objects import ObjectError, ObjectStore

ROOT_INODE_OFFSET = 255
DEFAULT_BLACKLIST = "/etc/cvmfs/blacklist"
OFFLINE_RETRY_TTL = 180
_YES = ("yes", "on", "1", "true")
_MAX_OPEN_CHUNKS = 2


class RepositoryError(CvmfsexecError):
    """The repository cannot be opened (no server and no cache, bad catalog, ...)."""


def _yes(config, name, default=False):
    value = (config.get(name) or "").strip().lower()
    if not value:
        return default
    return value in _YES


def blacklist_paths(fqrn, config):
    """The blacklist files cvmfs2 reads, in its order (MountPoint::CheckBlacklists).

    ``CVMFS_BLACKLIST`` (default /etc/cvmfs/blacklist; set but empty = none),
    then the config repository's ``etc/cvmfs/blacklist`` below
    ``CVMFS_MOUNT_DIR`` unless the config repository is unset or ``fqrn`` itself.
    """
    paths = []
    first = config.get("CVMFS_BLACKLIST")
    first = DEFAULT_BLACKLIST if first is None else first.strip()
    if first:
        paths.append(first)
    mount_dir = (config.get("CVMFS_MOUNT_DIR") or "").strip()
    config_repo = (config.get("CVMFS_CONFIG_REPOSITORY") or "").strip()
    if mount_dir and config_repo and config_repo != fqrn:
        paths.append(os.path.join(mount_dir, config_repo, "etc", "cvmfs", "blacklist"))
    return paths


def read_blacklists(fqrn, config):
    """The text of every blacklist file that exists (one after the other)."""
    texts = []
    for path in blacklist_paths(fqrn, config):
        try:
            with open(path, "rb") as f:
                texts.append(f.read().decode("utf-8", "replace"))
        except (IOError, OSError) as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                continue        # cvmfs2 skips a blacklist that does not exist
            raise RepositoryError("%s: cannot read the blacklist %s: %s"
                                  % (fqrn, path, e.strerror or e),
                                  "fix its permissions, or point CVMFS_BLACKLIST elsewhere")
    return "\n".join(texts)


def _utc(timestamp):
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp or 0))


def normalize_path(path):
    """'/' and '' -> ''; '/a/b/' -> '/a/b'; 'a/b' -> '/a/b'."""
    if isinstance(path, bytes):
        path = path.decode("utf-8", "surrogateescape")
    path = path.strip("/")
    return "/" + path if path else ""


class Entry(object):
    """One directory entry with its attributes mapped to ``struct stat`` (spec 7.10)."""

    __slots__ = ("name", "path", "inode", "mode", "size", "mtime", "mtimens", "uid", "gid",
                 "nlink", "symlink", "content_hash", "chunked", "has_xattrs",
                 "is_nested_root", "hidden", "compressed", "direct_io", "external",
                 "flags", "_mount", "_row")

    def is_dir(self):
        return stat.S_ISDIR(self.mode)

    def is_file(self):
        return stat.S_ISREG(self.mode)

    def is_symlink(self):
        return stat.S_ISLNK(self.mode)

    @property
    def rdev(self):
        return self._row.size if (stat.S_ISCHR(self.mode) or stat.S_ISBLK(self.mode)) else 0

    @property
    def blocks(self):
        return 1 + self.size // 512

    def __repr__(self):
        return "Entry(%r, ino=%d, mode=%o, size=%d)" % (self.path, self.inode, self.mode,
                                                         self.size)


class _Mount(object):
    """A catalog attached at a mount point (repository path)."""

    __slots__ = ("mountpoint", "catalog", "offset", "hash", "root_prefix")

    def __init__(self, mountpoint, catalog, offset, content_hash):
        self.mountpoint = mountpoint
        self.catalog = catalog
        self.offset = offset
        self.hash = content_hash
        # Ordinary nested catalogs: root_prefix == mountpoint.  A bind-mounted
        # root catalog (snapshots) has root_prefix '' (spec 7.8).
        self.root_prefix = catalog.root_prefix

    def to_catalog(self, path):
        return self.root_prefix + path[len(self.mountpoint):]

    def from_catalog(self, cpath):
        return self.mountpoint + cpath[len(self.root_prefix):]


class _Revision(object):
    """The loaded state of one revision: its catalogs and inode allocation."""

    def __init__(self, root_hash, manifest):
        self.root_hash = root_hash
        self.manifest = manifest
        self.mounts = {}
        self.next_inode = ROOT_INODE_OFFSET + 1
        self.revision = 0
        self.ttl = 240


def valid_name(name):
    """False for names no directory may list: '', '.', '..', or with '/' or NUL.

    A signed catalog never holds them; a damaged or hostile one must not make
    a listing point outside its directory (find, tar and rsync follow '..').
    """
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


class Repository(object):
    """Read-only view of one repository revision; see the module docstring.

    ``config`` is a dict of ``CVMFS_*`` strings; ``clock`` returns UNIX time
    (injectable: the whitelist expiry and the TTL use it).  ``downloader`` /
    ``cache`` may be passed in (tests, benchmarks); they are built from
    ``config`` otherwise, and in both cases closed by :meth:`close`.  All
    methods may be called from several threads (the FUSE server's).
    """

    def __init__(self, fqrn, config, clock=time.time, downloader=None, cache=None, log=None):
        self.fqrn = fqrn
        self.config = dict(config)
        self.clock = clock
        self._log = log
        self._lock = threading.RLock()
        if downloader is None:
            from launcher.cvmfs.download import Downloader
            downloader = Downloader(self.config, fqrn, log=log)
        if cache is None:
            from launcher.cvmfs.cache import Cache
            cache = Cache(self.config, fqrn)
        self.downloader = downloader
        self.cache = cache
        self.objects = ObjectStore(downloader, cache)
        self.tag = (self.config.get("CVMFS_REPOSITORY_TAG") or "").strip()
        self.date = (self.config.get("CVMFS_REPOSITORY_DATE") or "").strip()
        pinned = (self.config.get("CVMFS_ROOT_HASH") or "").strip()
        self.fixed = bool(pinned or self.tag or self.date) or \
            ((self.config.get("CVMFS_AUTO_UPDATE") or "").strip().lower() in ("no", "off", "0"))
        self.offline = False
        self.world_readable = _yes(self.config, "CVMFS_WORLD_READABLE")
        self.claim_ownership = _yes(self.config, "CVMFS_CLAIM_OWNERSHIP")
        self.started = clock()
        self._expires = None
        try:
            self._open(pinned)
        except BaseException:
            self._release()
            raise

    def _open(self, pinned):
        fqrn = self.fqrn
        if pinned:
            from launcher.cvmfs.manifest import Manifest
            root_hash = self._parse_hash(pinned, "CVMFS_ROOT_HASH")
            self._state = self._load_revision(root_hash, Manifest.for_root_hash(fqrn, root_hash))
        else:
            manifest = self._fetch_manifest()
            root_hash = manifest.root_hash.with_suffix("C")
            if self.tag or self.date:
                root_hash = self._tagged_root(manifest)
            self._state = self._load_revision(root_hash, manifest)
            self._remember(manifest)
        self._set_expiry(self._state.ttl)

    # --- opening --------------------------------------------------------------
    def _note(self, message):
        if self._log is not None:
            (self._log.info if hasattr(self._log, "info") else self._log)(
                "%s: %s" % (self.fqrn, message))

    def _parse_hash(self, text, what):
        try:
            return ContentHash.parse(text, suffix="C")
        except ValueError:
            raise RepositoryError("%s=%r is not a content hash" % (what, text))

    def _fetch_manifest(self):
        """Download (or take from the cache) and verify manifest + whitelist."""
        from launcher.cvmfs.download import DownloadError
        from launcher.cvmfs import trust
        cached = False
        try:
            manifest_bytes = self.downloader.fetch(".cvmfspublished")
            whitelist_bytes = self.downloader.fetch(".cvmfswhitelist")
        except DownloadError as e:
            manifest_bytes = self.cache.load_meta("manifest")
            whitelist_bytes = self.cache.load_meta("whitelist")
            if not manifest_bytes or not whitelist_bytes:
                raise RepositoryError(
                    "cannot reach any server of %s and no copy in the cache: %s" % (self.fqrn, e),
                    "check CVMFS_SERVER_URL / CVMFS_HTTP_PROXY and the network")
            self._note("servers unreachable (%s); using the cached manifest" % e)
            cached = True
        keys = trust.load_public_keys(self.config)
        self._pubkeys = list(keys)
        # The copy in the cache is the one this cache verified and took the
        # breadcrumb from: only what a server or proxy sends can be a rollback.
        crumb = None if cached else self._breadcrumb()
        if crumb is not None:
            self._refuse_rollback(manifest_bytes, crumb)
        manifest = trust.verify_chain(self.fqrn, manifest_bytes, whitelist_bytes,
                                      self._fetch_certificate, keys, now=self.clock(),
                                      min_timestamp=crumb[1] if crumb else None,
                                      blacklist=read_blacklists(self.fqrn, self.config))
        self._last_raw = (manifest_bytes, whitelist_bytes)
        self.offline = cached
        return manifest

    def _breadcrumb(self):
        """(hash, timestamp, revision) of the newest manifest this cache saw, or None."""
        read = getattr(self.cache, "read_breadcrumb", None)
        return read() if read is not None else None

    def _refuse_rollback(self, manifest_bytes, crumb):
        """Refuse a manifest published before the breadcrumb (spec 10 step 2).

        verify_chain checks the same with ``min_timestamp``; checking first
        lets the message name both revisions.  A malformed manifest is left to
        verify_chain to report.
        """
        from launcher.cvmfs.manifest import Manifest, ManifestError
        from launcher.cvmfs.trust import TrustError
        try:
            offered = Manifest.parse(manifest_bytes)
        except ManifestError:
            return
        _hash, timestamp, revision = crumb
        if (offered.timestamp or 0) >= timestamp:
            return
        path = os.path.join(getattr(self.cache, "dir", "the cache"), "cvmfschecksum." + self.fqrn)
        raise TrustError(self.fqrn, "manifest is older than the one seen before (revision %d "
                         "of %s; the server offers revision %d of %s): refusing a rollback"
                         % (revision, _utc(timestamp), offered.revision, _utc(offered.timestamp)),
                         "a server or proxy serves an outdated .cvmfspublished; if the "
                         "repository really went back, remove %s" % path)

    def _fetch_certificate(self, content_hash):
        try:
            raw = self.objects.fetch_raw(content_hash)
        except ObjectError:
            raw = self.cache.load_meta("certificate")
            if raw is None or not content_hash.matches(raw):
                raise
        self._certificate = raw
        return raw

    def _remember(self, manifest):
        """Keep what a later open needs when every server is down."""
        raw = getattr(self, "_last_raw", None)
        if raw is None or self.offline:
            return
        try:
            if not (self.tag or self.date) and self._newest_seen(manifest):
                self.cache.write_breadcrumb(manifest.root_hash.hex_string(),
                                            manifest.timestamp or 0, manifest.revision or 0)
            self.cache.store_meta("manifest", raw[0])
            self.cache.store_meta("whitelist", raw[1])
            if getattr(self, "_certificate", None):
                self.cache.store_meta("certificate", self._certificate)
        except EnvironmentError as e:
            self._note("cannot store the manifest in the cache: %s" % e)

    def _newest_seen(self, manifest):
        """False if the breadcrumb (of another process sharing the cache) is newer."""
        crumb = self._breadcrumb()
        return crumb is None or \
            (manifest.timestamp or 0, manifest.revision or 0) >= (crumb[1], crumb[2])

    def _tagged_root(self, manifest):
        if manifest.history is None:
            raise RepositoryError("repository %s has no history database, so "
                                  "CVMFS_REPOSITORY_TAG/DATE cannot be used" % self.fqrn)
        try:
            path = self.objects.get_path(manifest.history.with_suffix("H"))
        except ObjectError as e:
            raise RepositoryError("cannot load the history database of %s: %s" % (self.fqrn, e))
        history = History(path, self.fqrn)
        try:
            tag = history.by_name(self.tag) if self.tag else history.by_date(parse_date(self.date))
        finally:
            history.close()
        self._note("using tag %s (revision %d, %s)" % (tag.name, tag.revision, tag.hash))
        return self._parse_hash(tag.hash, "tag %s" % tag.name)

    def _load_revision(self, root_hash, manifest):
        state = _Revision(root_hash, manifest)
        try:
            mount = self._attach(state, "", root_hash)
        except (ObjectError, CatalogError) as e:
            raise RepositoryError("cannot load the root catalog of %s: %s" % (self.fqrn, e))
        state.revision = mount.catalog.revision
        ttl = mount.catalog.ttl
        try:
            max_ttl = int(self.config.get("CVMFS_MAX_TTL") or 0) * 60
        except ValueError:
            max_ttl = 0
        state.ttl = min(ttl, max_ttl) if max_ttl > 0 else ttl
        return state

    def _attach(self, state, mountpoint, content_hash):
        """Load a catalog and attach it at ``mountpoint`` (ObjectError on failure)."""
        path = self.objects.get_path(content_hash)
        try:
            cat = Catalog(path, str(content_hash))
        except CatalogError as e:
            # Only verified bytes enter the cache, so a cached catalog that does
            # not open was damaged on disk: move it aside and fetch it once more.
            quarantine = getattr(self.cache, "quarantine", None)
            if quarantine is None:
                raise ObjectError(str(e), content_hash)
            self._note("cached catalog %s is damaged (%s); downloading it again"
                       % (content_hash, e))
            quarantine(content_hash)
            try:
                cat = Catalog(self.objects.get_path(content_hash), str(content_hash))
            except CatalogError as e:
                raise ObjectError(str(e), content_hash)
        try:
            self.cache.pin(content_hash)
        except (AttributeError, EnvironmentError):
            pass
        mount = _Mount(mountpoint, cat, state.next_inode - 1, content_hash)
        state.next_inode += cat.max_rowid
        state.mounts[mountpoint] = mount
        return mount

    def _set_expiry(self, seconds):
        self._expires = None if self.fixed else self.clock() + seconds

    # --- public properties -----------------------------------------------------
    @property
    def revision(self):
        return self._state.revision

    @property
    def root_hash(self):
        """Hex string of the root catalog (no suffix), as ``user.root_hash`` shows it."""
        return self._state.root_hash.hex_string()

    @property
    def manifest(self):
        return self._state.manifest

    # --- path resolution -------------------------------------------------------
    def _start_mount(self, state, path):
        """Deepest loaded catalog whose mount point is a strict prefix of ``path``."""
        if not path:
            return state.mounts[""]
        for prefix in reversed(ancestor_paths(path)[:-1]):
            m = state.mounts.get(prefix)
            if m is not None:
                return m
        return state.mounts[""]

    def _resolve(self, state, path):
        """(row, mount) for ``path`` or (None, None); attaches nested catalogs."""
        mount = self._start_mount(state, path)
        while True:
            cpath = mount.to_catalog(path)
            row = mount.catalog.lookup(cpath)
            if row is not None:
                return row, mount
            mount = self._descend(state, mount, cpath)
            if mount is None:
                return None, None

    def _descend(self, state, mount, cpath):
        """Attach the child catalog of ``mount`` that holds ``cpath`` (None if none)."""
        found = mount.catalog.nested_for(cpath)
        if found is None:
            return None
        stored, hash_str, _is_bind = found
        mountpoint = mount.from_catalog(stored)
        child = state.mounts.get(mountpoint)
        if child is not None:
            return child if child is not mount else None
        return self._attach(state, mountpoint, ContentHash.parse(hash_str, suffix="C"))

    def _children_mount(self, state, entry):
        """The catalog holding the children of directory ``entry``."""
        mount = entry._mount
        if entry._row.is_mountpoint and entry.path != mount.mountpoint:
            child = state.mounts.get(entry.path)
            if child is None:
                child = self._descend(state, mount, mount.to_catalog(entry.path))
            if child is None:
                raise ObjectError("%s: nested catalog at %s is missing from %s"
                                  % (self.fqrn, entry.path, mount.hash))
            return child
        return mount

    def _entry(self, row, mount, path):
        e = Entry()
        e._mount = mount
        e._row = row
        e.path = path
        e.name = row.name
        e.flags = row.flags
        leader = mount.catalog.hardlink_leader(row) if row.hardlink_group else row.rowid
        e.inode = mount.offset + leader
        mode = row.mode
        if self.world_readable:
            mode |= 0o555 if stat.S_ISDIR(mode) else 0o444
        e.mode = mode
        e.mtime = row.mtime or 0
        e.mtimens = row.mtimens
        if self.claim_ownership:
            e.uid, e.gid = os.getuid(), os.getgid()
        else:
            e.uid, e.gid = row.uid or 0, row.gid or 0
        is_dir = stat.S_ISDIR(mode)
        e.nlink = row.linkcount or (2 if is_dir else 1)
        e.hidden = row.hidden
        e.is_nested_root = bool(row.flags & (catalog_mod.FLAG_DIR_NESTED_MOUNTPOINT |
                                             catalog_mod.FLAG_DIR_NESTED_ROOT |
                                             catalog_mod.FLAG_DIR_BIND_MOUNTPOINT))
        e.chunked = row.chunked
        e.compressed = catalog_mod.is_compressed(row.flags)
        e.direct_io = bool(row.flags & catalog_mod.FLAG_DIRECT_IO)
        e.external = bool(row.flags & catalog_mod.FLAG_FILE_EXTERNAL)
        e.has_xattrs = row.xattr is not None and len(row.xattr) > 0
        e.content_hash = row.content_hash()
        if stat.S_ISLNK(mode):
            e.symlink = row.symlink
            e.size = len(self._expand(row.symlink).encode("utf-8", "surrogateescape"))
        else:
            e.symlink = None
            e.size = 0 if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else (row.size or 0)
        return e

    def _expand(self, target):
        if "$(" not in target:
            return target

        def lookup(name):
            # Configuration parameters are exported to the client's environment.
            value = self.config.get(name)
            return value if value is not None else os.environ.get(name)
        return catalog_mod.expand_variant_symlink(target, lookup)

    # --- the facade ---------------------------------------------------------------
    def lookup(self, path):
        """Entry at ``path`` ('' or '/a/b') or None; hidden entries resolve too."""
        path = normalize_path(path)
        with self._lock:
            state = self._state
            row, mount = self._resolve(state, path)
            if row is None:
                return None
            return self._entry(row, mount, path)

    def listdir(self, path):
        """Children of directory ``path`` (no '.'/'..', hidden ones left out)."""
        path = normalize_path(path)
        with self._lock:
            state = self._state
            row, mount = self._resolve(state, path)
            if row is None:
                raise OSError(errno.ENOENT, "no such entry in %s" % self.fqrn, path)
            if not stat.S_ISDIR(row.mode):
                raise OSError(errno.ENOTDIR, "not a directory", path)
            parent = self._entry(row, mount, path)
            mount = self._children_mount(state, parent)
            rows = mount.catalog.listing(mount.to_catalog(path))
            return [self._entry(r, mount, path + "/" + r.name) for r in rows
                    if not r.hidden and valid_name(r.name)]

    def readlink(self, entry):
        """Target of a symlink, with $(VAR) / $(VAR:-default) expanded."""
        if entry.symlink is None:
            raise OSError(errno.EINVAL, "not a symbolic link", entry.path)
        return self._expand(entry.symlink)

    def xattrs(self, entry):
        """Repository xattrs of an entry: {name: bytes}."""
        return catalog_mod.parse_xattrs(entry._row.xattr) if entry.has_xattrs else {}

    def chunk_list(self, entry):
        """[(hash string, offset, size)] as ``user.chunk_list`` shows them (hex with
        algorithm id, no type suffix); one line with the whole file if unchunked."""
        if not entry.is_file():
            return []
        if not entry.chunked:
            return [(entry.content_hash, 0, entry.size)]
        with self._lock:
            chunks = entry._mount.catalog.chunks(entry._row)
        return [(h[:-1] if h.endswith("P") else h, off, size) for off, size, h in chunks]

    def open(self, entry):
        """A FileHandle for a regular file (data fetched on open / on first read)."""
        if not entry.is_file():
            raise OSError(errno.EISDIR if entry.is_dir() else errno.EINVAL,
                          "not a regular file", entry.path)
        if entry.chunked:
            with self._lock:
                chunks = entry._mount.catalog.chunks(entry._row)
            if not chunks:
                raise ObjectError("%s: chunked file without chunks in catalog %s"
                                  % (entry.path, entry._mount.hash))
            return ChunkedFileHandle(self.objects, entry, chunks)
        if entry.content_hash is None:
            raise ObjectError("%s: regular file without a content hash" % entry.path)
        return FileHandle(self.objects, entry)

    def read_file(self, path):
        """Whole contents of a file (convenience for tests and tools)."""
        entry = self.lookup(path)
        if entry is None:
            raise OSError(errno.ENOENT, "no such entry in %s" % self.fqrn, path)
        handle = self.open(entry)
        try:
            return handle.read(0, entry.size)
        finally:
            handle.close()

    def catalog_counters(self, path=""):
        """(catalog hash, mount point, {counter: self+subtree}) of the catalog hosting path."""
        path = normalize_path(path)
        with self._lock:
            row, mount = self._resolve(self._state, path)
            if mount is None:
                raise OSError(errno.ENOENT, "no such entry in %s" % self.fqrn, path)
            return mount.hash.hex_string(), mount.mountpoint, mount.catalog.counters()

    def repo_counters(self):
        """Whole-repository totals (root catalog self + subtree counters)."""
        with self._lock:
            return self._state.mounts[""].catalog.counters()

    def statfs(self):
        """dict(total_bytes, free_bytes, files) as the reference client fills statfs."""
        c = self.repo_counters()
        files = sum(c.get(k, 0) for k in ("regular", "dir", "symlink", "special"))
        total = free = 0
        limit = getattr(self.cache, "limit_bytes", 0) or 0
        if limit > 0:
            total = int(limit)
            try:
                free = max(0, total - int(self.cache.usage()))
            except (AttributeError, EnvironmentError):
                free = total
        return {"total_bytes": total, "free_bytes": free, "files": files}

    def expires_in(self):
        """Seconds until the next manifest check, or None for a fixed root catalog."""
        if self._expires is None:
            return None
        return max(0, self._expires - self.clock())

    def reload(self):
        """After the TTL: fetch the manifest, switch to a new revision; True if switched."""
        if self.fixed:
            return False
        now = self.clock()
        if self._expires is not None and now < self._expires:
            return False
        with self._lock:
            if self._expires is not None and self.clock() < self._expires:
                return False   # another thread reloaded meanwhile
            try:
                manifest = self._fetch_manifest()
                if self.offline:
                    raise RepositoryError("servers unreachable")
                new_root = manifest.root_hash.with_suffix("C")
                if new_root == self._state.root_hash:
                    self._state.manifest = manifest
                    self._remember(manifest)
                    self._set_expiry(self._state.ttl)
                    return False
                state = self._load_revision(new_root, manifest)
            except CvmfsexecError as e:
                self._note("update check failed, retrying in %d s: %s" % (OFFLINE_RETRY_TTL, e))
                self._expires = self.clock() + OFFLINE_RETRY_TTL
                return False
            self._note("switched from revision %d to %d" % (self._state.revision,
                                                           state.revision))
            old, self._state = self._state, state
            for m in old.mounts.values():
                # entries of the old revision may still read these open catalogs;
                # the pin only protects files from eviction, which no longer matters
                try:
                    self.cache.unpin(m.hash)
                except (AttributeError, EnvironmentError):
                    pass
            self._remember(manifest)
            self._set_expiry(state.ttl)
            return True

    def info(self):
        """Values for the magic extended attributes."""
        state = self._state
        expires = self.expires_in()
        manifest = state.manifest
        return {
            "fqrn": self.fqrn,
            "host": getattr(self.downloader, "current_host", ""),
            "host_list": list(getattr(self.downloader, "hosts", [])),
            "proxy": getattr(self.downloader, "current_proxy", ""),
            "proxy_list": list(getattr(self.downloader, "proxy_list", [])),
            "revision": state.revision,
            "root_hash": state.root_hash.hex_string(),
            "nclg": len(state.mounts),
            "expires": "never (fixed root catalog)" if expires is None
            else str(int(expires // 60)),
            "tag": self.tag,
            "offline": self.offline,
            "timestamp": getattr(manifest, "timestamp", None),
            "ttl": state.ttl,
            "uptime_minutes": int((self.clock() - self.started) // 60),
            "objects": dict(self.objects.stats),
            "pubkeys": list(getattr(self, "_pubkeys", [])),
        }

    def close(self):
        with self._lock:
            state = getattr(self, "_state", None)
            if state is not None:
                for m in state.mounts.values():
                    try:
                        self.cache.unpin(m.hash)
                    except (AttributeError, EnvironmentError):
                        pass
                    m.catalog.close()
                state.mounts = {}
        self._release()

    def _release(self):
        for obj in (self.downloader, self.cache):
            close = getattr(obj, "close", None)
            if close is not None:
                close()


class FileHandle(object):
    """An open unchunked file: the verified object in the cache, read with pread."""

    def __init__(self, objects, entry):
        self.entry = entry
        self.size = entry.size
        path = objects.get_path(ContentHash.parse(entry.content_hash), entry.compressed)
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise ObjectError("%s: cannot open cached object %s: %s"
                              % (entry.path, entry.content_hash, e.strerror))
        if os.fstat(self._fd).st_size != self.size:
            os.close(self._fd)
            raise ObjectError("%s: object %s has %d bytes, the catalog says %d"
                              % (entry.path, entry.content_hash,
                                 os.stat(path).st_size, self.size))

    def read(self, offset, size):
        if offset >= self.size or size <= 0:
            return b""
        return os.pread(self._fd, min(size, self.size - offset), offset)

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ChunkedFileHandle(object):
    """An open chunked file: chunks fetched on first touch, a few kept open.

    No read-ahead: a window of two chunks fetched in threads gave no measurable
    gain against a local server on two cores (bench_repository.py) and costs up
    to 16 MiB of memory per chunk in flight.
    """

    def __init__(self, objects, entry, chunks):
        self.entry = entry
        self.size = entry.size
        self._objects = objects
        self._chunks = chunks                   # [(offset, size, hash string)]
        self._offsets = [c[0] for c in chunks]
        self._fds = {}                          # index -> fd, at most _MAX_OPEN_CHUNKS
        self._order = []
        self._lock = threading.Lock()

    def _chunk_fd(self, index):
        fd = self._fds.get(index)
        if fd is not None:
            return fd
        off, size, hash_str = self._chunks[index]
        path = self._objects.get_path(ContentHash.parse(hash_str), self.entry.compressed)
        fd = os.open(path, os.O_RDONLY)
        if os.fstat(fd).st_size != size:
            os.close(fd)
            raise ObjectError("%s: chunk %s at offset %d has the wrong size"
                              % (self.entry.path, hash_str, off))
        self._fds[index] = fd
        self._order.append(index)
        while len(self._order) > _MAX_OPEN_CHUNKS:
            os.close(self._fds.pop(self._order.pop(0)))
        return fd

    def read(self, offset, size):
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        out = []
        with self._lock:
            i = max(0, bisect.bisect_right(self._offsets, offset) - 1)
            while offset < end and i < len(self._chunks):
                coff, csize, _h = self._chunks[i]
                n = min(end, coff + csize) - offset
                data = os.pread(self._chunk_fd(i), n, offset - coff)
                if len(data) != n:
                    raise ObjectError("%s: short read in chunk at offset %d"
                                      % (self.entry.path, coff))
                out.append(data)
                offset += n
                i += 1
        return b"".join(out)

    def close(self):
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds = {}
            self._order = []
