"""mount(2)/umount2(2) through ctypes, and /proc/self/mountinfo parsing."""

import os

from launcher import libc

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20

MNT_FORCE = 1
MNT_DETACH = 2


def _b(s):
    return None if s is None else os.fsencode(s)


def mount(source, target, fstype=None, flags=0, data=None):
    """mount(2); raises OSError with the real errno naming the target."""
    ret = libc.load().mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    libc.check(ret, "mount %s" % target, target)


def bind(source, target, recursive=True):
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))


def umount(target, flags=0):
    """umount2(2); raises OSError with the real errno naming the target."""
    libc.check(libc.load().umount2(_b(target), flags), "umount %s" % target, target)


def _unescape(field):
    # mountinfo escapes space, tab, newline and backslash as \ooo
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


class MountEntry(object):
    __slots__ = ("mount_id", "parent_id", "root", "mountpoint", "options", "optional",
                 "fstype", "source", "super_options")

    def __repr__(self):
        return "MountEntry(%r, %r, %r)" % (self.mountpoint, self.fstype, self.source)


def parse_mountinfo(text):
    """[MountEntry] from the text of /proc/PID/mountinfo (proc(5) format)."""
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        e = MountEntry()
        e.mount_id, e.parent_id = int(fields[0]), int(fields[1])
        e.root = _unescape(fields[3])
        e.mountpoint = _unescape(fields[4])
        e.options = fields[5]
        e.optional = fields[6:sep]
        e.fstype = fields[sep + 1]
        e.source = _unescape(fields[sep + 2]) if len(fields) > sep + 2 else ""
        e.super_options = fields[sep + 3] if len(fields) > sep + 3 else ""
        entries.append(e)
    return entries


def mountinfo(pid="self"):
    with open("/proc/%s/mountinfo" % pid) as f:
        return parse_mountinfo(f.read())


def find_mount(mountpoint, entries=None):
    """The last (topmost) entry mounted at ``mountpoint``, or None."""
    mountpoint = os.path.normpath(mountpoint)
    found = None
    for e in entries if entries is not None else mountinfo():
        if e.mountpoint == mountpoint:
            found = e
    return found


def is_fuse_mounted(mountpoint, entries=None):
    """True if a FUSE filesystem is mounted at ``mountpoint`` (no access to the mount)."""
    e = find_mount(mountpoint, entries)
    return e is not None and (e.fstype == "fuse" or e.fstype.startswith("fuse."))


def mounts_under(prefix, entries=None):
    """Mount points at or under ``prefix``, deepest last."""
    prefix = os.path.normpath(prefix)
    return [e.mountpoint for e in (entries if entries is not None else mountinfo())
            if e.mountpoint == prefix or e.mountpoint.startswith(prefix + "/")]
