"""build.py makedist: assemble dist/ (cvmfs client, FUSE libraries, configuration)
from yum repositories.

    python3 build.py [-s] [-m MACHTYPE] [-v CVMFS_VERSION] [--dist DIR] [-f]
                     [--repo-url NAME=URL ...] {osg|egi|default|none}

Flow: plan the packages for the machine type and flavour, resolve each to the
newest version in its repository's metadata, download them (verified, cached),
check the digests inside each RPM, unpack their payloads into a work directory
beside the destination, add our configuration files, then rename the work
directory into place -- an interrupted build never leaves a half-made dist.
"""
import argparse
import os
import shutil
import sys
import tempfile

from builder import cpio, fetch, machines, repodata, rpmfile
from launcher.errors import CvmfsexecError, UsageError

FLAVOURS = ("osg", "egi", "default", "none")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DIST = os.path.join(ROOT, "dist")
WLCG_PACS = {"fnal": "http://cernvm-wpad.fnal.gov/wpad.dat",
             "cern": "http://cernvm-wpad.cern.ch/wpad.dat"}
LOCAL_PACS = "http://grid-wpad/wpad.dat;http://wpad/wpad.dat"


class Spec(object):
    """One package to put into dist: where to look for it and whether it must exist."""

    def __init__(self, name, repos, values, why, required=True, same_as=None):
        self.name = name
        self.repos = repos if isinstance(repos, tuple) else (repos,)
        self.values = values
        self.why = why
        self.required = required
        self.same_as = same_as    # take the same version-release, from the same repository

    def __repr__(self):
        return "Spec(%s from %s)" % (self.name, "/".join(self.repos))


def plan(machine, flavour, sing):
    """[Spec] for a machine type, configuration flavour and dist type (sing: fuse3)."""
    m = machine
    native = dict(el=m.el, arch=m.arch, version=m.version)
    # Configuration packages are noarch; upstream takes them from the x86_64 trees.
    config = dict(el=m.el, arch="x86_64", version=m.version)
    cvmfs_repo = "cvmfs-sle" if m.distro == "suse" else "cvmfs"
    specs = [Spec("cvmfs", cvmfs_repo, native, "cvmfs client"),
             Spec("cvmfs-libs", cvmfs_repo, native, "cvmfs client libraries (cvmfs >= 2.10)",
                  required=False, same_as="cvmfs")]
    fuse3 = sing or (m.distro == "rhel" and m.version >= 9)
    if fuse3:
        specs.append(Spec("cvmfs-fuse3", cvmfs_repo, native, "cvmfs FUSE3 library",
                          same_as="cvmfs"))
    specs.append(fuse_library(m, fuse3, native))
    if flavour in ("osg", "egi"):
        specs.append(Spec("cvmfs-config-" + flavour, flavour, config, "configuration"))
        # The helpers exist for x86_64; elsewhere take them when a repository has them.
        needed = m.arch == "x86_64"
        specs.append(Spec("cvmfs-x509-helper", flavour, native,
                          "authz helper for x509/scitokens repositories", required=needed))
        specs.append(Spec("scitokens-cpp", "epel", native,
                          "library of the authz helper", required=needed))
    elif flavour == "default":
        specs.append(Spec("cvmfs-config-default", "cvmfs", config, "configuration"))
    return specs


def fuse_library(m, fuse3, values):
    if m.distro == "suse":
        return Spec("libfuse3-3" if fuse3 else "libfuse2", "suse-oss", values, "FUSE library")
    if m.version == 7:
        if fuse3:
            return Spec("fuse3-libs", "epel-archive", values, "FUSE3 library")
        return Spec("fuse-libs", "centos-vault", values, "FUSE library")
    name = "fuse3-libs" if fuse3 else "fuse-libs"
    return Spec(name, ("baseos", "appstream"), values, "FUSE library")


class Resolver(object):
    """Finds each Spec's package in the repositories (each repository read once)."""

    def __init__(self, fetcher, overrides, arch, version=None, out=None):
        self.fetcher = fetcher
        self.overrides = overrides
        self.arches = [arch, "noarch"]
        self.version = version
        self.repos = {}
        self.out = out or sys.stdout

    def packages(self, url):
        if url not in self.repos:
            self.out.write("Reading %s\n" % url)
            self.repos[url] = repodata.load_repository(self.fetcher, url)[0]
        return self.repos[url]

    def resolve(self, specs):
        chosen = {}
        order = []
        for spec in specs:
            pkg = self.find(spec, chosen)
            if pkg is None:
                continue
            chosen[spec.name] = pkg
            order.append(pkg)
        return order

    def find(self, spec, chosen):
        if spec.same_as:
            base = chosen[spec.same_as]
            urls = [base.repo_url]
            version = base.vr
        else:
            urls = [machines.repo_url(r, self.overrides, **spec.values) for r in spec.repos]
            version = self.version if spec.name == "cvmfs" else None
        for url in urls:
            try:
                available = self.packages(url)
            except CvmfsexecError as e:
                if spec.required:
                    raise
                self.out.write("Note: skipping optional %s: %s\n" % (spec.name, e.message))
                return None
            pkg = repodata.newest(available, spec.name, self.arches, version)
            if pkg is not None:
                return pkg
        required = spec.required
        if spec.name == "cvmfs-libs":      # split out of cvmfs in 2.10
            required = repodata.rpmvercmp(chosen["cvmfs"].version, "2.10") >= 0
        if not required:
            if spec.name != "cvmfs-libs":
                self.out.write("Note: optional %s not found in %s; skipped\n"
                               % (spec.name, " or ".join(urls)))
            return None
        raise self.missing(spec, urls, version)

    def missing(self, spec, urls, version):
        where = " or ".join(urls)
        if version:
            have = sorted(set(p.vr for url in urls for p in self.packages(url)
                              if p.name == spec.name and p.arch in self.arches))
            return CvmfsexecError("package %s version %s not found in repository %s"
                                  % (spec.name, version, where),
                                  "available: %s" % (", ".join(have) or "none"))
        return CvmfsexecError("package %s (%s) not found in repository %s for %s"
                              % (spec.name, spec.why, where, "/".join(self.arches)),
                              "check the machine type, or point the repository elsewhere "
                              "with --repo-url NAME=URL")


def default_local(flavour):
    """etc/cvmfs/default.local: proxy auto-discovery; FNAL's WPAD first for osg, else CERN's."""
    order = ("fnal", "cern") if flavour == "osg" else ("cern", "fnal")
    pacs = ";".join([LOCAL_PACS] + [WLCG_PACS[k] for k in order])
    return 'CVMFS_HTTP_PROXY="auto;DIRECT"\nCVMFS_PAC_URLS="%s"\n' % pacs


def distinfo(sing, machine, flavour, cvmfs_version, rpms):
    lines = ["disttype: %s" % ("sing" if sing else "standard"),
             "machtype: %s" % machine.name,
             "flavour: %s" % flavour,
             "cvmfsversion: %s" % cvmfs_version]
    for filename, digest in rpms:
        lines.append("rpm: %s sha256:%s" % (filename, digest))
    return "\n".join(lines) + "\n"


def make_dist(dist, machine, flavour, sing=False, version=None, force=False, overrides=None,
              fetcher=None, out=None):
    """Build ``dist``; returns a dict summary (packages, downloads, cache hits)."""
    out = out or sys.stdout
    machine.check_flavour(flavour)
    dist = os.path.abspath(dist)
    if os.path.lexists(dist) and not force:
        raise CvmfsexecError("%s already exists" % dist,
                             "remove it, or use -f/--force to replace it, or --dist DIR")
    own_fetcher = fetcher is None
    fetcher = fetcher or fetch.Fetcher()
    out.write("Making %s%s distribution for %s\n"
              % ("singcvmfs " if sing else "", flavour, machine.name))
    try:
        resolver = Resolver(fetcher, overrides or {}, machine.arch, version, out)
        packages = resolver.resolve(plan(machine, flavour, sing))
        files = [download(fetcher, p, out) for p in packages]
    finally:
        if own_fetcher:
            fetcher.close()
    try:
        build_tree(dist, force, machine, flavour, sing, packages, files, out)
    except OSError as e:
        raise CvmfsexecError("writing the dist failed: %s: %s" % (e.filename or dist, e.strerror),
                             "check that %s is writable and has free space"
                             % os.path.dirname(dist))
    out.write("Made %s from %d packages (%d files downloaded, %d taken from the cache)\n"
              % (dist, len(files), fetcher.downloads, fetcher.cache_hits))
    return {"packages": packages, "downloads": fetcher.downloads, "cache_hits": fetcher.cache_hits}


def build_tree(dist, force, machine, flavour, sing, packages, files, out):
    """Unpack ``files`` and our configuration into a work directory, then install it as dist."""
    parent = os.path.dirname(dist)
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".dist-", dir=parent)
    try:
        ex = cpio.Extractor(work)
        for pkg, path in files:
            out.write("Extracting %s\n" % pkg.filename)
            rpm = rpmfile.RpmFile(path)
            with rpm.open_payload() as payload:
                ex.extract(payload, pkg.filename)
        cvmfs = packages[0]
        ex.add_file("etc/os-release", machine.os_release().encode())
        ex.add_file("etc/cvmfs/default.local", default_local(flavour).encode())
        ex.add_file(".cvmfsexecdist", distinfo(
            sing, machine, flavour, cvmfs.vr,
            [(p.filename, fetch.file_digest(path, "sha256")) for p, path in files]).encode())
        ex.finish()
        os.chmod(work, 0o755)
        install(work, dist, force)
    except BaseException:
        remove_tree(work)
        raise


def download(fetcher, pkg, out):
    """(pkg, path) of the verified package file; checks the RPM is what the metadata said."""
    path = fetcher.download(pkg.url, size=pkg.size, checksum=pkg.checksum,
                            checksum_type=pkg.checksum_type or "sha256")
    try:
        rpm = rpmfile.RpmFile(path)
        rpm.verify_digests()
    except CvmfsexecError as e:
        if pkg.checksum is None:
            os.unlink(path)   # cached by URL only: do not keep a bad copy
        raise CvmfsexecError("%s (downloaded from %s)" % (e.message, pkg.url), e.hint)
    if (rpm.name, rpm.version, rpm.release) != (pkg.name, pkg.version, pkg.release):
        raise CvmfsexecError("%s contains %s-%s-%s, not %r as the repository says"
                             % (pkg.url, rpm.name, rpm.version, rpm.release, pkg))
    return pkg, path


def install(work, dist, force):
    """Rename the finished work directory to ``dist``, replacing an old one only if forced."""
    old = None
    if os.path.lexists(dist):
        if not force:
            raise CvmfsexecError("%s appeared while building" % dist,
                                 "use -f/--force to replace it")
        old = tempfile.mkdtemp(prefix=".dist-old-", dir=os.path.dirname(dist))
        os.rename(dist, os.path.join(old, "dist"))
    try:
        os.rename(work, dist)
    except OSError as e:
        raise CvmfsexecError("cannot rename %s to %s: %s" % (work, dist, e.strerror))
    if old:
        remove_tree(old)


def remove_tree(path):
    def onerror(func, p, _exc):
        try:   # read-only directories from the packages: make them writable and retry
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass
    if os.path.lexists(path):
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=onerror)
        else:
            shutil.rmtree(path, onerror=onerror)


# --- command line ---------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message, "see python3 build.py --help")


def parser():
    p = _Parser(prog="build.py", description="Make dist/: the cvmfs client, its FUSE libraries "
                "and a configuration, from yum repositories. (build.py -o FILE makes the "
                "self-extracting file from dist/; build.py publish ... publishes a repository.)")
    p.add_argument("flavour", choices=FLAVOURS, metavar="{osg,egi,default,none}",
                   help="configuration: cvmfs-config-osg, -egi, -default, or none")
    p.add_argument("-s", "--sing", action="store_true",
                   help="make a singcvmfs dist (cvmfs-fuse3 and the fuse3 library)")
    p.add_argument("-m", "--machine", metavar="MACHTYPE",
                   help="target machine type (default: this host): %s"
                   % " ".join(machines.MACHINE_TYPES))
    p.add_argument("-v", "--cvmfs-version", metavar="VERSION",
                   help="exact cvmfs version (2.13.1 or 2.13.1-1.el9) instead of the newest")
    p.add_argument("--dist", metavar="DIR", default=DEFAULT_DIST,
                   help="where to make the dist (default: dist beside build.py)")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing dist")
    p.add_argument("--repo-url", action="append", default=[], metavar="NAME=URL",
                   help="use URL for repository NAME (may contain {el} {arch} {version}); "
                   "names: %s" % " ".join(machines.BASE_URLS))
    return p


def main(argv):
    args = parser().parse_args(argv)
    machine = machines.Machine(args.machine or machines.detect_host())
    overrides = machines.parse_overrides(args.repo_url)
    make_dist(args.dist, machine, args.flavour, sing=args.sing, version=args.cvmfs_version,
              force=args.force, overrides=overrides)
    return 0

