"""Yum repository metadata: repomd.xml, primary metadata, RPM version comparison.

A repository is read from ``repodata/repomd.xml`` and the primary metadata it
names (gzip, xz, zstd or bzip2 compressed, checksum-verified).  Only where a
repository has no repodata do we fall back to the package links of its HTML
index; such packages carry no checksum and are verified through the digests
inside the RPM (see builder.rpmfile).
"""
import bz2
import gzip
import html
import io
import lzma
import re
import urllib.parse
import xml.etree.ElementTree as ET

from launcher.errors import CvmfsexecError

NS_REPO = "{http://linux.duke.edu/metadata/repo}"
NS_COMMON = "{http://linux.duke.edu/metadata/common}"


class RepoError(CvmfsexecError):
    pass


# --- RPM version comparison (rpmvercmp semantics, including ~ and ^) -----------
_SEGMENT = re.compile(r"(\d+|[a-zA-Z]+|~|\^)")


def rpmvercmp(a, b):
    """-1, 0 or 1 as RPM orders version (or release) strings: 2.13.0 > 2.9.4, 1.0~rc1 < 1.0."""
    if a == b:
        return 0
    sa, sb = _segments(a), _segments(b)
    i = 0
    while True:
        x = sa[i] if i < len(sa) else None
        y = sb[i] if i < len(sb) else None
        i += 1
        # tilde sorts before everything, even the end of the string
        if x == "~" or y == "~":
            if x != y:
                return -1 if x == "~" else 1
            continue
        # caret sorts after the end of the string but before anything else
        if x == "^" or y == "^":
            if x == y:
                continue
            if x is None:
                return -1
            if y is None:
                return 1
            return -1 if x == "^" else 1
        if x is None or y is None:
            if x is None and y is None:
                return 0
            return -1 if x is None else 1
        if x.isdigit() != y.isdigit():
            return 1 if x.isdigit() else -1     # numeric segments are newer than alpha
        if x.isdigit():
            x, y = int(x), int(y)
        if x != y:
            return 1 if x > y else -1


def _segments(s):
    return _SEGMENT.findall(s)


def compare_evr(a, b):
    """Compare (epoch, version, release) tuples the way rpm does."""
    ea, eb = int(a[0] or 0), int(b[0] or 0)
    if ea != eb:
        return 1 if ea > eb else -1
    return rpmvercmp(a[1], b[1]) or rpmvercmp(a[2] or "", b[2] or "")


class _EvrKey(object):
    __slots__ = ("evr",)

    def __init__(self, evr):
        self.evr = evr

    def __lt__(self, other):
        return compare_evr(self.evr, other.evr) < 0

    def __eq__(self, other):
        return compare_evr(self.evr, other.evr) == 0


# --- packages and repositories --------------------------------------------------
class Package(object):
    """One package of a repository; ``checksum`` is None for HTML-index repositories."""

    def __init__(self, name, epoch, version, release, arch, location, repo_url,
                 checksum=None, checksum_type=None, size=None):
        self.name = name
        self.epoch = int(epoch or 0)
        self.version = version
        self.release = release
        self.arch = arch
        self.location = location
        self.repo_url = repo_url
        self.checksum = checksum
        self.checksum_type = checksum_type
        self.size = size

    @property
    def evr(self):
        return (self.epoch, self.version, self.release)

    @property
    def vr(self):
        return "%s-%s" % (self.version, self.release)

    @property
    def filename(self):
        return self.location.rsplit("/", 1)[-1]

    @property
    def url(self):
        return self.repo_url + "/" + self.location

    def __repr__(self):
        epoch = "%d:" % self.epoch if self.epoch else ""
        return "%s-%s%s-%s.%s" % (self.name, epoch, self.version, self.release, self.arch)


def newest(packages, name, arches, version=None):
    """The newest package called ``name`` for one of ``arches``, or None.

    ``version`` restricts the choice to an exact version ("2.13.1") or
    version-release ("2.13.1-1.el9").
    """
    found = [p for p in packages if p.name == name and p.arch in arches]
    if version:
        found = [p for p in found if version in (p.version, p.vr)]
    if not found:
        return None
    return max(found, key=lambda p: (_EvrKey(p.evr), -arches.index(p.arch)))


def decompress(data, name):
    """Decompress metadata by its magic bytes (the file name is only a hint)."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if name.endswith((".gz", ".xz", ".zst", ".bz2")):
        raise RepoError("cannot decompress %s: unknown format" % name)
    return data


def parse_repomd(data, url):
    """(location, checksum, checksum_type, size) of the primary metadata named in repomd.xml."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise RepoError("%s is not valid repomd.xml: %s" % (url, e))
    for node in root.findall(NS_REPO + "data"):
        if node.get("type") != "primary":
            continue
        loc = node.find(NS_REPO + "location")
        csum = node.find(NS_REPO + "checksum")
        size = node.find(NS_REPO + "size")
        if loc is None or csum is None:
            break
        return (loc.get("href"), csum.text.strip(), csum.get("type"),
                int(size.text) if size is not None else None)
    raise RepoError("%s names no primary metadata" % url)


def parse_primary(data, repo_url):
    """[Package] from primary.xml bytes."""
    packages = []
    try:
        for _event, node in ET.iterparse(io.BytesIO(data)):
            if node.tag != NS_COMMON + "package":
                continue
            if node.get("type", "rpm") == "rpm":
                packages.append(_package_from_xml(node, repo_url))
            node.clear()
    except ET.ParseError as e:
        raise RepoError("primary metadata of %s is not valid XML: %s" % (repo_url, e))
    return packages


def _package_from_xml(node, repo_url):
    ver = node.find(NS_COMMON + "version")
    csum = node.find(NS_COMMON + "checksum")
    size = node.find(NS_COMMON + "size")
    loc = node.find(NS_COMMON + "location")
    href = loc.get("href")
    base = loc.get("{http://www.w3.org/XML/1998/namespace}base") or loc.get("base")
    url = repo_url
    if base:   # packages stored elsewhere (xml:base), rare in practice
        url = base.rstrip("/")
    return Package(node.findtext(NS_COMMON + "name"), ver.get("epoch"), ver.get("ver"),
                   ver.get("rel"), node.findtext(NS_COMMON + "arch"), href, url,
                   csum.text.strip() if csum is not None else None,
                   csum.get("type") if csum is not None else None,
                   int(size.get("package")) if size is not None and size.get("package") else None)


_HREF = re.compile(r"""href\s*=\s*["']([^"'#?]+\.rpm)["']""", re.I)
_NEVRA = re.compile(r"^(?P<name>.+)-(?P<ver>[^-]+)-(?P<rel>[^-]+)\.(?P<arch>[^.]+)\.rpm$")


def parse_html_index(text, repo_url):
    """[Package] from the .rpm links of an HTML directory listing (no checksums)."""
    packages = []
    seen = set()
    for href in _HREF.findall(text):
        href = html.unescape(href)
        rel = urllib.parse.urlsplit(href).path
        if href.startswith(("http://", "https://", "/")):
            continue   # only links inside this directory
        filename = urllib.parse.unquote(rel.rsplit("/", 1)[-1])
        m = _NEVRA.match(filename)
        if not m or rel in seen:
            continue
        seen.add(rel)
        packages.append(Package(m.group("name"), 0, m.group("ver"), m.group("rel"),
                                m.group("arch"), rel, repo_url))
    return packages


def load_repository(fetcher, repo_url):
    """(packages, has_repodata) of the repository at ``repo_url``."""
    repomd_url = repo_url + "/repodata/repomd.xml"
    repomd = fetcher.get(repomd_url, missing_ok=True)
    if repomd is None:
        index = fetcher.get(repo_url + "/", missing_ok=True)
        if index is None:
            raise RepoError("no repository at %s: neither %s nor an index page exists"
                            % (repo_url, repomd_url),
                            "check the URL (--repo-url NAME=URL)")
        text = index.decode("utf-8", "replace")
        packages = parse_html_index(text, repo_url)
        if not packages and re.search(r"""href\s*=\s*["']Packages/["']""", text):
            # yum trees keep the packages one level down (os/Packages/)
            sub = fetcher.get(repo_url + "/Packages/", missing_ok=True) or b""
            packages = parse_html_index(sub.decode("utf-8", "replace"), repo_url + "/Packages")
        return packages, False
    href, csum, ctype, size = parse_repomd(repomd, repomd_url)
    path = fetcher.download(repo_url + "/" + href, size=size, checksum=csum, checksum_type=ctype)
    with open(path, "rb") as f:
        data = decompress(f.read(), href)
    return parse_primary(data, repo_url), True
