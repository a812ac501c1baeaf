"""build.py makedist against real RPMs (rpmbuild) in real yum repositories (createrepo_c)
served over real HTTP on 127.0.0.1."""
import hashlib
import http.server
import io
import os
import shutil
import stat
import subprocess
import sys
import threading

import pytest

import rpmfactory as rf
from conftest import ROOT
from builder import cpio, fetch, machines, makedist, repodata, rpmfile
from launcher.errors import CvmfsexecError, UsageError

pytestmark = pytest.mark.skipif(rf.tools_missing() is not None, reason=str(rf.tools_missing()))

BUILD_PY = os.path.join(ROOT, "build.py")
REPO_NAMES = list(machines.BASE_URLS)


def cvmfs_pkgs(version, payload, libs=True, arch="x86_64"):
    """cvmfs + cvmfs-libs + cvmfs-fuse3 of one version, shaped like the real ones."""
    rel = "1.el9"
    main = rf.Pkg("cvmfs", version, rel, arch=arch, payload=payload)
    main.file("/usr/bin/cvmfs2", b"#!/bin/sh\necho cvmfs2 %s\n" % version.encode(), 0o755)
    main.file("/usr/bin/cvmfs_config", b"#!/bin/sh\n", 0o755)
    main.dir("/etc/cvmfs/default.d", 0o755)
    main.file("/etc/cvmfs/default.conf", b"CVMFS_CACHE_BASE=/var/lib/cvmfs\n")
    main.dir("/var/lib/cvmfs", 0o700)
    main.file("/usr/lib/.build-id/3f/0123456789abcdef", b"debug link\n")
    # a read-only directory that still gets files (modes applied after filling)
    main.dir("/usr/libexec/cvmfs/authz", 0o555)
    main.file("/usr/libexec/cvmfs/authz/cvmfs_allow_helper", b"#!/bin/sh\n", 0o755)
    # hardlinks: one inode, two names
    main.file("/usr/share/cvmfs/server.conf", b"shared content\n", 0o640)
    main.hardlink("/usr/share/cvmfs/client.conf", "/usr/share/cvmfs/server.conf")
    out = [main]
    lib = rf.Pkg("cvmfs-libs", version, rel, arch=arch, payload=payload)
    lib.file("/usr/lib64/libcvmfs_fuse.so.%s" % version, b"ELF-ish fuse2 " + version.encode(),
             0o755)
    lib.symlink("/usr/lib64/libcvmfs_fuse.so.2", "libcvmfs_fuse.so.%s" % version)
    lib.symlink("/usr/lib64/libcvmfs_fuse.so", "libcvmfs_fuse.so.2")
    if libs:
        out.append(lib)
    else:
        main.entries.extend(lib.entries)
    fuse3 = rf.Pkg("cvmfs-fuse3", version, rel, arch=arch, payload=payload)
    fuse3.file("/usr/lib64/libcvmfs_fuse3.so.%s" % version, b"ELF-ish fuse3", 0o755)
    fuse3.symlink("/usr/lib64/libcvmfs_fuse3.so.2", "libcvmfs_fuse3.so.%s" % version)
    # absolute target: must be rewritten to stay inside dist
    fuse3.symlink("/usr/lib64/libcvmfs_fuse3.so", "/usr/lib64/libcvmfs_fuse3.so.%s" % version)
    out.append(fuse3)
    return out


def config_osg(version, payload):
    p = rf.Pkg("cvmfs-config-osg", version, "1.osg24.el9", arch="noarch", payload=payload)
    p.file("/etc/cvmfs/default.d/60-osg.conf", b"CVMFS_CONFIG_REPOSITORY=config-osg.opensciencegrid.org\n")
    p.dir("/etc/cvmfs/keys/opensciencegrid.org", 0o755)
    p.file("/etc/cvmfs/keys/opensciencegrid.org/opensciencegrid.org.pub", b"-----BEGIN PUBLIC KEY-----\n")
    p.symlink("/etc/cvmfs/keys/osg.pub", "/etc/cvmfs/keys/opensciencegrid.org/opensciencegrid.org.pub")
    return p


@pytest.fixture(scope="session")
def repos(tmp_path_factory):
    """The repository tree, built once: {name: directory}, plus 'root'."""
    base = tmp_path_factory.mktemp("repos")
    work = tmp_path_factory.mktemp("rpmbuild")
    pkgs = {"cvmfs": cvmfs_pkgs("2.9.4", "gzip", libs=False) + cvmfs_pkgs("2.13.0", "xz") +
            cvmfs_pkgs("2.13.1", "zstd") + cvmfs_pkgs("2.13.1", "gzip", arch="aarch64"),
            "osg": [config_osg("2.5", "gzip"), config_osg("2.6", "xz"),
                    # epoch 1 beats the higher version 2.4 with epoch 0
                    rf.Pkg("cvmfs-x509-helper", "2.2", "1.osg24.el9", epoch=1, payload="bzip2")
                    .file("/usr/libexec/cvmfs/authz/cvmfs_x509_helper", b"#!/bin/sh\n", 0o755),
                    rf.Pkg("cvmfs-x509-helper", "2.4", "1.osg24.el9", payload="bzip2")
                    .file("/usr/libexec/cvmfs/authz/cvmfs_x509_helper", b"#!/bin/sh\nnewer\n", 0o755)],
            "baseos": [rf.Pkg("fuse-libs", "2.9.7", "19.el8").file("/usr/lib64/libfuse.so.2.9.7", b"f2", 0o755)
                       .symlink("/usr/lib64/libfuse.so.2", "libfuse.so.2.9.7")],
            "appstream": [rf.Pkg("fuse3-libs", v, "1.el9", payload="gzip")
                          .file("/usr/lib64/libfuse3.so.%s" % v, b"f3 " + v.encode(), 0o755)
                          .symlink("/usr/lib64/libfuse3.so.3", "libfuse3.so.%s" % v)
                          for v in ("3.9.4", "3.10.2")] +
                         [rf.Pkg("fuse3-libs", "3.10.2", "1.el9", arch="aarch64")
                          .file("/usr/lib64/libfuse3.so.3.10.2", b"arm", 0o755)],
            "epel": [rf.Pkg("scitokens-cpp", "1.1.2", "1.el9", payload="zstd")
                     .file("/usr/lib64/libSciTokens.so.0.0.2", b"st", 0o755)
                     .symlink("/usr/lib64/libSciTokens.so.0", "libSciTokens.so.0.0.2")],
            "cvmfs-config": [rf.Pkg("cvmfs-config-default", "2.2", "1", arch="noarch", payload="xz")
                             .file("/etc/cvmfs/default.d/50-cern.conf", b"CVMFS_USE_CDN=yes\n")],
            "evil": [rf.Pkg("fuse3-libs", "9.9", "1.el9", payload="none")
                     .file("/zz/escape", b"written outside dist\n")]}
    flat = [p for group in pkgs.values() for p in group]
    built = rf.build(flat, str(work / "out"), str(work))
    dirs = {"root": str(base)}
    for name, group in pkgs.items():
        d = base / name
        d.mkdir()
        for p in group:
            shutil.copy(built[p.filename], str(d / p.filename))
        dirs[name] = str(d)
    rf.patch_payload(os.path.join(dirs["evil"], "fuse3-libs-9.9-1.el9.x86_64.rpm"),
                     b"./zz/escape\0", b"./../escape\0")
    shutil.copy(os.path.join(dirs["cvmfs-config"], "cvmfs-config-default-2.2-1.noarch.rpm"),
                dirs["cvmfs"])
    # every metadata compression upstream uses; epel stays HTML-only (no repodata)
    for name, comp in (("cvmfs", "xz"), ("osg", "zstd"), ("baseos", "bz2"),
                       ("appstream", "gz"), ("evil", "gz")):
        rf.make_repo(dirs[name], comp)
    (base / "egi").mkdir()
    rf.make_repo(str(base / "egi"))
    dirs["egi"] = str(base / "egi")
    return dirs


def overrides_for(url):
    """--repo-url arguments pointing every repository into the served tree."""
    names = {"cvmfs": "cvmfs", "cvmfs-sle": "cvmfs", "osg": "osg", "egi": "egi", "epel": "epel",
             "epel-archive": "epel", "baseos": "baseos", "appstream": "appstream",
             "centos-vault": "baseos", "suse-oss": "baseos"}
    return {name: "%s/%s" % (url, names[name]) for name in REPO_NAMES}


@pytest.fixture
def served(repos, http_server):
    return http_server(repos["root"])


def run_build(tmp_path, url, *args, env_overrides=True):
    """Run build.py as a user does; overrides go through the environment and --repo-url."""
    env = dict(os.environ, CVMFSEXEC_DOWNLOAD_CACHE=str(tmp_path / "cache"))
    argv = [sys.executable, BUILD_PY]
    for i, (name, value) in enumerate(sorted(overrides_for(url).items())):
        if env_overrides and i % 2:
            env[machines.env_name(name)] = value
        else:
            argv += ["--repo-url", "%s=%s" % (name, value)]
    return subprocess.run(argv + list(args), capture_output=True, text=True, env=env, timeout=120)


def build(tmp_path, url, flavour, machine="rhel9-x86_64", dist=None, **kw):
    """make_dist in-process; returns (dist path, summary)."""
    dist = dist or str(tmp_path / "dist")
    fetcher = fetch.Fetcher(cache_dir=str(tmp_path / "cache"), backoff=0.01)
    summary = makedist.make_dist(dist, machines.Machine(machine), flavour,
                                 overrides=overrides_for(url), fetcher=fetcher,
                                 out=io.StringIO(), **kw)
    return dist, summary


def distinfo(dist):
    info = {"rpm": []}
    with open(os.path.join(dist, ".cvmfsexecdist")) as f:
        for line in f:
            key, value = line.rstrip("\n").split(": ", 1)
            if key == "rpm":
                info["rpm"].append(value.split()[0])
            else:
                info[key] = value
    return info


def assert_tree_matches(dist, rpm_paths):
    """dist holds exactly the RPMs' files (rpm -qp as the oracle), modes and links included."""
    expected = {}
    for path in rpm_paths:
        for name, mode, link in rf.rpm_contents(path):
            if "/.build-id/" in name:
                assert not os.path.lexists(dist + name), "build-id entry extracted: " + name
                continue
            expected[name] = (mode, link)
    ours = {"/.cvmfsexecdist", "/etc/os-release", "/etc/cvmfs/default.local"}
    for name, (mode, link) in expected.items():
        st = os.lstat(dist + name)
        assert st.st_mode == mode, "%s: mode %o, rpm says %o" % (name, st.st_mode, mode)
        if stat.S_ISLNK(mode):
            target = os.readlink(dist + name)
            if link.startswith("/"):
                assert not target.startswith("/"), "absolute symlink kept: %s" % name
                assert os.path.realpath(dist + name) == os.path.realpath(dist + link)
            else:
                assert target == link
    for top, dirs, files in os.walk(dist):
        for n in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            rel = os.path.join(top, n)[len(dist):]
            assert rel in expected or rel in ours, "unexpected file in dist: " + rel


def test_osg_rhel9_build_py(repos, served, tmp_path):
    """The issue's acceptance run: python3 build.py -m rhel9-x86_64 osg against the test repos."""
    dist = str(tmp_path / "dist")
    r = run_build(tmp_path, served.url, "-m", "rhel9-x86_64", "--dist", dist, "osg")
    assert r.returncode == 0, r.stderr
    info = distinfo(dist)
    assert info["disttype"] == "standard" and info["machtype"] == "rhel9-x86_64"
    assert info["flavour"] == "osg" and info["cvmfsversion"] == "2.13.1-1.el9"  # not 2.9.4
    assert sorted(info["rpm"]) == sorted([
        "cvmfs-2.13.1-1.el9.x86_64.rpm", "cvmfs-libs-2.13.1-1.el9.x86_64.rpm",
        "cvmfs-fuse3-2.13.1-1.el9.x86_64.rpm", "fuse3-libs-3.10.2-1.el9.x86_64.rpm",
        "cvmfs-config-osg-2.6-1.osg24.el9.noarch.rpm",
        "cvmfs-x509-helper-2.2-1.osg24.el9.x86_64.rpm",        # epoch 1 wins over 2.4
        "scitokens-cpp-1.1.2-1.el9.x86_64.rpm"])                # from the HTML-only repo
    paths = [os.path.join(repos[d], f) for f in info["rpm"] for d in ("cvmfs", "osg", "appstream",
             "epel") if os.path.exists(os.path.join(repos[d], f))]
    assert len(paths) == 7
    assert_tree_matches(dist, paths)
    # the sha256 recorded for each RPM is the RPM's
    with open(os.path.join(dist, ".cvmfsexecdist")) as f:
        recorded = dict(line.split()[1:] for line in f if line.startswith("rpm: "))
    for p in paths:
        assert recorded[os.path.basename(p)] == "sha256:" + fetch.file_digest(p, "sha256")
    a, b = (os.stat(os.path.join(dist, "usr/share/cvmfs", n)) for n in ("server.conf", "client.conf"))
    assert (a.st_ino, a.st_nlink) == (b.st_ino, 2)
    assert os.readlink(os.path.join(dist, "usr/lib64/libcvmfs_fuse3.so")) == \
        "../../usr/lib64/libcvmfs_fuse3.so.2.13.1"
    with open(os.path.join(dist, "etc/cvmfs/default.local")) as f:
        assert f.read() == ('CVMFS_HTTP_PROXY="auto;DIRECT"\nCVMFS_PAC_URLS="http://grid-wpad/'
                            'wpad.dat;http://wpad/wpad.dat;http://cernvm-wpad.fnal.gov/wpad.dat;'
                            'http://cernvm-wpad.cern.ch/wpad.dat"\n')
    with open(os.path.join(dist, "etc/os-release")) as f:
        assert f.read() == 'ID_LIKE="rhel"\nVERSION_ID="9"\n'
    # and it refuses to overwrite it
    r = run_build(tmp_path, served.url, "-m", "rhel9-x86_64", "--dist", dist, "default")
    assert r.returncode == 1 and "already exists" in r.stderr and "--force" in r.stderr
    assert "Traceback" not in r.stderr


def test_force_replaces_and_default_flavour_puts_cern_first(served, tmp_path):
    dist, _ = build(tmp_path, served.url, "osg")
    with pytest.raises(CvmfsexecError, match="already exists"):
        build(tmp_path, served.url, "default", dist=dist)
    build(tmp_path, served.url, "default", dist=dist, force=True)
    info = distinfo(dist)
    assert info["flavour"] == "default"
    assert "cvmfs-config-default-2.2-1.noarch.rpm" in info["rpm"]
    assert not os.path.exists(os.path.join(dist, "etc/cvmfs/default.d/60-osg.conf"))
    with open(os.path.join(dist, "etc/cvmfs/default.local")) as f:
        assert "wpad.dat;http://cernvm-wpad.cern.ch/wpad.dat;http://cernvm-wpad.fnal" in f.read()
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith(".dist")] == []


def test_cvmfs_version_option(served, tmp_path):
    dist, summary = build(tmp_path, served.url, "none", version="2.13.0")
    assert sorted(repr(p) for p in summary["packages"]) == [
        "cvmfs-2.13.0-1.el9.x86_64", "cvmfs-fuse3-2.13.0-1.el9.x86_64",
        "cvmfs-libs-2.13.0-1.el9.x86_64", "fuse3-libs-3.10.2-1.el9.x86_64"]
    # before 2.10 there was no cvmfs-libs: its absence is fine
    _, summary = build(tmp_path, served.url, "none", version="2.9.4", dist=str(tmp_path / "d2"))
    assert [p.name for p in summary["packages"]][:2] == ["cvmfs", "cvmfs-fuse3"]
    with pytest.raises(CvmfsexecError) as e:
        build(tmp_path, served.url, "none", version="2.11.0", dist=str(tmp_path / "d3"))
    assert "cvmfs version 2.11.0 not found" in e.value.message
    assert "2.13.1-1.el9" in e.value.hint and "2.9.4-1.el9" in e.value.hint


def test_none_and_sing_dists(served, tmp_path):
    """none: no configuration package; -s: fuse3 even where fuse2 is the default (rhel8)."""
    dist, summary = build(tmp_path, served.url, "none", machine="rhel8-x86_64")
    names = [p.name for p in summary["packages"]]
    assert names == ["cvmfs", "cvmfs-libs", "fuse-libs"]
    assert distinfo(dist)["disttype"] == "standard"
    assert os.path.exists(os.path.join(dist, "etc/cvmfs/default.local"))
    assert not os.path.exists(os.path.join(dist, "etc/cvmfs/default.d/60-osg.conf"))
    with open(os.path.join(dist, "etc/os-release")) as f:
        assert 'VERSION_ID="8"' in f.read()
    dist, summary = build(tmp_path, served.url, "none", machine="rhel8-x86_64", sing=True,
                          dist=str(tmp_path / "sing"))
    assert [p.name for p in summary["packages"]] == ["cvmfs", "cvmfs-libs", "cvmfs-fuse3",
                                                      "fuse3-libs"]
    assert distinfo(dist)["disttype"] == "sing"
    assert os.readlink(os.path.join(dist, "usr/lib64/libfuse3.so.3")) == "libfuse3.so.3.10.2"


def test_second_run_downloads_nothing(repos, http_server, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(repos["root"], str(mirror))
    server = http_server(str(mirror))
    _, first = build(tmp_path, server.url, "osg")
    assert first["downloads"] >= 7 and first["cache_hits"] == 0
    for top, _dirs, files in os.walk(str(mirror)):      # the packages are gone upstream...
        for n in files:
            if n.endswith(".rpm"):
                if os.path.basename(top) == "epel":     # (listed by the HTML index: garbage)
                    with open(os.path.join(top, n), "wb") as f:
                        f.write(b"garbage")
                else:
                    os.unlink(os.path.join(top, n))
    _, second = build(tmp_path, server.url, "osg", dist=str(tmp_path / "again"))
    assert second["downloads"] == 0                     # ...and not needed
    assert second["cache_hits"] == first["downloads"]


def test_corrupted_download_fails_and_is_not_kept(repos, http_server, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(repos["root"], str(mirror))
    victim = mirror / "cvmfs" / "cvmfs-2.13.1-1.el9.x86_64.rpm"
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF                                   # same size, different content
    victim.write_bytes(bytes(data))
    server = http_server(str(mirror))
    with pytest.raises(fetch.ChecksumError) as e:
        build(tmp_path, server.url, "osg")
    good = fetch.file_digest(os.path.join(repos["cvmfs"], victim.name), "sha256")
    bad = hashlib.sha256(bytes(data)).hexdigest()
    msg = e.value.message
    assert server.url + "/cvmfs/" + victim.name in msg and good in msg and bad in msg
    cached = [n for _t, _d, files in os.walk(str(tmp_path / "cache")) for n in files]
    assert not any(victim.name in n for n in cached)
    assert not os.path.exists(str(tmp_path / "dist"))


def test_missing_package_names_repository_and_package(served, tmp_path):
    r = run_build(tmp_path, served.url, "-m", "rhel9-x86_64", "--dist", str(tmp_path / "d"), "egi")
    assert r.returncode == 1, r.stderr
    assert "cvmfs-config-egi" in r.stderr and served.url + "/egi" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_rpm_with_dotdot_entry_is_refused(repos, served, tmp_path):
    evil = os.path.join(repos["evil"], "fuse3-libs-9.9-1.el9.x86_64.rpm")
    assert rf.rpm_digests_ok(evil)          # a consistent package: refused for its content
    rpmfile.RpmFile(evil).verify_digests()
    over = overrides_for(served.url)
    over["appstream"] = served.url + "/evil"
    fetcher = fetch.Fetcher(cache_dir=str(tmp_path / "cache"))
    with pytest.raises(cpio.CpioError, match="escape"):
        makedist.make_dist(str(tmp_path / "sub" / "dist"), machines.Machine("rhel9-x86_64"),
                           "none", overrides=over, fetcher=fetcher, out=io.StringIO())
    assert os.listdir(str(tmp_path / "sub")) == []          # no dist, no work directory
    assert not os.path.exists(str(tmp_path / "escape"))


@pytest.mark.parametrize("name, error", [
    ("/abs/path", "absolute"), ("./a/../../x", "escape"), ("a/../b", "escape")])
def test_cpio_refuses_escaping_names(name, error):
    with pytest.raises(cpio.CpioError, match=error):
        cpio.safe_relpath(name)


def newc(entries):
    """A newc archive from (name, mode, data); test input for the symlinked-parent case."""
    out = b""
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        nb = name.encode() + b"\0"
        head = b"070701" + b"".join(b"%08X" % v for v in (
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0))
        out += head + nb + b"\0" * ((4 - (110 + len(nb)) % 4) % 4)
        out += data + b"\0" * ((4 - len(data) % 4) % 4)
    return out


def test_cpio_refuses_writing_through_symlinked_parent(tmp_path):
    dest = tmp_path / "dist"
    dest.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = newc([("./etc", 0o120777, str(outside).encode()),
                    ("./etc/passwd", 0o100644, b"pwned\n")])
    with pytest.raises(cpio.CpioError, match="symlinked directory"):
        cpio.extract(io.BytesIO(archive), str(dest))
    assert os.listdir(str(outside)) == []


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Test double for an overloaded mirror: answers 500 to the first N requests per path."""
    protocol_version = "HTTP/1.1"
    fail_first = {}
    hits = {}
    body = b"x" * 100000

    def do_GET(self):
        n = self.hits[self.path] = self.hits.get(self.path, 0) + 1
        code = 500 if n <= self.fail_first.get(self.path, 0) else 200
        body = b"overloaded" if code == 500 else self.body
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def flaky():
    handler = type("H", (FlakyHandler,), {"fail_first": {}, "hits": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield handler, "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_retry_after_500_then_200(flaky, tmp_path):
    handler, url = flaky
    handler.fail_first.update({"/once.rpm": 1, "/always.rpm": 99})
    f = fetch.Fetcher(cache_dir=str(tmp_path), backoff=0.01)
    digest = hashlib.sha256(FlakyHandler.body).hexdigest()
    path = f.download(url + "/once.rpm", size=100000, checksum=digest)
    assert open(path, "rb").read() == FlakyHandler.body and handler.hits["/once.rpm"] == 2
    with pytest.raises(fetch.DownloadError) as e:
        f.download(url + "/always.rpm", checksum=digest)
    assert url + "/always.rpm" in e.value.message and "500" in e.value.message
    assert handler.hits["/always.rpm"] == 4                 # first try + 3 retries


def test_unreachable_server_names_url(tmp_path):
    f = fetch.Fetcher(cache_dir=str(tmp_path), retries=0, timeout=(2, 2))
    with pytest.raises(fetch.DownloadError, match=r"http://127\.0\.0\.1:9/repodata/repomd\.xml"):
        repodata.load_repository(f, "http://127.0.0.1:9")


def test_unsupported_machine_is_usage_error(tmp_path):
    r = subprocess.run([sys.executable, BUILD_PY, "-m", "rhel6-x86_64", "--dist",
                        str(tmp_path / "d"), "osg"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "rhel6-x86_64" in r.stderr and "rhel9-aarch64" in r.stderr and "suse15-x86_64" in r.stderr
    with pytest.raises(UsageError, match="default/none"):
        machines.Machine("rhel7-x86_64").check_flavour("osg")


@pytest.mark.parametrize("os_release, arch, expected", [
    ('ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="8.9"\n', "x86_64", "rhel8-x86_64"),
    ('ID="almalinux"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n', "aarch64", "rhel9-aarch64"),
    ('ID="rhel"\nVERSION_ID="10.0"\n', "x86_64", "rhel10-x86_64"),
    ('ID="sles"\nID_LIKE="suse"\nVERSION_ID="15.5"\n', "x86_64", "suse15-x86_64"),
    ('ID=debian\nVERSION_ID="11"\n', "x86_64", "rhel8-x86_64"),
    ('ID=debian\nVERSION_ID="12"\n', "amd64", "rhel9-x86_64"),
    ('ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n', "arm64", "rhel9-aarch64"),
    ('ID=arch\n', "x86_64", None),
    ('ID=debian\nVERSION_ID="10"\n', "x86_64", None),
    ('ID="rhel"\nVERSION_ID="10.0"\n', "aarch64", None),
])
def test_host_detection(tmp_path, os_release, arch, expected):
    path = tmp_path / "os-release"
    path.write_text(os_release)
    if expected:
        assert machines.detect_host(str(path), arch) == expected
    else:
        with pytest.raises(UsageError) as e:
            machines.detect_host(str(path), arch)
        assert "-m" in e.value.hint and "rhel9-x86_64" in e.value.hint


def test_repo_url_overrides():
    env = {"CVMFSEXEC_REPO_URL_BASEOS": "http://mirror/{el}/BaseOS/{arch}/"}
    over = machines.parse_overrides(["osg=http://osg/el{el}"], environ=env)
    assert machines.repo_url("baseos", over, el=9, arch="x86_64", version=9) == \
        "http://mirror/9/BaseOS/x86_64"
    assert machines.repo_url("osg", over, el=8, arch="x86_64", version=8) == "http://osg/el8"
    assert machines.repo_url("epel", over, el=9, arch="aarch64", version=9).endswith(
        "/epel/9/Everything/aarch64")
    with pytest.raises(UsageError, match="nosuch") as e:
        machines.parse_overrides(["nosuch=http://x"], environ={})
    assert "appstream" in e.value.hint


VERCMP = [("2.13.0", "2.9.4", 1), ("1.0", "1.0", 0), ("1.0", "1.0.1", -1), ("1.0a", "1.0", 1),
          ("1.0~rc1", "1.0", -1), ("1.0^git1", "1.0", 1), ("1.0^git1", "1.0.1", -1),
          ("2.0.01", "2.0.1", 0), ("1.el9", "1.el8", 1), ("10a", "9b", 1), ("a", "1", -1),
          ("1.0~rc1", "1.0~rc2", -1), ("1_0", "1.0", 0), ("5.5p1", "5.5p10", -1)]


@pytest.mark.parametrize("a, b, expected", VERCMP)
def test_rpmvercmp_agrees_with_rpm(a, b, expected):
    assert repodata.rpmvercmp(a, b) == expected
    assert repodata.rpmvercmp(b, a) == -expected
    oracle = subprocess.run(["rpm", "--eval", '%%{lua: print(rpm.vercmp("%s", "%s"))}' % (a, b)],
                            capture_output=True, text=True)
    if oracle.returncode == 0 and oracle.stdout.strip():
        assert int(oracle.stdout.strip()) == expected


def test_compare_evr_epoch_first():
    assert repodata.compare_evr((1, "2.2", "1"), (0, "2.4", "1")) == 1
    assert repodata.compare_evr((0, "2.4", "2"), (0, "2.4", "10")) == -1


def test_html_index_with_packages_subdirectory(repos, http_server, tmp_path):
    """A yum tree without repodata whose index only links Packages/ (os/Packages/ layout)."""
    tree = tmp_path / "os"
    shutil.copytree(repos["epel"], str(tree / "Packages"))
    server = http_server(str(tree))
    f = fetch.Fetcher(cache_dir=str(tmp_path / "cache"))
    packages, has_repodata = repodata.load_repository(f, server.url)
    assert not has_repodata
    pkg = repodata.newest(packages, "scitokens-cpp", ["x86_64", "noarch"])
    assert pkg.url == server.url + "/Packages/scitokens-cpp-1.1.2-1.el9.x86_64.rpm"
    assert pkg.checksum is None
    path = f.download(pkg.url)
    rpmfile.RpmFile(path).verify_digests()


def test_corrupt_package_from_html_index_caught_by_rpm_digest(repos, http_server, tmp_path):
    """No metadata checksum for HTML-index packages: the RPM's own payload digest catches it."""
    mirror = tmp_path / "mirror"
    shutil.copytree(repos["root"], str(mirror))
    victim = mirror / "epel" / "scitokens-cpp-1.1.2-1.el9.x86_64.rpm"
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF
    victim.write_bytes(bytes(data))
    server = http_server(str(mirror))
    with pytest.raises(CvmfsexecError) as e:
        build(tmp_path, server.url, "osg")
    assert "payload sha256 digest mismatch" in e.value.message
    assert server.url + "/epel/" + victim.name in e.value.message
    cached = [n for _t, _d, files in os.walk(str(tmp_path / "cache")) for n in files]
    assert not any(victim.name in n for n in cached)


def test_aarch64_without_helper_repositories_still_builds(served, tmp_path):
    """The x509 helper is optional off x86_64: a missing repository is a note, not a failure."""
    over = overrides_for(served.url)
    over["epel"] = served.url + "/no-such-epel"
    out = io.StringIO()
    fetcher = fetch.Fetcher(cache_dir=str(tmp_path / "cache"), retries=0)
    summary = makedist.make_dist(str(tmp_path / "dist"), machines.Machine("rhel9-aarch64"), "osg",
                                 overrides=over, fetcher=fetcher, out=out)
    names = [p.name for p in summary["packages"]]
    assert [p.arch for p in summary["packages"]][:4] == ["aarch64"] * 4
    assert "cvmfs-config-osg" in names and "scitokens-cpp" not in names
    assert "cvmfs-x509-helper" not in names          # the test repo has only x86_64 builds
    assert "Note: skipping optional scitokens-cpp" in out.getvalue()
