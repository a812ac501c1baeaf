"""Every environment variable cvmfsexec reads or sets, documented in one place.

Code reads variables through :func:`get` with a name listed here, so that the
README's table (``python3 -m launcher.envvars``) and the code cannot drift.
cvmfs configuration parameters (``CVMFS_*``) are not environment variables of
ours: they live in cvmfs configuration files (see the README).
"""

import os
import sys


class Var(object):
    __slots__ = ("name", "default", "side", "doc")

    def __init__(self, name, default, side, doc):
        self.name = name
        self.default = default
        self.side = side      # "runtime", "build", "set" (we set it for the payload)
        self.doc = doc


VARIABLES = [
    # --- runtime: read on the worker node --------------------------------
    Var("CVMFSEXEC_MODE", "", "runtime",
        "Force the mount mode: 1 (fusermount, no namespaces), 2 (fusermount outside, "
        "user namespace inside), 3 (FUSE inside user+mount+pid namespaces), 3b (as 3 "
        "without a pid namespace, for masked /proc). Default: probe."),
    Var("CVMFSEXEC_BACKEND", "", "runtime",
        "Force the client: 'builtin' (pure Python) or 'cvmfs2' (dist's binary). "
        "Default: cvmfs2 when present and able to start, else builtin."),
    Var("CVMFSEXEC_EXTRACT_DIR", "", "runtime",
        "Directory the self-extracting artifact unpacks into, instead of "
        ".cvmfsexec (.singcvmfs) beside the file. Use it when that directory is read-only."),
    Var("CVMFSEXEC_EXTRACT_TIMEOUT", "300", "runtime",
        "Seconds a starting artifact waits for another process's extraction lock."),
    Var("CVMFSEXEC_DEBUG", "", "runtime",
        "Set to 1 for diagnostics on stderr (mode probing, mounts, backend choice)."),
    Var("SHELL", "/bin/sh", "runtime", "Default command when none is given after '--'."),
    Var("XDG_RUNTIME_DIR", "/tmp", "runtime",
        "Where BEARER_TOKEN_FILE defaults to bt_u$UID (the client runs as fake root)."),
    Var("BEARER_TOKEN_FILE", "", "runtime", "Token file for authenticated repositories."),
    Var("http_proxy", "", "runtime",
        "With CVMFS_HTTP_PROXY=auto, used as the proxy before the PAC URLs are tried."),
    Var("LD_LIBRARY_PATH", "", "runtime",
        "Kept, with dist's library directories put first, for the cvmfs2 backend."),
    # --- set by cvmfsexec for the payload ---------------------------------
    Var("CVMFSEXEC_CMDFD", "", "set",
        "File descriptor to the mounting process outside; close it "
        "(exec {CVMFSEXEC_CMDFD}>&-) to forbid further mounts from a payload."),
    Var("CVMFSEXEC_WAITFIFO", "", "set", "FIFO on which mount requests get their answer."),
    Var("CVMFSMOUNT", "", "set", "Command that mounts one more repository from inside."),
    Var("CVMFSUMOUNT", "", "set", "Command that unmounts a repository from inside."),
    Var("CVMFS_LIBRARY_PATH", "", "set",
        "Where the cvmfs2 backend finds its fuse libraries (dist's lib64 directories)."),
    Var("_FUSE_COMMFD", "", "set",
        "Socket on which fusermount3/fusermount hands back the /dev/fuse descriptor."),
    # --- build side ---------------------------------------------------------
    Var("CVMFSEXEC_DOWNLOAD_CACHE", "", "build",
        "Download cache of build.py (default: ~/.cache/cvmfsexec/downloads)."),
    Var("CVMFSEXEC_REPO_URL_<NAME>", "", "build",
        "Override the base URL of yum repository NAME (upper case, '-' as '_'), "
        "like --repo-url NAME=URL."),
]

_BY_NAME = dict((v.name, v) for v in VARIABLES)


def get(name, environ=None):
    """Value of a documented variable, or its default. Unknown names are a bug."""
    var = _BY_NAME[name]
    env = os.environ if environ is None else environ
    value = env.get(name)
    return var.default if value is None or value == "" else value


def table():
    rows = ["| variable | side | default | meaning |", "| --- | --- | --- | --- |"]
    for v in VARIABLES:
        rows.append("| `%s` | %s | %s | %s |" % (v.name, v.side, v.default or "-", v.doc))
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(table() + "\n")
