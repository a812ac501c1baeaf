"""Request dispatch for a read-only FUSE file system.

``Operations`` is the file-system interface: every handler defaults to ENOSYS,
and handlers signal failure only by raising ``FuseError(errno)`` -- the one
exception allowed to cross the dispatcher.  Anything else escaping a handler is
a bug: it is logged with its traceback and the request gets EIO, so one bad
request never kills a worker thread.

``Server`` owns the protocol bookkeeping a file system should not care about:
lookup counts (LOOKUP and every READDIRPLUS entry count one; FORGET and
BATCH_FORGET subtract), directory snapshots taken at OPENDIR and served in
slices, and the worker threads.  Each worker reads its own cloned descriptor
and handles what it read, so a request stuck on a slow download only holds its
own thread; when every worker is busy another one is started (up to
``max_threads``).

Opening files: where the kernel offers FUSE_NO_OPEN_SUPPORT the server answers
the first OPEN with ENOSYS, after which the kernel stops sending OPEN, FLUSH
and RELEASE for files and keeps their pages cached (FOPEN_KEEP_CACHE is its
default then).  READs then carry fh 0 and the server keeps a small LRU of open
handles per node (closed when evicted or when the node is forgotten).  This
halves the requests of an open/read/close of a cached file.  Likewise with
FUSE_NO_OPENDIR_SUPPORT: OPENDIR gets ENOSYS once, the kernel caches listings
(FOPEN_CACHE_DIR) and READDIR carries fh 0; listings are then snapshots kept
per directory node in a small LRU (a revision is immutable, so offsets stay
consistent).
"""

import collections

import errno
import os
import sys
import threading
import traceback

from launcher.fuse import protocol as P


class FuseError(Exception):
    """Answer the current request with ``-errno``."""

    def __init__(self, errno_):
        Exception.__init__(self, errno_)
        self.errno = errno_

    def __str__(self):
        return "FuseError(%s)" % errno.errorcode.get(self.errno, self.errno)


class Attr(object):
    """Attributes of one node, as the kernel sees them (``ino`` is the node id)."""

    __slots__ = ("ino", "mode", "size", "mtime", "uid", "gid", "nlink", "ref", "rdev",
                 "blocks")

    def __init__(self, ino, mode, size, mtime, uid, gid, nlink, ref=None, rdev=0, blocks=None):
        self.ino = ino
        self.mode = mode
        self.size = size
        self.mtime = mtime
        self.uid = uid
        self.gid = gid
        self.nlink = nlink
        self.ref = ref          # the file system's own record, handed back to Operations.link
        self.rdev = rdev
        self.blocks = (size + 511) >> 9 if blocks is None else blocks


class Operations(object):
    """A read-only file system. Node ids are chosen by the implementation; 1 is the root."""

    def lookup(self, parent, name):
        """-> Attr of ``name`` (bytes) in directory ``parent``, or None if it does not exist."""
        raise FuseError(errno.ENOSYS)

    def link(self, attr):
        """The kernel learned node ``attr.ino`` (its lookup count left zero)."""

    def forget(self, nodeid):
        """The kernel dropped its last reference to ``nodeid`` (count back to zero)."""

    def getattr(self, nodeid):
        raise FuseError(errno.ENOSYS)

    def readlink(self, nodeid):
        """-> bytes"""
        raise FuseError(errno.ENOSYS)

    def open(self, nodeid, flags):
        """-> (fh, fopen_flags)"""
        raise FuseError(errno.ENOSYS)

    def read(self, fh, offset, size):
        """-> bytes, at most ``size``; shorter means end of file."""
        raise FuseError(errno.ENOSYS)

    def release(self, fh):
        pass

    def listdir(self, nodeid):
        """-> [(name bytes, Attr)], without '.' and '..' (a snapshot taken at opendir)."""
        raise FuseError(errno.ENOSYS)

    def parent(self, nodeid):
        """-> node id of the parent directory (for '..'), or 0 if unknown."""
        return 0

    def statfs(self):
        """-> (blocks, bfree, bavail, files, ffree, bsize, namelen, frsize)"""
        return (0, 0, 0, 0, 0, 512, 255, 512)

    def getxattr(self, nodeid, name):
        """-> bytes; FuseError(ENODATA) if absent."""
        raise FuseError(errno.ENODATA)

    def listxattr(self, nodeid):
        """-> [name bytes]"""
        return []

    def access(self, nodeid, mask):
        pass


class Server(object):
    """Serve ``ops`` on an initialised ``Channel``; ``run()`` returns once unmounted."""

    def __init__(self, ops, channel, entry_timeout=60.0, attr_timeout=60.0,
                 negative_timeout=60.0, min_threads=4, max_threads=32, log=None,
                 no_open=True, node_handles=256, trace=None):
        self.ops = ops
        self.channel = channel
        self.entry_timeout = entry_timeout
        self.attr_timeout = attr_timeout
        self.negative_timeout = negative_timeout
        self.min_threads = min_threads
        self.max_threads = max_threads
        self.log = log or (lambda msg: sys.stderr.write(msg + "\n"))
        self._lock = threading.Lock()
        self._lookups = {}          # nodeid -> [count, parent, name]
        self._dirs = {}             # dir handle -> [(name, Attr or None, dtype)]
        self._next_dh = 1
        self._threads = []
        self._idle = 0
        self._channels = [channel]
        self._done = threading.Event()
        self.no_open = no_open and bool(channel.flags & P.NO_OPEN_SUPPORT)
        self._node_fh = collections.OrderedDict()   # nodeid -> fh (no-open mode)
        self._node_handles = node_handles
        self.no_opendir = no_open and bool(channel.flags & P.NO_OPENDIR_SUPPORT)
        self._node_dirs = collections.OrderedDict()  # nodeid -> listing (no-opendir mode)
        self._node_dirs_max = 16
        self._set_timeouts()
        self._handlers = {
            P.LOOKUP: self._lookup, P.FORGET: self._forget, P.BATCH_FORGET: self._batch_forget,
            P.GETATTR: self._getattr, P.READLINK: self._readlink, P.OPEN: self._open,
            P.READ: self._read, P.RELEASE: self._release, P.FLUSH: self._flush,
            P.OPENDIR: self._opendir, P.READDIR: self._readdir,
            P.READDIRPLUS: self._readdirplus, P.RELEASEDIR: self._releasedir,
            P.STATFS: self._statfs, P.GETXATTR: self._getxattr, P.LISTXATTR: self._listxattr,
            P.ACCESS: self._access, P.INTERRUPT: self._interrupt, P.DESTROY: self._empty,
            P.INIT: self._reinit,
        }
        self.trace = trace      # callable(str) for every request (debug mode), or None

    def _set_timeouts(self):
        def split(t):
            return int(t), int((t - int(t)) * 1e9)
        self._entry_s, self._entry_ns = split(self.entry_timeout)
        self._attr_s, self._attr_ns = split(self.attr_timeout)
        neg_s, neg_ns = split(self.negative_timeout)
        self._negative_entry = P.ENTRY_OUT.pack(0, 0, neg_s, 0, neg_ns, 0,
                                                *([0] * 16))

    # --- packing -------------------------------------------------------------
    def _attr_fields(self, a):
        mt = a.mtime
        sec = int(mt)
        nsec = int((mt - sec) * 1e9) if mt != sec else 0
        return (a.ino, a.size, a.blocks, sec, sec, sec, nsec, nsec, nsec,
                a.mode, a.nlink, a.uid, a.gid, a.rdev, 4096, 0)

    def _entry_out(self, a):
        return P.ENTRY_OUT.pack(a.ino, 0, self._entry_s, self._attr_s, self._entry_ns,
                                self._attr_ns, *self._attr_fields(a))

    def _count_lookup(self, a, parent, name):
        with self._lock:
            rec = self._lookups.get(a.ino)
            if rec is None:
                self._lookups[a.ino] = [1, parent, name]
                self.ops.link(a)
            else:
                rec[0] += 1
                rec[1] = parent
                rec[2] = name

    # --- handlers: (channel, unique, nodeid, header uid, view of args) ------
    def _lookup(self, ch, unique, nodeid, uid, args):
        name = bytes(args[:-1]) if args[-1:] == b"\0" else bytes(args)
        a = self.ops.lookup(nodeid, name)
        if a is None:
            ch.reply(unique, self._negative_entry)
            return
        self._count_lookup(a, nodeid, name)
        ch.reply(unique, self._entry_out(a))

    def _forget(self, ch, unique, nodeid, uid, args):
        self._drop(nodeid, P.FORGET_IN.unpack_from(args)[0])

    def _batch_forget(self, ch, unique, nodeid, uid, args):
        count = P.BATCH_FORGET_IN.unpack_from(args)[0]
        off = P.BATCH_FORGET_IN.size
        for _ in range(count):
            nid, n = P.FORGET_ONE.unpack_from(args, off)
            off += P.FORGET_ONE.size
            self._drop(nid, n)

    def _drop(self, nodeid, n):
        with self._lock:
            rec = self._lookups.get(nodeid)
            if rec is None:
                return
            rec[0] -= n
            if rec[0] > 0:
                return
            del self._lookups[nodeid]
            fh = self._node_fh.pop(nodeid, None)
            if nodeid != P.ROOT_ID:
                self.ops.forget(nodeid)
        if fh is not None:
            self.ops.release(fh)

    def _getattr(self, ch, unique, nodeid, uid, args):
        a = self.ops.getattr(nodeid)
        ch.reply(unique, P.ATTR_OUT.pack(self._attr_s, self._attr_ns, 0, *self._attr_fields(a)))

    def _readlink(self, ch, unique, nodeid, uid, args):
        ch.reply(unique, self.ops.readlink(nodeid))

    def _open(self, ch, unique, nodeid, uid, args):
        flags = P.OPEN_IN.unpack_from(args)[0]
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise FuseError(errno.EROFS)
        if self.no_open:
            self.ops.getattr(nodeid)         # still fail for stale nodes
            raise FuseError(errno.ENOSYS)    # the kernel stops sending OPEN/RELEASE
        fh, fopen = self.ops.open(nodeid, flags)
        ch.reply(unique, P.OPEN_OUT.pack(fh, fopen, 0))

    def _handle_of(self, nodeid):
        """The cached open handle of a node (no-open mode), opened on first use."""
        with self._lock:
            fh = self._node_fh.get(nodeid)
            if fh is not None:
                self._node_fh.move_to_end(nodeid)
                return fh
        fh = self.ops.open(nodeid, os.O_RDONLY)[0]
        evicted = []
        with self._lock:
            other = self._node_fh.get(nodeid)
            if other is not None:        # another thread opened it meanwhile
                evicted.append(fh)
                fh = other
            else:
                self._node_fh[nodeid] = fh
                while len(self._node_fh) > self._node_handles:
                    evicted.append(self._node_fh.popitem(last=False)[1])
        for old in evicted:
            self.ops.release(old)
        return fh

    def _read(self, ch, unique, nodeid, uid, args):
        fh, offset, size = P.READ_IN.unpack_from(args)[:3]
        if fh == 0:
            fh = self._handle_of(nodeid)
        data = self.ops.read(fh, offset, size)
        if len(data) > size:   # the kernel would reject the whole reply
            data = data[:size]
        ch.reply(unique, data)

    def _release(self, ch, unique, nodeid, uid, args):
        self.ops.release(P.RELEASE_IN.unpack_from(args)[0])
        ch.reply(unique)

    def _empty(self, ch, unique, nodeid, uid, args):
        ch.reply(unique)

    def _flush(self, ch, unique, nodeid, uid, args):
        # Nothing to flush on a read-only file system; ENOSYS makes the kernel
        # stop sending FLUSH on every close() for the rest of the connection.
        raise FuseError(errno.ENOSYS)

    def _opendir(self, ch, unique, nodeid, uid, args):
        if self.no_opendir:
            self.ops.getattr(nodeid)
            raise FuseError(errno.ENOSYS)   # the kernel stops sending OPENDIR/RELEASEDIR
        entries = self._snapshot(nodeid)
        with self._lock:
            dh = self._next_dh
            self._next_dh += 1
            self._dirs[dh] = (nodeid, entries)
        ch.reply(unique, P.OPEN_OUT.pack(dh, P.FOPEN_KEEP_CACHE | P.FOPEN_CACHE_DIR, 0))

    def _snapshot(self, nodeid):
        listing = self.ops.listdir(nodeid)
        entries = [(b".", None, 4)]
        if nodeid != P.ROOT_ID:
            entries.append((b"..", None, 4))
        for name, a in listing:
            entries.append((name, a, a.mode >> 12))
        return entries

    def _node_listing(self, nodeid):
        with self._lock:
            entries = self._node_dirs.get(nodeid)
            if entries is not None:
                self._node_dirs.move_to_end(nodeid)
                return nodeid, entries
        entries = self._snapshot(nodeid)
        with self._lock:
            self._node_dirs[nodeid] = entries
            while len(self._node_dirs) > self._node_dirs_max:
                self._node_dirs.popitem(last=False)
        return nodeid, entries

    def _dir_slice(self, nodeid, args):
        dh, offset, size = P.READ_IN.unpack_from(args)[:3]
        if dh == 0:
            dirnode, entries = self._node_listing(nodeid)
            return dirnode, entries, offset, size
        rec = self._dirs.get(dh)
        if rec is None:
            raise FuseError(errno.EBADF)
        return rec[0], rec[1], offset, size

    def _readdir(self, ch, unique, nodeid, uid, args):
        dirnode, entries, offset, size = self._dir_slice(nodeid, args)
        parts = []
        used = 0
        i = offset
        while i < len(entries):
            name, a, dtype = entries[i]
            rec = P.dirent(a.ino if a else dirnode, i + 1, name, dtype)
            if used + len(rec) > size:
                break
            parts.append(rec)
            used += len(rec)
            i += 1
        ch.reply(unique, b"".join(parts))

    def _readdirplus(self, ch, unique, nodeid, uid, args):
        dirnode, entries, offset, size = self._dir_slice(nodeid, args)
        parts = []
        used = 0
        i = offset
        while i < len(entries):
            name, a, dtype = entries[i]
            need = P.dirent_size(len(name), True)
            if used + need > size:
                break
            if a is None:    # '.' and '..': nodeid 0, the kernel does not link them
                rec = P.direntplus(P.ZERO_ENTRY, dirnode, i + 1, name, dtype)
            else:
                self._count_lookup(a, dirnode, name)
                rec = P.direntplus(self._entry_out(a), a.ino, i + 1, name, dtype)
            parts.append(rec)
            used += need
            i += 1
        ch.reply(unique, b"".join(parts))

    def _releasedir(self, ch, unique, nodeid, uid, args):
        with self._lock:
            self._dirs.pop(P.RELEASE_IN.unpack_from(args)[0], None)
        ch.reply(unique)

    def _statfs(self, ch, unique, nodeid, uid, args):
        ch.reply(unique, P.STATFS_OUT.pack(*(tuple(self.ops.statfs()) + (0,))))

    def _xattr_reply(self, ch, unique, args, value):
        size = P.GETXATTR_IN.unpack_from(args)[0]
        if size == 0:
            ch.reply(unique, P.GETXATTR_OUT.pack(len(value), 0))
        elif len(value) > size:
            raise FuseError(errno.ERANGE)
        else:
            ch.reply(unique, value)

    def _getxattr(self, ch, unique, nodeid, uid, args):
        raw = bytes(args[P.GETXATTR_IN.size:])
        name = raw.split(b"\0", 1)[0]
        self._xattr_reply(ch, unique, args, self.ops.getxattr(nodeid, name))

    def _listxattr(self, ch, unique, nodeid, uid, args):
        names = self.ops.listxattr(nodeid)
        self._xattr_reply(ch, unique, args, b"".join(n + b"\0" for n in names))

    def _access(self, ch, unique, nodeid, uid, args):
        mask = P.OPEN_IN.unpack_from(args)[0]
        if mask & os.W_OK:
            raise FuseError(errno.EROFS)
        self.ops.access(nodeid, mask)
        ch.reply(unique)

    def _interrupt(self, ch, unique, nodeid, uid, args):
        # Requests run to completion (downloads have their own timeouts); no reply.
        pass

    def _reinit(self, ch, unique, nodeid, uid, args):
        raise FuseError(errno.EPROTO)

    # --- the loop ------------------------------------------------------------
    def handle(self, ch, n):
        """Dispatch the request of length ``n`` in ``ch.buf``."""
        view = ch.view
        length, opcode, unique, nodeid, uid = P.IN_HEADER.unpack_from(ch.buf)[:5]
        args = view[P.IN_HEADER.size:length]
        handler = self._handlers.get(opcode)
        if self.trace is not None:
            self.trace("fuse: opcode %d unique %d node %d (%d bytes)"
                       % (opcode, unique, nodeid, length))
        try:
            if handler is None:
                raise FuseError(errno.EROFS if opcode in P.WRITE_OPS else errno.ENOSYS)
            handler(ch, unique, nodeid, uid, args)
        except FuseError as e:
            if opcode not in (P.FORGET, P.BATCH_FORGET, P.INTERRUPT):
                ch.reply_error(unique, e.errno)
        except Exception:
            self.log("internal error (a bug) handling FUSE opcode %d:\n%s"
                     % (opcode, traceback.format_exc()))
            if opcode not in (P.FORGET, P.BATCH_FORGET, P.INTERRUPT):
                ch.reply_error(unique, errno.EIO)

    def _worker(self, ch):
        try:
            while True:
                with self._lock:
                    self._idle += 1
                n = ch.read()
                with self._lock:
                    self._idle -= 1
                    spawn = self._idle == 0 and len(self._threads) < self.max_threads
                if n == 0:
                    break
                if spawn:
                    self._spawn()
                self.handle(ch, n)
        except Exception:
            self.log("FUSE worker failed:\n%s" % traceback.format_exc())
        finally:
            with self._lock:
                self._threads.remove(threading.current_thread())
                last = not self._threads
            if last:
                self._done.set()

    def _spawn(self):
        ch = self.channel.clone() if self._threads else self.channel
        if ch is None:
            ch = self.channel    # no clones: several readers share one descriptor
        elif ch is not self.channel:
            with self._lock:
                self._channels.append(ch)
        t = threading.Thread(target=self._worker, args=(ch,), name="fuse-worker")
        t.daemon = True
        with self._lock:
            self._threads.append(t)
        t.start()

    def start(self):
        for _ in range(self.min_threads):
            self._spawn()

    def wait(self, timeout=None):
        """True once every worker saw the end of the connection (unmount)."""
        return self._done.wait(timeout)

    def run(self, stop=None):
        """Serve until unmounted, or until the ``stop`` event is set (then the
        connection is abandoned: users see ENOTCONN until someone unmounts)."""
        self.start()
        # A timed wait keeps the main thread responsive to signals.
        while not self.wait(1.0):
            if stop is not None and stop.is_set():
                return
        self.close()

    def close(self):
        with self._lock:
            chans, self._channels = self._channels, []
        for ch in chans:
            ch.close()

    # --- cache invalidation --------------------------------------------------
    def invalidate_all(self):
        """Tell the kernel to forget cached names, attributes and pages (new revision).

        Call from a thread that is not serving a request (spec 3.4: notifying from
        a handler can deadlock).
        """
        with self._lock:
            known = [(nid, rec[1], rec[2]) for nid, rec in self._lookups.items()]
            stale = list(self._node_fh.values())
            self._node_fh.clear()
            self._node_dirs.clear()
        for fh in stale:               # handles of the old revision's contents
            self.ops.release(fh)
        ch = self.channel
        for nid, parent, name in known:
            ch.notify_inval_entry(parent, name)
        for nid, parent, name in known:
            ch.notify_inval_inode(nid)
        ch.notify_inval_inode(P.ROOT_ID)

    def known_nodes(self):
        with self._lock:
            return dict((nid, rec[0]) for nid, rec in self._lookups.items())
