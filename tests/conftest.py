"""Shared test helpers: paths, interpreters, capability probes, a real HTTP server."""
import glob
import os
import pwd
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
FIXTURES = os.path.join(SHARED, "fixtures")
HTTPD = os.path.join(ROOT, "tests", "httpd.py")
UNPRIV_USER = "cvmfstest"

sys.path.insert(0, ROOT)


def pyenv_pythons():
    """{version: path} of the real CPython interpreters pyenv provides (3.x only)."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    try:
        root = subprocess.check_output(["pyenv", "root"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    found = {}
    for path in sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin", "python"))):
        ver = path.split(os.sep)[-3]
        found[ver] = path
    return found


def _vkey(v):
    return tuple(int(x) for x in v.split(".")[:3] if x.isdigit())


def python_oldest_and_newest():
    """[(label, path)] for Python 3.6 and the newest pyenv Python, with skips where missing."""
    pys = pyenv_pythons()
    out = []
    old = [v for v in pys if v.startswith("3.6.")]
    out.append(pytest.param(pys[old[0]], id="py" + old[0]) if old else
               pytest.param(None, id="py3.6", marks=pytest.mark.skip(reason="no Python 3.6 from pyenv")))
    if pys:
        newest = max(pys, key=_vkey)
        out.append(pytest.param(pys[newest], id="py" + newest))
    else:
        out.append(pytest.param(None, id="newest",
                                marks=pytest.mark.skip(reason="no pyenv Pythons found")))
    return out


def fuse_skip_reason():
    """Why FUSE tests cannot run here, or None (probes, like pyfuse3's fuse_test_marker)."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
    except OSError as e:
        return "cannot open /dev/fuse: %s" % e.strerror
    return None


def userns_skip_reason():
    try:
        val = open("/proc/sys/user/max_user_namespaces").read().strip()
        if val == "0":
            return "user.max_user_namespaces is 0"
    except OSError:
        pass
    r = subprocess.run(["unshare", "-Ur", "true"], capture_output=True, text=True)
    if r.returncode != 0:
        return "unprivileged user namespaces refused: %s" % r.stderr.strip()
    return None


def grant_fuse_access():
    """Make /dev/fuse usable by an unprivileged test user.

    /dev/fuse is mode 0600 on this test machine (0666 on ordinary distributions);
    tests that run as an unprivileged user grant access first, as root, and say so.
    """
    st = os.stat("/dev/fuse")
    if st.st_mode & 0o006 != 0o006:
        if os.geteuid() != 0:
            pytest.skip("/dev/fuse is not accessible to other users and we are not root")
        sys.stderr.write("test setup: chmod 0666 /dev/fuse so an unprivileged user can mount\n")
        os.chmod("/dev/fuse", 0o666)


def unpriv_user():
    """(uid, gid) of the unprivileged test user, created if missing (root only)."""
    try:
        pw = pwd.getpwnam(UNPRIV_USER)
    except KeyError:
        if os.geteuid() != 0:
            pytest.skip("no user %s and not root to create it" % UNPRIV_USER)
        subprocess.run(["useradd", "-M", "-s", "/bin/sh", UNPRIV_USER], check=False,
                       capture_output=True)
        pw = pwd.getpwnam(UNPRIV_USER)
    return pw.pw_uid, pw.pw_gid


def wait_for(predicate, timeout=30.0, what="condition"):
    """Poll predicate with a growing delay until it returns something true (returned),
    or fail after timeout seconds naming what was awaited. Never a fixed sleep."""
    deadline = time.time() + timeout
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class HttpServer(object):
    """A real HTTP server child process serving one directory on 127.0.0.1."""

    def __init__(self, directory, tmpdir):
        port_file = os.path.join(str(tmpdir), "httpd-%d.port" % id(self))
        self.proc = subprocess.Popen([sys.executable, HTTPD, directory, "--port-file", port_file])
        deadline = time.time() + 20
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("test HTTP server did not start")
            time.sleep(0.02)
        self.port = int(open(port_file).read())
        self.url = "http://127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def http_server(tmp_path):
    """Factory: http_server(directory) -> HttpServer (stopped at teardown)."""
    servers = []

    def start(directory):
        s = HttpServer(str(directory), tmp_path)
        servers.append(s)
        return s
    yield start
    for s in servers:
        s.stop()


def pytest_collection_modifyitems(config, items):
    reason_fuse = fuse_skip_reason()
    reason_userns = None
    for item in items:
        if reason_fuse and "fuse" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason_fuse))
        if "userns" in item.keywords:
            if reason_userns is None:
                reason_userns = userns_skip_reason() or ""
            if reason_userns:
                item.add_marker(pytest.mark.skip(reason=reason_userns))
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs real root"))
