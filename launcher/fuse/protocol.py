"""Structures and numbers of the Linux FUSE kernel protocol (include/uapi/linux/fuse.h).

Only what a read-only server needs.  Layouts are little-endian with explicit
padding (see the spec, section 5); every struct is a preallocated
``struct.Struct`` so that the hot path does not parse format strings.
"""

import struct

# --- opcodes (fuse_opcode) ------------------------------------------------
LOOKUP = 1
FORGET = 2
GETATTR = 3
SETATTR = 4
READLINK = 5
SYMLINK = 6
MKNOD = 8
MKDIR = 9
UNLINK = 10
RMDIR = 11
RENAME = 12
LINK = 13
OPEN = 14
READ = 15
WRITE = 16
STATFS = 17
RELEASE = 18
FSYNC = 20
SETXATTR = 21
GETXATTR = 22
LISTXATTR = 23
REMOVEXATTR = 24
FLUSH = 25
INIT = 26
OPENDIR = 27
READDIR = 28
RELEASEDIR = 29
FSYNCDIR = 30
ACCESS = 34
CREATE = 35
INTERRUPT = 36
DESTROY = 38
BATCH_FORGET = 42
FALLOCATE = 43
READDIRPLUS = 44
RENAME2 = 45
COPY_FILE_RANGE = 47
TMPFILE = 51
COPY_FILE_RANGE_64 = 53

# Operations that would modify the file system: answered with EROFS.
WRITE_OPS = frozenset([SETATTR, SYMLINK, MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK,
                       WRITE, SETXATTR, REMOVEXATTR, CREATE, FALLOCATE, RENAME2,
                       COPY_FILE_RANGE, TMPFILE, COPY_FILE_RANGE_64])

# --- INIT capability flags (bit numbers from fuse.h) ---------------------
ASYNC_READ = 1 << 0
EXPORT_SUPPORT = 1 << 4
BIG_WRITES = 1 << 5
AUTO_INVAL_DATA = 1 << 12
DO_READDIRPLUS = 1 << 13
READDIRPLUS_AUTO = 1 << 14
NO_OPEN_SUPPORT = 1 << 17
PARALLEL_DIROPS = 1 << 18
MAX_PAGES = 1 << 22
CACHE_SYMLINKS = 1 << 23
NO_OPENDIR_SUPPORT = 1 << 24
INIT_EXT = 1 << 30

# --- open reply flags (FOPEN_*) ------------------------------------------
FOPEN_DIRECT_IO = 1
FOPEN_KEEP_CACHE = 2
FOPEN_CACHE_DIR = 8

# --- notifications (fuse_notify_code) -----------------------------------
NOTIFY_INVAL_INODE = 2
NOTIFY_INVAL_ENTRY = 3

ROOT_ID = 1
KERNEL_MAJOR = 7
OUR_MAX_MINOR = 45      # structures below are those of 7.45; older minors get truncated replies
MIN_MINOR = 23          # time_gran, MAX_PAGES etc.; older kernels are refused

# FUSE_DEV_IOC_CLONE = _IOR(229, 0, uint32_t)
FUSE_DEV_IOC_CLONE = 0x8004E500

# --- structs ---------------------------------------------------------------
IN_HEADER = struct.Struct("<IIQQIIIHH")          # 40: len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("<IiQ")               # 16: len error unique
INIT_IN_OLD = struct.Struct("<IIII")             # major minor max_readahead flags
INIT_IN = struct.Struct("<IIIII44x")             # + flags2 (>= 7.36)
INIT_OUT = struct.Struct("<IIIIHHIIHHIIH22x")    # 64 bytes
ATTR_FMT = "QQQQQQIIIIIIIIII"                    # fuse_attr, 88 bytes
ENTRY_OUT = struct.Struct("<QQQQII" + ATTR_FMT)  # 128 bytes
ATTR_OUT = struct.Struct("<QII" + ATTR_FMT)      # 104 bytes
OPEN_OUT = struct.Struct("<QIi")                 # 16
READ_IN = struct.Struct("<QQIIQII")              # fh offset size read_flags lock_owner flags pad
RELEASE_IN = struct.Struct("<QIIQ")              # fh flags release_flags lock_owner
OPEN_IN = struct.Struct("<II")                   # flags open_flags
GETXATTR_IN = struct.Struct("<II")               # size pad
GETXATTR_OUT = struct.Struct("<II")
FORGET_IN = struct.Struct("<Q")
BATCH_FORGET_IN = struct.Struct("<II")
FORGET_ONE = struct.Struct("<QQ")
STATFS_OUT = struct.Struct("<QQQQQIIII24x")      # 80
DIRENT = struct.Struct("<QQII")                  # ino off namelen type (24 + name, padded to 8)
NOTIFY_INVAL_INODE_OUT = struct.Struct("<Qqq")
NOTIFY_INVAL_ENTRY_OUT = struct.Struct("<QII")
INTERRUPT_IN = struct.Struct("<Q")

ZERO_ENTRY = bytes(ENTRY_OUT.size)
_PAD = bytes(8)


def dirent(ino, off, name, dtype):
    """One fuse_dirent record: header, name, zero padding to a multiple of 8."""
    n = len(name)
    return DIRENT.pack(ino, off, n, dtype) + name + _PAD[:(-(24 + n)) & 7]


def direntplus(entry_out, ino, off, name, dtype):
    """One fuse_direntplus record: a packed fuse_entry_out followed by the dirent."""
    return entry_out + dirent(ino, off, name, dtype)


def dirent_size(namelen, plus):
    base = 152 if plus else 24
    return (base + namelen + 7) & ~7
