"""The client that serves a mount: dist's real cvmfs2, or the builtin Python client.

choose() returns a Backend whose command() gives the argv and environment of
``cvmfs2 -o config=FILE[,debug] [-f] REPO MOUNTPOINT``.  cvmfs2 is used when
dist/usr/bin/cvmfs2 exists and starts on this node (``cvmfs2 --version`` with
CVMFS_LIBRARY_PATH and LD_LIBRARY_PATH set as the reference mountrepo sets them);
otherwise ``python -m launcher.client`` with this interpreter.
CVMFSEXEC_BACKEND=builtin|cvmfs2 forces one.
"""

import os
import subprocess
import sys

from launcher import envvars
from launcher.errors import CvmfsexecError


class Backend(object):
    name = None

    def command(self, repo, conf, mountpoint, debug=False, foreground=False):
        """-> (argv, extra environment dict)."""
        opt = "config=" + conf + (",debug" if debug else "")
        args = ["-o", opt] + (["-f"] if foreground else []) + [repo, mountpoint]
        return self.argv() + args, self.environ()

    def argv(self):
        raise NotImplementedError

    def environ(self):
        return {}


class Builtin(Backend):
    """``python -m launcher.client`` with BASE on the path."""
    name = "builtin"

    def __init__(self, base):
        self.base = base

    def argv(self):
        return [sys.executable, "-m", "launcher.client"]

    def environ(self):
        pp = os.environ.get("PYTHONPATH")
        return {"PYTHONPATH": self.base + (os.pathsep + pp if pp else "")}


class Cvmfs2(Backend):
    """dist/usr/bin/cvmfs2 with its libraries found as the reference mountrepo does."""
    name = "cvmfs2"

    def __init__(self, dist):
        self.dist = dist
        self.binary = os.path.join(dist, "usr", "bin", "cvmfs2")

    def library_paths(self):
        """(CVMFS_LIBRARY_PATH, LD_LIBRARY_PATH)."""
        lib = os.path.join(self.dist, "usr", "lib")
        if not os.path.exists(os.path.join(lib, "libcvmfs_fuse.so")) and \
                not os.path.exists(os.path.join(lib, "libcvmfs_fuse3.so")):
            lib = os.path.join(self.dist, "usr", "lib64")
        ld = lib
        if not os.path.exists(os.path.join(lib, "libfuse.so.2")):
            ld = lib + ":" + os.path.join(self.dist, os.path.basename(lib))   # el6 layout
        return lib, ld

    def argv(self):
        return [self.binary]

    def environ(self):
        lib, ld = self.library_paths()
        old = os.environ.get("LD_LIBRARY_PATH")
        return {"CVMFS_LIBRARY_PATH": lib, "LD_LIBRARY_PATH": ld + (":" + old if old else "")}

    def present(self):
        return os.access(self.binary, os.X_OK)

    def starts(self):
        """True if ``cvmfs2 --version`` runs here (right libc, libraries found)."""
        env = dict(os.environ)
        env.update(self.environ())
        try:
            with open(os.devnull, "wb") as null:
                return subprocess.call([self.binary, "--version"], stdout=null, stderr=null,
                                       stdin=null, env=env, timeout=20) == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


def choose(base, dist):
    """The backend for this node (see the module docstring)."""
    forced = envvars.get("CVMFSEXEC_BACKEND")
    real = Cvmfs2(dist)
    if forced == "builtin":
        return Builtin(base)
    if forced == "cvmfs2":
        if not real.present():
            raise CvmfsexecError("CVMFSEXEC_BACKEND=cvmfs2 but %s does not exist" % real.binary,
                                 "use a dist that includes cvmfs, or unset CVMFSEXEC_BACKEND")
        return real
    if forced:
        raise CvmfsexecError("CVMFSEXEC_BACKEND=%s is not a backend" % forced,
                             "use builtin or cvmfs2, or unset it")
    if real.present() and real.starts():
        return real
    return Builtin(base)
