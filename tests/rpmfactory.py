"""Build real RPM packages with rpmbuild and real yum repositories with createrepo_c.

    pkg = Pkg("cvmfs", "2.13.1", "1.el9", payload="zstd")
    pkg.file("/usr/bin/cvmfs2", b"#!/bin/sh\n", 0o755)
    pkg.symlink("/usr/lib64/libcvmfs_fuse3.so", "libcvmfs_fuse3.so.2")
    build([pkg, ...], outdir)            # one rpmbuild run for all of them
    make_repo(outdir, compress="xz")     # createrepo_c

Files are staged in a directory and copied into the buildroot with ``cp -a``,
so hardlinks and symlinks reach the payload exactly as staged.
"""
import hashlib
import os
import shutil
import subprocess

from builder import rpmfile

PAYLOAD_MACROS = {"gzip": "w9.gzdio", "xz": "w2.xzdio", "zstd": "w3.zstdio",
                  "bzip2": "w9.bzdio", "none": "w.ufdio"}


def tools_missing():
    """Why real RPMs cannot be built here, or None."""
    for tool in ("rpmbuild", "createrepo_c", "rpm"):
        if shutil.which(tool) is None:
            return "%s not installed (Debian packages rpm, createrepo-c)" % tool
    return None


class Pkg(object):
    def __init__(self, name, version, release, arch="x86_64", payload="gzip", epoch=None):
        self.name = name
        self.version = version
        self.release = release
        self.arch = arch
        self.payload = payload
        self.epoch = epoch
        self.entries = []     # (path, kind, mode, data)

    @property
    def filename(self):
        return "%s-%s-%s.%s.rpm" % (self.name, self.version, self.release, self.arch)

    def file(self, path, data, mode=0o644):
        self.entries.append((path, "file", mode, data))
        return self

    def hardlink(self, path, existing):
        self.entries.append((path, "hardlink", None, existing))
        return self

    def symlink(self, path, target):
        self.entries.append((path, "symlink", None, target))
        return self

    def dir(self, path, mode=0o755):
        self.entries.append((path, "dir", mode, None))
        return self

    def _stage(self, root):
        for path, kind, mode, data in self.entries:
            full = root + path
            os.makedirs(os.path.dirname(full), exist_ok=True)
            if kind == "file":
                with open(full, "wb") as f:
                    f.write(data)
                os.chmod(full, mode)
            elif kind == "hardlink":
                os.link(root + data, full)
            elif kind == "symlink":
                os.symlink(data, full)
            elif kind == "dir":
                os.makedirs(full, exist_ok=True)
                os.chmod(full, mode)

    def _spec(self, stage):
        files = []
        for path, kind, mode, data in self.entries:
            if kind == "dir":
                files.append("%%dir %%attr(%04o,root,root) %s" % (mode, path))
            elif kind == "file":
                files.append("%%attr(%04o,root,root) %s" % (mode, path))
            else:
                files.append(path)
        lines = [
            "%%define _binary_payload %s" % PAYLOAD_MACROS[self.payload],
            "%define debug_package %{nil}",
            "%define __os_install_post %{nil}",
            "%define _build_id_links none",
            "Name: %s" % self.name,
            "Version: %s" % self.version,
            "Release: %s" % self.release,
            "Summary: test package %s" % self.name,
            "License: BSD",
        ]
        if self.arch == "noarch":      # other arches come from rpmbuild --target
            lines.append("BuildArch: noarch")
        if self.epoch is not None:
            lines.append("Epoch: %d" % self.epoch)
        lines += ["%description", "A test package built by tests/rpmfactory.py.",
                  "%install", "mkdir -p %{buildroot}", "cp -a %s/. %%{buildroot}/" % stage,
                  "%files"] + files
        return "\n".join(lines) + "\n"


def build(pkgs, outdir, workdir):
    """Build every Pkg, one rpmbuild run per target arch; returns {filename: path} in ``outdir``."""
    os.makedirs(outdir, exist_ok=True)
    by_target = {}
    for i, pkg in enumerate(pkgs):
        stage = os.path.join(workdir, "stage%d" % i)
        os.makedirs(stage)
        pkg._stage(stage)
        spec = os.path.join(workdir, "p%d.spec" % i)
        with open(spec, "w") as f:
            f.write(pkg._spec(stage))
        target = "x86_64" if pkg.arch == "noarch" else pkg.arch
        by_target.setdefault(target, []).append(spec)
    rpmdir = os.path.join(workdir, "rpms")
    for target, specs in sorted(by_target.items()):
        cmd = ["rpmbuild", "--quiet", "-bb", "--target", target,
               "--define", "_topdir %s" % os.path.join(workdir, "top"),
               "--define", "_rpmdir %s" % rpmdir,
               "--define", "_build_name_fmt %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm"] + specs
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("rpmbuild failed:\n%s%s" % (r.stdout, r.stderr))
    out = {}
    for pkg in pkgs:
        dest = os.path.join(outdir, pkg.filename)
        shutil.move(os.path.join(rpmdir, pkg.filename), dest)
        out[pkg.filename] = dest
    return out


def make_repo(directory, compress="gz"):
    """Run createrepo_c on ``directory`` with the given metadata compression.

    Debian's createrepo_c has no zstd (Fedora's defaults to it): for "zstd" the
    primary metadata is recompressed and repomd.xml updated as createrepo_c would.
    """
    r = subprocess.run(["createrepo_c", "--quiet", "--no-database", "--compress-type",
                        "gz" if compress == "zstd" else compress, directory],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("createrepo_c failed:\n%s%s" % (r.stdout, r.stderr))
    if compress == "zstd":
        _recompress_primary_zstd(directory)


def _recompress_primary_zstd(directory):
    import gzip
    import re
    import zstandard
    repomd_path = os.path.join(directory, "repodata", "repomd.xml")
    with open(repomd_path) as f:
        repomd = f.read()
    block = re.search(r'<data type="primary">.*?</data>', repomd, re.S).group(0)
    href = re.search(r'<location href="([^"]+)"', block).group(1)
    old = os.path.join(directory, href)
    with open(old, "rb") as f:
        data = zstandard.ZstdCompressor().compress(gzip.decompress(f.read()))
    digest = hashlib.sha256(data).hexdigest()
    new_href = "repodata/%s-primary.xml.zst" % digest
    with open(os.path.join(directory, new_href), "wb") as f:
        f.write(data)
    os.unlink(old)
    new = re.sub(r'(<checksum type="sha256">)[0-9a-f]+(</checksum>)', r"\g<1>%s\g<2>" % digest,
                 block, count=1)
    new = new.replace(href, new_href)
    new = re.sub(r"<size>\d+</size>", "<size>%d</size>" % len(data), new, count=1)
    with open(repomd_path, "w") as f:
        f.write(repomd.replace(block, new))


def rpm_contents(path):
    """[(path, mode, linkto)] of an RPM's files as rpm itself reports them (ghosts excluded)."""
    r = subprocess.run(["rpm", "-qp", "--nosignature", "--qf",
                        "[%{FILENAMES}\t%{FILEMODES}\t%{FILELINKTOS}\t%{FILEFLAGS}\n]", path],
                       capture_output=True, text=True, check=True)
    out = []
    for line in r.stdout.splitlines():
        name, mode, link, flags = line.split("\t")
        if int(flags) & 64:     # RPMFILE_GHOST: not in the payload
            continue
        out.append((name, int(mode) & 0o177777, link))
    return out


def rpm_digests_ok(path):
    """True if rpm itself finds the package's digests consistent (rpm -K)."""
    r = subprocess.run(["rpm", "-K", "--nosignature", path], capture_output=True, text=True)
    return r.returncode == 0 and "digests OK" in r.stdout


def patch_payload(path, old, new):
    """Rewrite bytes inside an uncompressed payload and fix every digest rpm keeps of it.

    Used to make a package with an entry rpmbuild would never write (``../``);
    the result still passes ``rpm -K``, so a consumer must refuse it for its
    contents, not for a broken digest.
    """
    assert len(old) == len(new)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    rpm = rpmfile.RpmFile(path)
    off = rpm.payload_offset
    assert data[off:off + 6] == b"070701", "payload must be uncompressed (payload='none')"
    hstart = off - len(rpm.header.raw)
    old_payload = bytes(data[off:])
    new_payload = old_payload.replace(old, new)
    assert new_payload != old_payload, "pattern not found in payload"
    old_header = bytes(data[hstart:off])
    new_header = old_header.replace(hashlib.sha256(old_payload).hexdigest().encode(),
                                    hashlib.sha256(new_payload).hexdigest().encode())
    sig = bytes(data[:hstart])
    for algo in ("sha256", "sha1"):
        sig = sig.replace(hashlib.new(algo, old_header).hexdigest().encode(),
                          hashlib.new(algo, new_header).hexdigest().encode())
    sig = sig.replace(hashlib.md5(old_header + old_payload).digest(),
                      hashlib.md5(new_header + new_payload).digest())
    with open(path, "wb") as f:
        f.write(sig + new_header + new_payload)
