"""Machine types, host detection, and the one table of yum repository base URLs.

A *machine type* names the platform a dist is built for (``rhel9-x86_64``).  It
decides which repositories the packages come from and which FUSE library is
needed.  Every URL the build downloads from starts in :data:`BASE_URLS`; each
entry can be replaced with ``--repo-url NAME=URL`` or the environment variable
``CVMFSEXEC_REPO_URL_<NAME>`` (upper case, ``-`` as ``_``), so that mirrors and
tests can point elsewhere.  Templates may use ``{el}`` (EL release),
``{arch}`` and ``{version}`` (the distribution's own major version).
"""
import collections
import os
import platform

from launcher.errors import UsageError

# name -> URL template.  Keep this the ONLY place that knows upstream servers.
BASE_URLS = collections.OrderedDict([
    # CERN's cvmfs client packages (cvmfs, cvmfs-libs, cvmfs-fuse3) and cvmfs-config-default.
    ("cvmfs", "https://cvmrepo.s3.cern.ch/cvmrepo/yum/cvmfs/EL/{el}/{arch}"),
    # CERN's SLES builds of the cvmfs client.
    ("cvmfs-sle", "https://cvmrepo.s3.cern.ch/cvmrepo/yum/cvmfs/sle/{version}/{arch}"),
    # Open Science Grid: cvmfs-config-osg, cvmfs-x509-helper.
    ("osg", "https://repo.osg-htc.org/osg/24-main/el{el}/release/{arch}"),
    # EGI UMD: cvmfs-config-egi, cvmfs-x509-helper.
    ("egi", "https://repository.egi.eu/sw/production/umd/5/al{el}/release/{arch}"),
    # EPEL: scitokens-cpp (and fuse3-libs on EL7).
    ("epel", "https://dl.fedoraproject.org/pub/epel/{el}/Everything/{arch}"),
    ("epel-archive", "https://archives.fedoraproject.org/pub/archive/epel/{el}/{arch}"),
    # FUSE libraries of the EL distributions.
    ("baseos", "https://repo.almalinux.org/almalinux/{el}/BaseOS/{arch}/os"),
    ("appstream", "https://repo.almalinux.org/almalinux/{el}/AppStream/{arch}/os"),
    ("centos-vault", "https://vault.centos.org/centos/{el}/os/{arch}"),
    # openSUSE Leap 15: libfuse2 / libfuse3-3 for suse15.
    ("suse-oss", "https://download.opensuse.org/distribution/leap/15.6/repo/oss"),
])

MACHINE_TYPES = (
    "rhel7-x86_64",
    "rhel8-x86_64", "rhel8-aarch64",
    "rhel9-x86_64", "rhel9-aarch64",
    "rhel10-x86_64",
    "suse15-x86_64", "suse15-aarch64",
)
# rhel7 is past its end of life: only the plain CERN 'default' configuration is offered.
FLAVOURS_ONLY = {"rhel7-x86_64": ("default", "none")}

ENV_PREFIX = "CVMFSEXEC_REPO_URL_"   # declared in launcher/envvars.py as CVMFSEXEC_REPO_URL_<NAME>

# Debian and Ubuntu hosts get the EL build of the same era (glibc and OpenSSL
# generation): Debian 11 has OpenSSL 1.1 like EL8; Debian 12/13 and Ubuntu
# 22.04/24.04 have OpenSSL 3 and glibc >= 2.34 like EL9.
DEBIAN_LIKE = {("debian", "11"): 8, ("debian", "12"): 9, ("debian", "13"): 9,
               ("ubuntu", "22"): 9, ("ubuntu", "24"): 9}

ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


class Machine(object):
    """A supported machine type, e.g. Machine('rhel9-x86_64')."""

    def __init__(self, name):
        if name not in MACHINE_TYPES:
            raise UsageError("unsupported machine type %r" % name,
                             "supported types: %s" % " ".join(MACHINE_TYPES))
        self.name = name
        distver, self.arch = name.split("-", 1)
        self.distro = distver.rstrip("0123456789")
        self.version = int(distver[len(self.distro):])
        # SUSE takes its configuration, helper and EPEL packages from EL8 (as upstream does).
        self.el = 8 if self.distro == "suse" else self.version

    def __repr__(self):
        return "Machine(%r)" % self.name

    def os_release(self):
        """The os-release subset written into dist (configs such as osgstorage-auth.conf use it)."""
        return 'ID_LIKE="%s"\nVERSION_ID="%d"\n' % (self.distro, self.version)

    def check_flavour(self, flavour):
        allowed = FLAVOURS_ONLY.get(self.name)
        if allowed and flavour not in allowed:
            raise UsageError("%s supports only the %s flavours, not %r"
                             % (self.name, "/".join(allowed), flavour),
                             "use -m with a newer machine type")


def parse_os_release(text):
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def detect_host(os_release="/etc/os-release", arch=None):
    """The machine type matching this host, or a UsageError explaining why none does."""
    try:
        with open(os_release) as f:
            info = parse_os_release(f.read())
    except OSError as e:
        raise UsageError("cannot detect the host type: %s: %s" % (os_release, e.strerror),
                         "give the machine type with -m")
    arch = arch or platform.machine()
    arch = ARCH_ALIASES.get(arch, arch)
    ids = [info.get("ID", "")] + info.get("ID_LIKE", "").split()
    major = info.get("VERSION_ID", "").split(".")[0]
    if "rhel" in ids or "centos" in ids:
        name = "rhel%s-%s" % (major, arch)
    elif "suse" in ids or "sles" in ids or "opensuse" in ids:
        name = "suse%s-%s" % (major, arch)
    elif (info.get("ID"), major) in DEBIAN_LIKE:
        name = "rhel%d-%s" % (DEBIAN_LIKE[(info.get("ID"), major)], arch)
    else:
        raise UsageError("this host (%s) is not a supported build host type"
                         % (info.get("PRETTY_NAME") or info.get("ID") or "unknown"),
                         "give the machine type with -m: %s" % " ".join(MACHINE_TYPES))
    if name not in MACHINE_TYPES:
        raise UsageError("this host maps to machine type %s, which is not supported" % name,
                         "give the machine type with -m: %s" % " ".join(MACHINE_TYPES))
    return name


def env_name(repo):
    return ENV_PREFIX + repo.upper().replace("-", "_")


def parse_overrides(items, environ=None):
    """{repo name: URL template} from the environment and --repo-url NAME=URL (which wins)."""
    env = os.environ if environ is None else environ
    overrides = {}
    for name in BASE_URLS:
        value = env.get(env_name(name))
        if value:
            overrides[name] = value
    for item in items or ():
        name, sep, url = item.partition("=")
        if not sep or not url:
            raise UsageError("--repo-url needs NAME=URL, got %r" % item,
                             "e.g. --repo-url osg=https://mirror.example.org/osg/24/el9; "
                             "names: %s" % " ".join(BASE_URLS))
        if name not in BASE_URLS:
            raise UsageError("unknown repository name %r in --repo-url" % name,
                             "known names: %s" % " ".join(BASE_URLS))
        overrides[name] = url
    return overrides


def repo_url(name, overrides=None, **values):
    """The base URL of repository ``name`` with its template filled in (no trailing slash)."""
    template = (overrides or {}).get(name) or BASE_URLS[name]
    try:
        return template.format(**values).rstrip("/")
    except (KeyError, IndexError, ValueError) as e:
        raise UsageError("bad URL template for repository %s: %r (%s)" % (name, template, e),
                         "templates may use {el}, {arch} and {version}")
