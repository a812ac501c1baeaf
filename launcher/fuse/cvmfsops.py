"""FUSE operations over a :class:`launcher.cvmfs.repository.Repository`.

Node ids are the repository's inode numbers, except that the repository's root
inode and FUSE_ROOT_ID (1) swap places.  The node table (node id -> path and
entry) holds exactly the nodes the kernel knows about: the server links a node
when its lookup count leaves zero and forgets it when the count returns to
zero.  It keeps only the path of each node (memory: a 20,000-file tree stays
well under the 60 MB target); entries are looked up again by path when needed,
with a small LRU of recent entries so that open + read + getxattr of one file
costs one catalog query.  A revision switch empties that LRU.

Magic extended attributes follow cvmfs (spec: client configuration, section 8):
listed on the root only (``CVMFS_MAGIC_XATTRS_VISIBILITY=rootonly``), each name
once; unknown names fall through to the entry's own xattrs, else ENODATA.
"""

import collections
import errno
import itertools
import os
import stat
import threading
import time

from launcher import VERSION
from launcher.errors import CvmfsexecError
from launcher.fuse import protocol as P
from launcher.fuse.server import Attr, FuseError, Operations


GENERATION_SHIFT = 40      # repository inodes stay far below 2**40


def _on(value):
    return str(value).strip().lower() in ("yes", "on", "1", "true")


class CvmfsOperations(Operations):

    def __init__(self, repo, config=None, log=None, clock=time.time):
        config = config or {}
        self.repo = repo
        self.config = config
        self.log = log or (lambda msg: None)
        self.clock = clock
        self.started = clock()
        self.generation = 0
        self._lock = threading.Lock()
        self._handles = {}
        self._fh = itertools.count(1)
        self._nodes = {}                   # nodeid -> path
        self._recent = collections.OrderedDict()   # nodeid -> entry (LRU)
        self._recent_max = 512
        self.nioerr = 0
        self.claim = _on(config.get("CVMFS_CLAIM_OWNERSHIP", "no"))
        self.uid, self.gid = os.getuid(), os.getgid()
        vis = config.get("CVMFS_MAGIC_XATTRS_VISIBILITY", "rootonly").lower()
        hide = config.get("CVMFS_HIDE_MAGIC_XATTRS", "")
        if hide:
            vis = "never" if _on(hide) else "always"
        self.xattr_visibility = vis
        root = self._call(repo.lookup, "")
        if root is None:
            raise CvmfsexecError("repository %s has no root directory" % repo.fqrn)
        self._root_inode = root.inode
        self._nodes[P.ROOT_ID] = root.path

    # --- helpers -------------------------------------------------------------
    def _call(self, func, *args):
        """Run a repository call; its failures become FuseError (EIO unless they say otherwise)."""
        try:
            return func(*args)
        except FuseError:
            raise
        except (OSError, IOError) as e:
            self.nioerr += 1
            self.log("I/O error: %s" % (e,))
            raise FuseError(e.errno or errno.EIO)
        except CvmfsexecError as e:
            self.nioerr += 1
            self.log("error: %s" % (e,))
            raise FuseError(getattr(e, "errno", None) or errno.EIO)

    def nodeid(self, inode):
        """Node id of a repository inode in the current revision.

        Inode numbers are only stable within a revision, so, like cvmfs's inode
        generation, each revision switch moves new node ids into a fresh range:
        a node id the kernel still holds from before keeps meaning its old path.
        """
        if inode == self._root_inode:
            return P.ROOT_ID
        if inode == P.ROOT_ID:
            inode = self._root_inode
        return inode + (self.generation << GENERATION_SHIFT)

    def _attr(self, entry, path):
        uid, gid = (self.uid, self.gid) if self.claim else (entry.uid, entry.gid)
        return Attr(self.nodeid(entry.inode), entry.mode, entry.size, entry.mtime, uid, gid,
                    entry.nlink, path, getattr(entry, "rdev", 0) or 0,
                    getattr(entry, "blocks", None))

    def _entry(self, nodeid):
        """(path, entry) of a node the kernel knows; re-resolved after a revision switch."""
        path = self._nodes.get(nodeid)
        if path is None:
            raise FuseError(errno.ESTALE)
        recent = self._recent
        with self._lock:
            entry = recent.get(nodeid)
            if entry is not None:
                recent.move_to_end(nodeid)
                return path, entry
        entry = self._call(self.repo.lookup, path)
        if entry is None:
            raise FuseError(errno.ENOENT)      # gone in a newer revision
        self._remember(nodeid, entry)
        return path, entry

    def new_generation(self):
        """Called after the repository switched to a new revision."""
        with self._lock:
            self.generation += 1
            self._recent.clear()
            root = self.repo.lookup("")
            self._root_inode = root.inode

    # --- node table (called by the server under its lock) --------------------
    def link(self, attr):
        self._nodes[attr.ino] = attr.ref

    def forget(self, nodeid):
        self._nodes.pop(nodeid, None)
        with self._lock:
            self._recent.pop(nodeid, None)

    def _remember(self, nodeid, entry):
        with self._lock:
            self._recent[nodeid] = entry
            self._recent.move_to_end(nodeid)
            if len(self._recent) > self._recent_max:
                self._recent.popitem(last=False)

    def node_count(self):
        return len(self._nodes)

    # --- operations ----------------------------------------------------------
    def lookup(self, parent, name):
        ppath = self._entry(parent)[0]
        try:
            sname = name.decode("utf-8", "surrogateescape")
        except UnicodeDecodeError:
            return None
        if sname == ".":
            path = ppath
        elif sname == "..":
            path = ppath.rsplit("/", 1)[0] if ppath else ""
        else:
            path = ppath + "/" + sname
        entry = self._call(self.repo.lookup, path)
        if entry is None:
            return None
        a = self._attr(entry, path)
        self._remember(a.ino, entry)      # open/getxattr usually follow
        return a

    def getattr(self, nodeid):
        path, entry = self._entry(nodeid)
        a = self._attr(entry, path)
        a.ino = nodeid          # the kernel's inode keeps its number across revisions
        return a

    def readlink(self, nodeid):
        entry = self._entry(nodeid)[1]
        if entry.symlink is None:
            raise FuseError(errno.EINVAL)
        return os.fsencode(self._call(self.repo.readlink, entry))

    def open(self, nodeid, flags):
        entry = self._entry(nodeid)[1]
        if stat.S_ISDIR(entry.mode):
            raise FuseError(errno.EISDIR)
        handle = self._call(self.repo.open, entry)
        fh = next(self._fh)
        self._handles[fh] = handle
        # Content is addressed by hash and immutable: keep pages across opens.
        return fh, P.FOPEN_KEEP_CACHE

    def read(self, fh, offset, size):
        handle = self._handles.get(fh)
        if handle is None:
            raise FuseError(errno.EBADF)
        return self._call(handle.read, offset, size)

    def release(self, fh):
        handle = self._handles.pop(fh, None)
        if handle is not None:
            try:
                handle.close()
            except (OSError, IOError):
                pass

    def listdir(self, nodeid):
        path, entry = self._entry(nodeid)
        if not stat.S_ISDIR(entry.mode):
            raise FuseError(errno.ENOTDIR)
        out = []
        for child in self._call(self.repo.listdir, path):
            cpath = path + "/" + child.name
            out.append((os.fsencode(child.name), self._attr(child, cpath)))
        return out

    def statfs(self):
        try:
            st = self.repo.statfs()
        except Exception:
            st = {}
        total = int(st.get("total_bytes", 0))
        free = int(st.get("free_bytes", 0))
        return (total // 512, free // 512, free // 512, int(st.get("files", 0)),
                int(st.get("free_files", 0)), 512, 255, 512)

    # --- extended attributes -------------------------------------------------
    def listxattr(self, nodeid):
        path, entry = self._entry(nodeid)
        names = []
        if self.xattr_visibility == "always" or (
                self.xattr_visibility == "rootonly" and nodeid == P.ROOT_ID):
            for n in sorted(GLOBAL_XATTRS):
                if GLOBAL_XATTRS[n](self, entry) is not None:
                    names.append(n.encode())
        if entry.has_xattrs:
            for n in sorted(self._call(self.repo.xattrs, entry)):
                b = n.encode() if not isinstance(n, bytes) else n
                if b not in names:
                    names.append(b)
        return names

    def getxattr(self, nodeid, name):
        if not name.startswith((b"user.", b"xfsroot.")):
            # security.*, system.posix_acl_* (asked on every `ls -l`): never ours
            raise FuseError(errno.ENODATA)
        path, entry = self._entry(nodeid)
        sname = name.decode("utf-8", "replace")
        func = GLOBAL_XATTRS.get(sname) or FILE_XATTRS.get(sname)
        if func is not None:
            value = func(self, entry)
            if value is not None:
                return value if isinstance(value, bytes) else str(value).encode()
        if entry.has_xattrs:
            own = self._call(self.repo.xattrs, entry)
            if sname in own:
                return own[sname]
        raise FuseError(errno.ENODATA)

    def info(self):
        try:
            return self.repo.info()
        except Exception:
            return {}

    def open_count(self):
        return len(self._handles)


def _info(key, default=""):
    def get(ops, entry):
        value = ops.info().get(key)
        return default if value is None else value
    return get


def _root_hash(ops, entry):
    return str(ops.info().get("root_hash") or ops.repo.root_hash)


def _revision(ops, entry):
    return str(ops.info().get("revision", ops.repo.revision))


def _uptime(ops, entry):
    return str(int((ops.clock() - ops.started) // 60))


def _ndownload(ops, entry):
    stats = ops.info().get("objects")
    if isinstance(stats, dict):
        for key in ("downloads", "ndownload", "fetched", "misses"):
            if key in stats:
                return str(stats[key])
    return "0"


def _expires(ops, entry):
    value = ops.info().get("expires")
    if value is None:
        return "never (fixed root catalog)" if ops.config.get("CVMFS_ROOT_HASH") else ""
    return value


def _pid(ops, entry):
    return str(os.getpid())


def _usedfd(ops, entry):
    try:
        return str(len(os.listdir("/proc/self/fd")))
    except OSError:
        return "0"


def _maxfd(ops, entry):
    import resource
    return str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _hash(ops, entry):
    if not stat.S_ISREG(entry.mode) or not entry.content_hash:
        return None
    return entry.content_hash


def _chunk_list_of(ops, entry):
    chunk_list = getattr(ops.repo, "chunk_list", None)
    if chunk_list is None:
        return [(entry.content_hash, 0, entry.size)] if entry.content_hash else []
    return ops._call(chunk_list, entry)


def _chunks(ops, entry):
    if not stat.S_ISREG(entry.mode):
        return None
    if not entry.chunked:
        return "1"
    return str(len(_chunk_list_of(ops, entry)))


def _chunk_list(ops, entry):
    if not stat.S_ISREG(entry.mode):
        return None
    lines = ["hash,offset,size"]
    for h, off, size in _chunk_list_of(ops, entry):
        lines.append("%s,%d,%d" % (h, off, size))
    return "".join(line + "\n" for line in lines)


def _compression(ops, entry):
    if not stat.S_ISREG(entry.mode):
        return None
    return "zlib" if getattr(entry, "compressed", True) else "none"


def _catalog_counters(ops, entry):
    func = getattr(ops.repo, "catalog_counters", None)
    if func is None:
        return None
    chash, mountpoint, counters = ops._call(func, entry.path)
    return ("catalog_hash: %s\ncatalog_mountpoint: %s\n" % (chash, mountpoint)
            + "".join("%s,%s\n" % (k, counters[k]) for k in sorted(counters)))


def _repo_counters(ops, entry):
    func = getattr(ops.repo, "repo_counters", None)
    if func is None:
        return None
    counters = ops._call(func)
    return "".join("%s,%s\n" % (k, counters[k]) for k in sorted(counters))


def _rawlink(ops, entry):
    return entry.symlink


def _flag(name):
    def get(ops, entry):
        if not stat.S_ISREG(entry.mode):
            return None
        return "1" if getattr(entry, name, False) else "0"
    return get


def _tag(ops, entry):
    return ops.config.get("CVMFS_REPOSITORY_TAG", "")


def _timeout(name, default):
    def get(ops, entry):
        return ops.config.get(name) or default
    return get


def _proxy_list(ops, entry):
    value = ops.info().get("proxy_list")
    if value is None:
        value = [ops.info().get("proxy") or "DIRECT"]
    if isinstance(value, (list, tuple)):
        value = "".join(str(v) + "\n" for v in value)
    return value


def _host_list(ops, entry):
    value = ops.info().get("host_list")
    if value is None:
        value = [ops.info().get("host", "")]
    if isinstance(value, (list, tuple)):
        value = ";".join(value)
    return value


def _pubkeys(ops, entry):
    value = ops.info().get("pubkeys")
    if isinstance(value, (list, tuple)):
        value = "".join(v.decode() if isinstance(v, bytes) else v for v in value)
    return value


# Listed on the root (rootonly) and answerable everywhere.
GLOBAL_XATTRS = {
    "user.fqrn": lambda ops, e: ops.repo.fqrn,
    "user.revision": _revision,
    "user.root_hash": _root_hash,
    "user.host": _info("host"),
    "user.host_list": _host_list,
    "user.proxy": _info("proxy", "DIRECT"),
    "user.proxy_list": _proxy_list,
    "user.pid": _pid,
    "user.version": lambda ops, e: VERSION,
    "user.nclg": _info("nclg", "1"),
    "user.nopen": lambda ops, e: str(ops.open_count()),
    "user.nioerr": lambda ops, e: str(ops.nioerr),
    "user.ndownload": _ndownload,
    "user.inode_max": _info("inode_max", "0"),
    "user.uptime": _uptime,
    "user.expires": _expires,
    "user.tag": _tag,
    "user.timeout": _timeout("CVMFS_TIMEOUT", "5"),
    "user.timeout_direct": _timeout("CVMFS_TIMEOUT_DIRECT", "5"),
    "user.maxfd": _maxfd,
    "user.usedfd": _usedfd,
    "user.pubkeys": _pubkeys,
    "user.repo_counters": _repo_counters,
    "user.catalog_counters": _catalog_counters,
}

# Answerable, not listed.
FILE_XATTRS = {
    "user.hash": _hash,
    "user.chunks": _chunks,
    "user.chunk_list": _chunk_list,
    "user.compression": _compression,
    "user.direct_io": _flag("direct_io"),
    "user.external_file": _flag("external"),
    "user.rawlink": _rawlink,
    "xfsroot.rawlink": _rawlink,
}
