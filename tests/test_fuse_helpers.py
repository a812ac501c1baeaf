"""Helpers for the FUSE tests: listings in the fixture's format, client processes, mounts."""

import errno
import hashlib
import os
import stat
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The client's magic attributes on the root are not repository content.
from launcher.fuse.cvmfsops import GLOBAL_XATTRS  # noqa: E402
from conftest import wait_for  # noqa: E402,F401  (re-exported to the FUSE tests)


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def force_unmount(path):
    """Teardown: lazy unmount whatever is there (root: umount -l; else fusermount3 -uz)."""
    for cmd in (["umount", "-l", path], ["fusermount3", "-uz", path]):
        if not is_mounted(path):
            return
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_pid(pid):
    try:
        os.kill(pid, 9)
    except OSError:
        pass


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def listing(mnt):
    """(E lines, S lines) of a mounted tree in small_example_org-expected.txt's format."""
    paths = ["/"]
    for dirpath, dirnames, filenames in os.walk(mnt):
        rel = dirpath[len(mnt):] or ""
        for n in dirnames + filenames:
            paths.append(rel + "/" + n)
    paths.sort(key=lambda p: p.encode("utf-8", "surrogateescape"))
    groups = {}
    elines, slines = [], []
    for p in paths:
        full = mnt if p == "/" else mnt + p
        st = os.lstat(full)
        kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
        group = "-"
        if kind != "d" and st.st_nlink > 1:
            group = str(groups.setdefault(st.st_ino, len(groups) + 1))
        target = os.readlink(full) if kind == "l" else "-"
        xattrs = "-"
        if kind != "l":
            names = sorted(n for n in os.listxattr(full) if n.startswith("user."))
            if p == "/":
                names = [n for n in names if n not in GLOBAL_XATTRS]
            if names:
                xattrs = ";".join("%s=%s" % (n, os.getxattr(full, n).decode()) for n in names)
        elines.append("\t".join(["E", kind, "%04o" % stat.S_IMODE(st.st_mode), str(st.st_size),
                                 str(st.st_nlink), group, p, target, xattrs]))
        if kind == "f":
            with open(full, "rb") as f:
                slines.append("S\t%s\t%s" % (hashlib.sha256(f.read()).hexdigest(), p))
    return elines, slines


def expected_listing(path):
    elines, slines = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("E\t"):
                elines.append(line)
            elif line.startswith("S\t"):
                slines.append(line)
    return elines, slines


def write_config(path, **values):
    with open(path, "w") as f:
        for k, v in sorted(values.items()):
            f.write("%s=%s\n" % (k, v))
    return path


def start_client(python, config, fqrn, mnt, extra_opts="", env=None, preexec_fn=None):
    """Run the client (daemon mode); return the CompletedProcess of the loader."""
    opts = "config=%s%s" % (config, ("," + extra_opts) if extra_opts else "")
    environ = dict(os.environ, PYTHONPATH=ROOT)
    environ.update(env or {})
    return subprocess.run([python or sys.executable, "-m", "launcher.client", "-o", opts,
                           fqrn, mnt], cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
                          preexec_fn=preexec_fn)


def client_pid(mnt):
    return int(os.getxattr(mnt, "user.pid"))


def read_errno(path):
    """errno of reading ``path`` (0 on success)."""
    try:
        with open(path, "rb") as f:
            f.read()
        return 0
    except OSError as e:
        return e.errno


ENOTCONN = errno.ENOTCONN
