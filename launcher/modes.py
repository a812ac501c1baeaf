"""Choose how repositories get mounted, by probing what this node allows.

Modes (docs/runtime.md):

1   fusermount only: no user namespaces; mountrepo/umountrepo work, cvmfsexec cannot.
2   user namespaces, but FUSE cannot be mounted inside one (kernels < 4.18 and
    EL7 < 3.10.0-1127): repositories are mounted with fusermount outside and
    mapped into the namespace.
3   FUSE mounts inside an unprivileged user namespace, plus a pid namespace
    so that every client dies with the command.
3b  as 3 without the pid namespace, where a fresh /proc cannot be mounted
    (docker/kubernetes mask parts of /proc); everything is unmounted explicitly.

Each capability is tried for real in a short-lived child (unshare, mount a FUSE
file system with a descriptor nobody serves, mount proc in a new pid
namespace) instead of trusting kernel version numbers.  A probe costs one or
two fork()s and a few system calls (about 2-5 ms here).
"""

import errno
import os
import shutil
import tempfile

from launcher import envvars, mounts, namespaces
from launcher.errors import CvmfsexecError

MODES = ("1", "2", "3", "3b")

DESCRIPTIONS = {
    "1": "fusermount, no user namespaces",
    "2": "fusermount outside, user namespace inside",
    "3": "FUSE inside user+mount+pid namespaces",
    "3b": "FUSE inside user+mount namespaces, no pid namespace (masked /proc)",
}


def _in_child(func):
    """Run func() in a forked child; return (ok, errno) from its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            func()
        except OSError as e:
            code = min(e.errno or 1, 250)
        except BaseException:
            code = 251
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 252
    return code == 0, code


def _probe_userns():
    namespaces.enter_fakeroot(namespaces.CLONE_NEWNS)


def _probe_fuse_in_userns(tmpdir):
    def probe():
        namespaces.enter_fakeroot(namespaces.CLONE_NEWNS)
        fd = os.open("/dev/fuse", os.O_RDWR)
        mounts.mount("cvmfsexec-probe", tmpdir, "fuse",
                     mounts.MS_NOSUID | mounts.MS_NODEV,
                     "fd=%d,rootmode=40000,user_id=0,group_id=0" % fd)
        # Nobody serves this connection: detach it; the namespace dies with us anyway.
        mounts.umount(tmpdir, mounts.MNT_DETACH)
    return probe


def _probe_proc_in_pidns(tmpdir):
    def probe():
        namespaces.enter_fakeroot(namespaces.CLONE_NEWNS | namespaces.CLONE_NEWPID)
        # only a child is in the new pid namespace; proc must be mounted from there
        ok, code = _in_child(lambda: mounts.mount("proc", tmpdir, "proc",
                                                  mounts.MS_NOSUID | mounts.MS_NODEV |
                                                  mounts.MS_NOEXEC))
        if not ok:
            raise OSError(code, os.strerror(code) if code < 250 else "probe failed")
    return probe


class Probe(object):
    """Results of the probes: userns, fuse_in_userns, proc_in_pidns (each (ok, errno))."""

    def __init__(self):
        self.userns = self.fuse_in_userns = self.proc_in_pidns = None

    def mode(self):
        if not self.userns[0]:
            return "1"
        if not self.fuse_in_userns[0]:
            return "2"
        if not self.proc_in_pidns[0]:
            return "3b"
        return "3"


def probe():
    """Run the probes (stopping at the first missing capability) -> Probe."""
    p = Probe()
    p.userns = _in_child(_probe_userns)
    if not p.userns[0]:
        return p
    tmpdir = tempfile.mkdtemp(prefix="cvmfsexec-probe-")
    try:
        p.fuse_in_userns = _in_child(_probe_fuse_in_userns(tmpdir))
        if p.fuse_in_userns[0]:
            p.proc_in_pidns = _in_child(_probe_proc_in_pidns(tmpdir))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return p


def userns_error(code=None):
    """The CvmfsexecError for 'no unprivileged user namespaces', with the sysctl to check."""
    limit = namespaces.max_user_namespaces()
    detail = (" (%s)" % os.strerror(code)) if code and code < 250 else ""
    if code == errno.ENOSPC:     # unshare(2): the user namespace limit, not a full disk
        detail = " (the user namespace limit is reached)"
    if limit == 0:
        hint = "sysctl user.max_user_namespaces is 0; set it to 15000 or more (as root)"
    else:
        hint = ("check the sysctls user.max_user_namespaces (> 0) and, on Debian/Ubuntu, "
                "kernel.unprivileged_userns_clone=1; or use mountrepo (mode 1)")
    return CvmfsexecError("unprivileged user namespaces are not available" + detail, hint)


def choose(debug=None):
    """The mode to use: CVMFSEXEC_MODE if set, else the probed one. -> (mode, Probe or None)."""
    forced = envvars.get("CVMFSEXEC_MODE")
    if forced:
        if forced not in MODES:
            raise CvmfsexecError("CVMFSEXEC_MODE=%s is not a mode" % forced,
                                 "use one of %s, or unset it to probe" % ", ".join(MODES))
        return forced, None
    p = probe()
    return p.mode(), p


def describe(mode):
    return "mode %s (%s)" % (mode, DESCRIPTIONS[mode])


def fuse_device_error():
    """A CvmfsexecError if /dev/fuse is missing or not accessible, else None."""
    if not os.path.exists("/dev/fuse"):
        return CvmfsexecError("/dev/fuse does not exist",
                              "load the fuse kernel module (modprobe fuse) or, in a container, "
                              "pass the device (--device /dev/fuse)")
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            return CvmfsexecError("/dev/fuse is not accessible: %s" % e.strerror,
                                  "make /dev/fuse mode 0666 (as root: chmod 0666 /dev/fuse)")
        return CvmfsexecError("cannot open /dev/fuse: %s" % e.strerror,
                              "check the fuse kernel module")
    return None
