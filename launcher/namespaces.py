"""Linux namespaces through ctypes: unshare, setns, uid/gid maps, pivot_root.

One module per kernel interface.  Every call goes through launcher.libc
(``use_errno=True``) so that a refusal is reported with its real errno (udocker
gets ``strerror(-1)`` by omitting it).  Python 3.6 has no ``os.unshare``.
"""

import ctypes
import errno
import os

from launcher import libc

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def unshare(flags):
    """unshare(2); raises OSError with the real errno."""
    return libc.check(libc.load().unshare(flags), "unshare")


def setns(fd, nstype=0):
    return libc.check(libc.load().setns(fd, nstype), "setns")


def pivot_root(new_root, put_old):
    """pivot_root(2) through syscall(): glibc has no wrapper."""
    nr = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "ppc64": 203,
          "s390x": 217, "riscv64": 41}.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, "pivot_root: unknown syscall number on %s"
                      % os.uname().machine)
    ret = libc.load().syscall(ctypes.c_long(nr), ctypes.c_char_p(os.fsencode(new_root)),
                              ctypes.c_char_p(os.fsencode(put_old)))
    return libc.check(ret, "pivot_root")


def prctl(option, arg):
    return libc.check(libc.load().prctl(option, arg, 0, 0, 0), "prctl")


def set_pdeathsig(sig):
    """Have the kernel send ``sig`` to this process when its parent dies."""
    prctl(PR_SET_PDEATHSIG, sig)


def _write(path, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def write_id_maps(pid, uid_inside, uid_outside, gid_inside, gid_outside):
    """Map one uid and one gid of process ``pid``'s user namespace (pid 'self' works).

    setgroups must be denied before an unprivileged gid_map write (user_namespaces(7));
    a kernel without /proc/PID/setgroups (< 3.19) does not need it.
    """
    try:
        _write("/proc/%s/setgroups" % pid, "deny")
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise
    _write("/proc/%s/uid_map" % pid, "%d %d 1\n" % (uid_inside, uid_outside))
    _write("/proc/%s/gid_map" % pid, "%d %d 1\n" % (gid_inside, gid_outside))


def enter_fakeroot(flags=CLONE_NEWNS):
    """unshare a new user namespace (plus ``flags``) and become root in it.

    Returns (uid, gid) as they were before, for mapping back later.
    """
    uid, gid = os.geteuid(), os.getegid()
    unshare(CLONE_NEWUSER | flags)
    write_id_maps("self", 0, uid, 0, gid)
    return uid, gid


def leave_fakeroot(uid, gid):
    """From fakeroot, unshare a nested user namespace mapping back to (uid, gid).

    The payload then sees its own uid and gid (as the reference `unshare -U` does)
    while keeping the mounts made as fakeroot.
    """
    unshare(CLONE_NEWUSER)
    write_id_maps("self", uid, 0, gid, 0)


def ns_inode(kind, pid="self"):
    """Inode of /proc/PID/ns/KIND: equal inodes mean the same namespace."""
    return os.stat("/proc/%s/ns/%s" % (pid, kind)).st_ino


def max_user_namespaces():
    """Value of the sysctl user.max_user_namespaces, or None if unreadable."""
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            return int(f.read().strip())
    except (IOError, OSError, ValueError):
        return None
