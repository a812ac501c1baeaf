"""Per-repository configuration: what the reference mountrepo writes to its temp file.

assemble() evaluates the dist's configuration chain (launcher.cvmfs.config,
relocated into the dist) and adds what a mount by an unprivileged user needs,
exactly where the reference mountrepo adds it (right after default.local, so
domain.d and config.d files still override):

* ``CVMFS_NFILES`` = the hard RLIMIT_NOFILE, unless default.local sets it;
* ``CVMFS_USYSLOG`` = BASE/log/<repo>.log, unless default.local sets it;
* ``CVMFS_CACHE_BASE`` = dist/var/lib/cvmfs when nothing sets it;
* ``CVMFS_HTTP_PROXY`` = ``auto;DIRECT`` with the WLCG PAC URLs when nothing sets it;
* ``CVMFS_BLACKLIST`` = dist/etc/cvmfs/blacklist when that file exists and nothing sets it.

The environment of the client gets ``BEARER_TOKEN_FILE`` (default
``${XDG_RUNTIME_DIR:-/tmp}/bt_u$UID`` with the *real* uid: the client runs as
fake root, so its own default would be bt_u0).
"""

import os
import re
import resource

from launcher import envvars
from launcher.cvmfs import config as cvmfsconfig
from launcher.errors import CvmfsexecError

#: the reference mountrepo's default when default.local sets no proxy
DEFAULT_PROXY = "auto;DIRECT"
DEFAULT_PAC_URLS = "http://cernvm-wpad.fnal.gov/wpad.dat;http://cernvm-wpad.cern.ch/wpad.dat"

_REPO_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def base_dir():
    """BASE: the directory holding launcher/, dist/, log/ and the commands."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dist_dir(base=None):
    return os.path.join(base or base_dir(), "dist")


def log_path(repo, base=None):
    return os.path.join(base or base_dir(), "log", repo + ".log")


def mount_dir(repo, base=None):
    """Where mountrepo mounts ``repo``: dist/cvmfs/<repo>."""
    return os.path.join(dist_dir(base), "cvmfs", repo)


def conf_path(repo, base=None):
    return os.path.join(dist_dir(base), "var", "run", "cvmfs", repo + ".conf")


def check_repo_name(repo):
    """Raise unless ``repo`` is letters, digits, dots, dashes and underscores (never a path)."""
    if not repo or not _REPO_RE.match(repo) or repo in (".", "..") or ".." in repo:
        raise CvmfsexecError("invalid repository name %r" % repo,
                             "a repository name has only letters, digits, dots, dashes and "
                             "underscores, and no '..', e.g. atlas.cern.ch")
    return repo


def read_distinfo(dist):
    """{key: value} of dist/.cvmfsexecdist (written by build.py), {} if absent."""
    info = {}
    try:
        with open(os.path.join(dist, ".cvmfsexecdist")) as f:
            for line in f:
                k, sep, v = line.partition(":")
                if sep and k.strip() not in info:
                    info[k.strip()] = v.strip()
    except (IOError, OSError):
        pass
    return info


def _arch_aliases(machine):
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def check_dist(base=None):
    """Raise a clear error if dist/ is missing or made for another machine type."""
    dist = dist_dir(base)
    etc = os.path.join(dist, "etc", "cvmfs")
    if not os.path.isdir(etc):
        base = os.path.dirname(dist)
        if os.path.exists(os.path.join(base, ".payload-sha256")):   # an artifact's extraction
            hint = "remove %s and run the cvmfsexec file again to re-extract it" % base
        else:
            hint = "make one: python3 build.py {osg|egi|default|none}"
        raise CvmfsexecError("%s has no etc/cvmfs: the dist is missing" % dist, hint)
    mach = read_distinfo(dist).get("machtype", "")
    if mach:
        arch = mach.rsplit("-", 1)[-1]
        here = _arch_aliases(os.uname().machine)
        if _arch_aliases(arch) != here:
            raise CvmfsexecError("the dist was made for %s but this node is %s" % (mach, here),
                                 "build a cvmfsexec for this machine type (build.py -m ...)")
    return dist


def _local_assigns(path, name):
    """True if the file assigns ``name`` at the start of a line (the reference's grep)."""
    try:
        with open(path) as f:
            return any(line.startswith(name + "=") for line in f)
    except (IOError, OSError):
        return False


def hard_nofile():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1048576 if hard == resource.RLIM_INFINITY else hard


def assemble(repo, base=None, config_repo_mount=None, environ=None):
    """The flat configuration dict for mounting ``repo`` from BASE's dist."""
    base = base or base_dir()
    dist = dist_dir(base)
    local = os.path.join(dist, "etc", "cvmfs", "default.local")
    after_local = {}
    if not _local_assigns(local, "CVMFS_NFILES"):
        after_local["CVMFS_NFILES"] = str(hard_nofile())
    if not _local_assigns(local, "CVMFS_USYSLOG"):
        after_local["CVMFS_USYSLOG"] = log_path(repo, base)
    cfg = cvmfsconfig.load_repository_config(repo, dist, config_repo_mount, environ=environ,
                                             after_local=after_local)
    if not cfg.get("CVMFS_CACHE_BASE") and not cfg.get("CVMFS_CACHE_DIR"):
        cfg["CVMFS_CACHE_BASE"] = os.path.join(dist, "var", "lib", "cvmfs")
    if not cfg.get("CVMFS_HTTP_PROXY"):
        cfg["CVMFS_HTTP_PROXY"] = DEFAULT_PROXY
        cfg.setdefault("CVMFS_PAC_URLS", DEFAULT_PAC_URLS)
    cfg.setdefault("CVMFS_RELOAD_SOCKETS", os.path.join(dist, "var", "run", "cvmfs"))
    # The client's default blacklist /etc/cvmfs/blacklist is built in, so the
    # relocation cannot move it: a dist that has one gets it read instead.
    blacklist = os.path.join(dist, "etc", "cvmfs", "blacklist")
    if os.path.exists(blacklist):
        cfg.setdefault("CVMFS_BLACKLIST", blacklist)
    return cfg


def write(repo, base=None, config_repo_mount=None, environ=None):
    """assemble() and write it to dist/var/run/cvmfs/<repo>.conf; -> (path, config)."""
    base = base or base_dir()
    cfg = assemble(repo, base, config_repo_mount, environ)
    path = conf_path(repo, base)
    for d in (os.path.dirname(path), os.path.dirname(log_path(repo, base)),
              cfg.get("CVMFS_CACHE_BASE") or cfg.get("CVMFS_CACHE_DIR")):
        if d:
            try:
                os.makedirs(d)
            except OSError:
                pass
    usyslog = cfg.get("CVMFS_USYSLOG")
    if usyslog:
        try:
            os.makedirs(os.path.dirname(usyslog))
        except OSError:
            pass
    cvmfsconfig.write_flat(cfg, path)
    return path, cfg


def debug_enabled(cfg):
    """CVMFS_DEBUGLOG set (non-empty) selects the client's debug mode."""
    return bool(cfg.get("CVMFS_DEBUGLOG"))


def client_environ(environ=None, uid=None):
    """Environment for a client process: BEARER_TOKEN_FILE defaulted for the real uid."""
    env = dict(os.environ if environ is None else environ)
    if not env.get("BEARER_TOKEN_FILE"):
        runtime = envvars.get("XDG_RUNTIME_DIR", env)
        env["BEARER_TOKEN_FILE"] = os.path.join(
            runtime, "bt_u%d" % (os.getuid() if uid is None else uid))
    return env


def log_tail(repo, base=None, lines=10):
    """The last lines of log/<repo>.log, for error messages ('' if none)."""
    try:
        with open(log_path(repo, base), "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except (IOError, OSError):
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])
