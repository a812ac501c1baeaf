"""A connection to the kernel through a /dev/fuse descriptor.

One ``Channel`` per descriptor: the INIT handshake (done once, on the first
descriptor), reading one request per ``read`` into a preallocated buffer,
writing one reply per ``writev``, cloned descriptors (FUSE_DEV_IOC_CLONE) so
that every worker thread has its own queue, and cache-invalidation
notifications.
"""

import errno
import fcntl
import os
import struct

from launcher.fuse import protocol as P

# Requests of a read-only server are small (no WRITE ever arrives on an MS_RDONLY
# mount), but the kernel refuses a read() buffer below max(8192, 80 + max_write).
MAX_WRITE = 128 * 1024
BUFSIZE = MAX_WRITE + 4096
WANTED_FLAGS = (P.ASYNC_READ | P.DO_READDIRPLUS | P.READDIRPLUS_AUTO | P.PARALLEL_DIROPS
                | P.MAX_PAGES | P.CACHE_SYMLINKS | P.NO_OPEN_SUPPORT
                | P.NO_OPENDIR_SUPPORT)
MAX_PAGES_WANTED = 256   # 1 MiB READs; the kernel caps it at fs.fuse.max_pages_limit


class ProtocolError(Exception):
    """The kernel spoke a protocol we cannot serve (reported, not retried)."""


class Channel(object):
    """One /dev/fuse descriptor; replies go back on the descriptor a request came from."""

    def __init__(self, fd, parent=None):
        self.fd = fd
        self.buf = bytearray(BUFSIZE)
        self.view = memoryview(self.buf)
        self.closed = False
        # Negotiated parameters (copied to clones).
        src = parent
        self.minor = src.minor if src else 0
        self.flags = src.flags if src else 0
        self.max_readahead = src.max_readahead if src else 0
        self.max_pages = src.max_pages if src else 32

    # --- reading -------------------------------------------------------------
    def read(self):
        """Read one request into self.buf; return its length, or 0 once unmounted."""
        while True:
            try:
                return os.readv(self.fd, [self.buf])
            except OSError as e:
                if e.errno in (errno.EINTR, errno.EAGAIN, errno.ENOENT):
                    continue      # ENOENT: interrupted before delivery
                if e.errno in (errno.ENODEV, errno.ECONNABORTED, errno.EBADF):
                    return 0      # unmounted / aborted / closed by shutdown
                raise

    # --- writing -------------------------------------------------------------
    def reply(self, unique, payload=b""):
        self._write([P.OUT_HEADER.pack(16 + len(payload), 0, unique), payload])

    def reply_parts(self, unique, parts):
        total = 16
        for p in parts:
            total += len(p)
        self._write([P.OUT_HEADER.pack(total, 0, unique)] + list(parts))

    def reply_error(self, unique, err):
        self._write([P.OUT_HEADER.pack(16, -err, unique)])

    def _write(self, parts):
        try:
            os.writev(self.fd, parts)
        except OSError as e:
            # ENOENT: the request was interrupted or already answered; ENODEV: gone.
            if e.errno not in (errno.ENOENT, errno.ENODEV, errno.ECONNABORTED, errno.EBADF):
                raise

    # --- notifications -----------------------------------------------------
    def notify_inval_inode(self, nodeid, off=0, length=-1):
        """Drop the kernel's cached attributes and pages of ``nodeid``; False if unknown."""
        body = P.NOTIFY_INVAL_INODE_OUT.pack(nodeid, off, length)
        return self._notify(P.NOTIFY_INVAL_INODE, [body])

    def notify_inval_entry(self, parent, name):
        body = P.NOTIFY_INVAL_ENTRY_OUT.pack(parent, len(name), 0)
        return self._notify(P.NOTIFY_INVAL_ENTRY, [body, name, b"\0"])

    def _notify(self, code, parts):
        total = 16 + sum(len(p) for p in parts)
        try:
            os.writev(self.fd, [P.OUT_HEADER.pack(total, code, 0)] + parts)
            return True
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENODEV, errno.EBADF, errno.ECONNABORTED):
                return False   # not cached by the kernel, or unmounted
            raise

    # --- INIT --------------------------------------------------------------
    def handshake(self):
        """Answer FUSE_INIT, the first request on a new connection.

        Returns False if the connection ended before INIT completed.
        """
        while True:
            n = self.read()
            if n == 0:
                return False
            length, opcode, unique = P.IN_HEADER.unpack_from(self.buf)[:3]
            if opcode != P.INIT:
                # Nothing else can arrive before INIT is answered; be defensive.
                self.reply_error(unique, errno.EIO)
                continue
            if self._answer_init(unique, length):
                return True

    def _answer_init(self, unique, length):
        argl = length - P.IN_HEADER.size
        major, minor, readahead, flags = P.INIT_IN_OLD.unpack_from(self.buf, P.IN_HEADER.size)
        if major > P.KERNEL_MAJOR:
            # The kernel retries with our major (fuse_lowlevel.c does the same).
            self.reply(unique, P.INIT_OUT.pack(P.KERNEL_MAJOR, P.OUR_MAX_MINOR, 0, 0, 0, 0,
                                               0, 0, 0, 0, 0, 0, 0)[:8])
            return False
        if major < P.KERNEL_MAJOR or minor < P.MIN_MINOR:
            self.reply_error(unique, errno.EPROTO)
            raise ProtocolError("kernel FUSE protocol %d.%d is older than 7.%d"
                                % (major, minor, P.MIN_MINOR))
        if argl >= P.INIT_IN.size:
            flags2 = P.INIT_IN.unpack_from(self.buf, P.IN_HEADER.size)[4]
            if flags & P.INIT_EXT:
                flags |= flags2 << 32
        want = flags & WANTED_FLAGS
        self.minor = min(minor, P.OUR_MAX_MINOR)
        self.flags = want
        self.max_readahead = readahead
        self.max_pages = MAX_PAGES_WANTED if want & P.MAX_PAGES else 32
        out = P.INIT_OUT.pack(P.KERNEL_MAJOR, self.minor, readahead, want & 0xFFFFFFFF,
                              64, 48, MAX_WRITE, 1, self.max_pages, 0, 0, 0, 0)
        self.reply(unique, out)
        return True

    # --- clones ---------------------------------------------------------------
    def clone(self):
        """A new Channel on a cloned descriptor, or None where the kernel/permissions refuse."""
        try:
            fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return None     # e.g. /dev/fuse 0600 and we got the fd from fusermount
        try:
            fcntl.ioctl(fd, P.FUSE_DEV_IOC_CLONE, struct.pack("I", self.fd))
        except (OSError, IOError):
            os.close(fd)
            return None
        return Channel(fd, parent=self)

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                os.close(self.fd)
            except OSError:
                pass
