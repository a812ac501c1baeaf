"""Mounting and unmounting a FUSE file system, three ways.

* ``mount(2)`` directly (launcher.mounts): as real root, or as the
  (fake) root of a user namespace that owns the current mount namespace
  (kernel >= 4.18).  /dev/fuse must be opened inside that namespace.
* ``fusermount3`` (or ``fusermount``) for an unprivileged user without
  namespaces: the setuid helper mounts and hands the /dev/fuse descriptor back
  over the socket named by ``_FUSE_COMMFD`` (SCM_RIGHTS, one data byte).
* A pre-mounted descriptor: a mount point ``/dev/fd/N`` (cvmfs2's convention).
"""

import array
import errno
import os
import shutil
import socket
import stat
import subprocess

from launcher import mounts
from launcher.errors import CvmfsexecError


class MountError(CvmfsexecError):
    """A mount or unmount failed; carries the errno when there is one."""

    def __init__(self, message, hint=None, errno_=None):
        CvmfsexecError.__init__(self, message, hint, exit_code=4)   # cvmfs2: 4 = mount
        self.errno = errno_


def premounted_fd(mountpoint):
    """N if ``mountpoint`` is ``/dev/fd/N`` (already mounted by someone else), else None."""
    prefix = "/dev/fd/"
    if mountpoint.startswith(prefix) and mountpoint[len(prefix):].isdigit():
        return int(mountpoint[len(prefix):])
    return None


def open_device():
    try:
        return os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise MountError("cannot open /dev/fuse: %s" % e.strerror,
                         "the fuse kernel module must be loaded and /dev/fuse readable and "
                         "writable", e.errno)


def mount_direct(mountpoint, fsname, subtype="cvmfs2", options=(), uid=None, gid=None):
    """mount(2) a FUSE file system at ``mountpoint``; return the /dev/fuse descriptor.

    ``uid``/``gid`` are the mount owner as seen in the caller's user namespace.
    """
    fd = open_device()
    rootmode = stat.S_IFMT(os.stat(mountpoint).st_mode)
    data = ["fd=%d" % fd, "rootmode=%o" % rootmode,
            "user_id=%d" % (os.getuid() if uid is None else uid),
            "group_id=%d" % (os.getgid() if gid is None else gid)]
    data.extend(o for o in options if o)
    fstype = "fuse.%s" % subtype if subtype else "fuse"
    try:
        mounts.mount(fsname, mountpoint, fstype,
                     mounts.MS_RDONLY | mounts.MS_NOSUID | mounts.MS_NODEV, ",".join(data))
    except OSError as e:
        os.close(fd)
        raise MountError("mount(2) of %s failed: %s" % (mountpoint, os.strerror(e.errno)),
                         None, e.errno)
    return fd


def find_fusermount():
    for name in ("fusermount3", "fusermount"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _recv_fd(sock):
    """Receive one descriptor sent with SCM_RIGHTS (socket.recv_fds is 3.9+)."""
    fds = array.array("i")
    msg, ancdata, flags, addr = sock.recvmsg(1, socket.CMSG_LEN(fds.itemsize))
    for level, ctype, data in ancdata:
        if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    return fds[0] if fds else None


def mount_fusermount(mountpoint, fsname, subtype="cvmfs2", options=()):
    """Mount through the setuid fusermount3 helper; return the descriptor it hands back."""
    helper = find_fusermount()
    if helper is None:
        raise MountError("neither fusermount3 nor fusermount found in PATH",
                         "install fuse3 or run with user namespaces")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    opts = ["ro", "nosuid", "nodev", "fsname=%s" % fsname]
    if subtype:
        opts.append("subtype=%s" % subtype)
    opts.extend(o for o in options if o)
    env = dict(os.environ)
    env["_FUSE_COMMFD"] = str(theirs.fileno())
    try:
        proc = subprocess.Popen([helper, "-o", ",".join(opts), "--", mountpoint],
                                env=env, pass_fds=(theirs.fileno(),),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True)
        theirs.close()
        fd = _recv_fd(ours)
        out, err = proc.communicate()
    finally:
        ours.close()
        theirs.close()      # closing twice is harmless
    if fd is None or proc.returncode != 0:
        if fd is not None:
            os.close(fd)
        raise MountError("%s could not mount %s: %s"
                         % (os.path.basename(helper), mountpoint,
                            (err or out).strip() or "exit status %d" % proc.returncode))
    os.set_inheritable(fd, False)
    return fd


def mount(mountpoint, fsname="cvmfs2", subtype="cvmfs2", options=(), method=None):
    """Mount ``mountpoint`` the best available way; return (fd, method).

    method: None (choose), "direct" or "fusermount".  The direct mount is tried
    first when we are (possibly fake) root; EPERM then falls back to fusermount.
    """
    pre = premounted_fd(mountpoint)
    if pre is not None:
        return pre, "premounted"
    if method == "fusermount":
        return mount_fusermount(mountpoint, fsname, subtype, options), "fusermount"
    if method == "direct" or os.geteuid() == 0:
        try:
            return mount_direct(mountpoint, fsname, subtype, options), "direct"
        except MountError as e:
            if method == "direct" or e.errno not in (errno.EPERM, errno.EACCES) \
                    or find_fusermount() is None:
                raise
    return mount_fusermount(mountpoint, fsname, subtype, options), "fusermount"


def unmount(mountpoint, method, lazy=True):
    """Unmount; ``method`` is what ``mount`` returned.  Errors raise MountError."""
    if method == "premounted":
        return
    if method == "direct":
        try:
            mounts.umount(mountpoint, mounts.MNT_DETACH if lazy else 0)
        except OSError as e:
            if e.errno == errno.EINVAL:     # not mounted (any more)
                return
            raise MountError("umount of %s failed: %s" % (mountpoint, os.strerror(e.errno)),
                             None, e.errno)
        return
    helper = find_fusermount()
    if helper is None:
        raise MountError("cannot unmount %s: no fusermount3" % mountpoint)
    args = [helper, "-u"] + (["-z"] if lazy else []) + ["--", mountpoint]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    out, err = proc.communicate()
    if proc.returncode != 0 and "not mounted" not in err and "not found in" not in err:
        raise MountError("%s failed: %s" % (" ".join(args), err.strip()))


def is_mounted(mountpoint):
    """True if ``mountpoint`` is a mount point according to /proc/self/mountinfo."""
    try:
        return mounts.find_mount(os.path.realpath(mountpoint)) is not None
    except OSError:
        return os.path.ismount(mountpoint)
