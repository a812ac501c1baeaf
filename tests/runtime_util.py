"""Build a runtime BASE (launcher/, dist/, log/, commands) for tests and the demo.

make_base() lays out what the artifact extracts, with a minimal dist: an
etc/cvmfs tree like the cvmfs-config packages' (default.conf, default.d,
default.local pointing at a test server, keys).  Uses builder.artifact.stage()
when it exists, else copies the launcher package itself.
"""
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_CONF = """\
# like cvmfs's /etc/cvmfs/default.conf (abridged)
CVMFS_CLIENT_PROFILE=
CVMFS_CACHE_BASE=/var/lib/cvmfs
CVMFS_RELOAD_SOCKETS=/var/run/cvmfs
CVMFS_QUOTA_LIMIT=4000
CVMFS_TIMEOUT=5
CVMFS_TIMEOUT_DIRECT=10
CVMFS_STRICT_MOUNT=no
CVMFS_SHARED_CACHE=yes
CVMFS_CHECK_PERMISSIONS=yes
CVMFS_CLAIM_OWNERSHIP=yes
CVMFS_KEYS_DIR=/etc/cvmfs/keys
CVMFS_MOUNT_DIR=/cvmfs
CVMFS_USE_GEOAPI=no
"""

SCRIPT = """\
#!/bin/sh
# test stand-in for the artifact's command preamble
HERE="$(cd "$(dirname "$0")" && pwd)"
exec %(python)s -c 'import sys; sys.path.insert(0, sys.argv.pop(1)); \
from launcher.errors import run_main; from launcher.%(mod)s import main; \
run_main(main, prog="%(cmd)s")' "$HERE" "$@"
"""

COMMANDS = ("cvmfsexec", "mountrepo", "umountrepo")


def write(path, text, mode=0o644):
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def make_dist(dist, repos=(), server_url=None, config_repo=None, proxy="DIRECT",
              extra_local=""):
    """A minimal dist/: repos is [(fqrn, pubkey_path)]; server_url may use @fqrn@."""
    etc = os.path.join(dist, "etc", "cvmfs")
    write(os.path.join(etc, "default.conf"), DEFAULT_CONF)
    write(os.path.join(etc, "default.d", "50-test.conf"),
          "# test site config\n" +
          ("CVMFS_CONFIG_REPOSITORY=%s\n" % config_repo if config_repo else ""))
    local = "CVMFS_HTTP_PROXY=%s\n" % proxy
    if server_url:
        local += "CVMFS_SERVER_URL=\"%s\"\n" % server_url
    write(os.path.join(etc, "default.local"), local + extra_local)
    keys = os.path.join(etc, "keys")
    if not os.path.isdir(keys):
        os.makedirs(keys)
    for fqrn, pub in repos:
        shutil.copy(pub, os.path.join(keys, fqrn + ".pub"))
    return dist


def stage(dist, base, python=None):
    """Lay out BASE from ``dist``: launcher/, dist/, log/, commands."""
    try:
        from builder.artifact import stage as artifact_stage
    except ImportError:
        artifact_stage = None
    if artifact_stage is not None and python is None:
        artifact_stage(dist, base)
    else:
        if not os.path.isdir(base):
            os.makedirs(base)
        shutil.copytree(os.path.join(ROOT, "launcher"), os.path.join(base, "launcher"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if os.path.abspath(dist) != os.path.join(base, "dist"):
            shutil.copytree(dist, os.path.join(base, "dist"), symlinks=True)
        for cmd in COMMANDS:
            write(os.path.join(base, cmd),
                  SCRIPT % {"python": python or sys.executable, "mod": cmd, "cmd": cmd}, 0o755)
    if not os.path.isdir(os.path.join(base, "log")):
        os.makedirs(os.path.join(base, "log"))
    return base


def make_base(base, repos=(), server_url=None, config_repo=None, python=None, owner=None,
              **kw):
    """make_dist + stage in one step; owner=(uid, gid) chowns the tree (unprivileged tests)."""
    work = base + ".dist"
    make_dist(work, repos, server_url, config_repo, **kw)
    stage(work, base, python)
    shutil.rmtree(work)
    if owner:
        chown_tree(base, *owner)
    return base


def chown_tree(path, uid, gid):
    for d, dirs, files in os.walk(path):
        os.chown(d, uid, gid)
        for n in files:
            os.lchown(os.path.join(d, n), uid, gid)
