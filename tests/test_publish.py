"""The publisher (builder/publish.py): real CernVM-FS repositories from directory trees.

Checked three ways: against the real 2.12 tools' output (schema, properties,
statistics, flags of the small.example.org fixture); directly (object hashes,
signatures with the `cryptography` package, a small independent catalog
walker, PublishedTree, below); and through the runtime reader
launcher.cvmfs.repository over a real HTTP server once that module exists.
"""
import hashlib
import os
import random
import shutil
import sqlite3
import stat
import struct
import subprocess
import sys
import tarfile
import time
import zlib

import pytest

from conftest import FIXTURES, ROOT

from builder import publish as pub
from launcher.errors import CvmfsexecError

FQRN = "pub.example.org"
EMPTY_OBJECT = "e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78"
EXPECTED = os.path.join(FIXTURES, "small_example_org-expected.txt")


# ---------------------------------------------------------------------------
# an independent reader of publisher output (local files, no HTTP)

def md5_pair(path):
    return struct.unpack("<qq", hashlib.md5(path.encode("utf-8")).digest())


def decode_xattrs(blob):
    if blob is None:
        return {}
    assert blob[0] == 1
    out, pos = {}, 2
    for _ in range(blob[1]):
        lk, lv = blob[pos], blob[pos + 1]
        pos += 2
        out[blob[pos:pos + lk].decode()] = blob[pos + lk:pos + lk + lv]
        pos += lk + lv
    assert pos == len(blob)
    return out


class PublishedTree(object):
    """Test double for launcher.cvmfs.repository: walks a published repository on disk.

    Every object is checked against its name (SHA-1 of the stored bytes) and
    every row's md5 path key against the path it is reached by.
    """

    def __init__(self, repo_dir, tmp_path, root_hash=None):
        self.repo = repo_dir
        self.tmp = str(tmp_path)
        os.makedirs(self.tmp, exist_ok=True)
        man = open(os.path.join(repo_dir, ".cvmfspublished"), "rb").read()
        self.manifest = pub.parse_manifest(man)
        self.entries = {}          # path -> dict
        self.catalogs = {}         # mountpoint -> (hash, properties, statistics)
        self._load(root_hash or self.manifest["C"], "", None)

    def object(self, hex_, suffix=""):
        raw = open(os.path.join(self.repo, "data", hex_[:2], hex_[2:] + suffix), "rb").read()
        assert hashlib.sha1(raw).hexdigest() == hex_, "object %s%s is corrupt" % (hex_, suffix)
        return zlib.decompress(raw)

    def open_db(self, hex_, suffix):
        path = os.path.join(self.tmp, "db-%s%s" % (hex_, suffix))
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(self.object(hex_, suffix))
        return sqlite3.connect(path)

    def _load(self, hex_, mountpoint, parent_row):
        db = self.open_db(hex_, "C")
        props = dict(db.execute("SELECT key, value FROM properties"))
        stats = dict(db.execute("SELECT counter, value FROM statistics"))
        nested = {p: (h, s) for p, h, s in db.execute("SELECT * FROM nested_catalogs")}
        self.catalogs[mountpoint] = (hex_, props, stats)
        rows = db.execute("SELECT md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, "
                          "size, mode, mtime, flags, name, symlink, uid, gid, xattr "
                          "FROM catalog").fetchall()
        chunks = {}
        for m1, m2, off, size, h in db.execute("SELECT * FROM chunks ORDER BY offset"):
            chunks.setdefault((m1, m2), []).append((off, size, h.hex()))
        by_parent = {}
        root = None
        for r in rows:
            if (r[0], r[1]) == md5_pair(mountpoint):
                root = r
            else:
                by_parent.setdefault((r[2], r[3]), []).append(r)
        assert root is not None, "catalog %s has no root row" % mountpoint
        if mountpoint:
            assert root[9] == 33 and parent_row[9] == 3
            assert root[:9] == parent_row[:9] and root[10:] == parent_row[10:]
            assert props["root_prefix"] == mountpoint
        else:
            assert (root[2], root[3]) == (0, 0) and root[9] == 1
            self.entries[""] = self._entry("", root, chunks)
        stack = [mountpoint]
        seen = 1
        while stack:
            d = stack.pop()
            for r in by_parent.get(md5_pair(d), []):
                path = d + "/" + r[10]
                assert (r[0], r[1]) == md5_pair(path)
                seen += 1
                self.entries[path] = self._entry(path, r, chunks, hex_)
                if r[9] & 2:
                    h, size = nested[path]
                    assert size == len(self.object(h, "C"))
                    self._load(h, path, r)
                elif r[9] & 1:
                    stack.append(path)
        assert seen == len(rows), "rows not reachable from the catalog root"

    def _entry(self, path, r, chunks, catalog=None):
        return dict(path=path, hardlinks=r[4] & 0xFFFFFFFFFFFFFFFF, hash=r[5], size=r[6],
                    mode=r[7], mtime=r[8], flags=r[9], symlink=r[11], uid=r[12], gid=r[13],
                    xattrs=decode_xattrs(r[14]), chunks=chunks.get((r[0], r[1])),
                    catalog=catalog)

    def read(self, path):
        e = self.entries[path]
        if e["chunks"]:
            data = b"".join(self.object(h, "P") for _, _, h in e["chunks"])
            offsets = [o for o, _, _ in e["chunks"]]
            assert offsets[0] == 0 and len(data) == e["size"]
            return data
        return self.object(e["hash"].hex())


# ---------------------------------------------------------------------------
# source trees

def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def make_tree(root, nfiles=2000, seed=1):
    """Thousands of files, deep nesting, nested catalogs, unicode, links, xattrs."""
    rnd = random.Random(seed)
    os.makedirs(root)
    deep = root
    for i in range(40):
        deep = os.path.join(deep, "d%02d" % i)
    os.makedirs(deep)
    write_file(os.path.join(deep, "bottom.txt"), b"deep\n")
    dirs = []
    for i in range(20):
        d = os.path.join(root, "dir%02d" % i, "sub")
        os.makedirs(d)
        dirs.append(d)
        dirs.append(os.path.dirname(d))
    for i in range(nfiles):
        d = dirs[i % len(dirs)]
        write_file(os.path.join(d, "f%05d.dat" % i), os.urandom(rnd.randrange(0, 3000)))
    # nested catalogs, also nested in nested and one in the deep chain
    for rel in ("dir03", "dir03/sub", "dir07", os.path.relpath(deep, root)):
        write_file(os.path.join(root, rel, ".cvmfscatalog"), b"")
    uni = os.path.join(root, "ünïcödé 名前")
    os.makedirs(uni)
    write_file(os.path.join(uni, "ファイル with space.txt"), "日本語\n".encode())
    special = os.path.join(root, "special")
    os.makedirs(os.path.join(special, "empty-dir"))
    write_file(os.path.join(special, "empty"), b"")
    write_file(os.path.join(special, "same-as-other"), b"duplicate content\n")
    write_file(os.path.join(special, "other"), b"duplicate content\n")
    # hard links: a pair, a triple, and one across directories (split by cvmfs)
    write_file(os.path.join(special, "hl-a"), b"pair\n")
    os.link(os.path.join(special, "hl-a"), os.path.join(special, "hl-b"))
    write_file(os.path.join(special, "t1"), b"triple\n")
    os.link(os.path.join(special, "t1"), os.path.join(special, "t2"))
    os.link(os.path.join(special, "t1"), os.path.join(special, "t3"))
    os.link(os.path.join(special, "t1"), os.path.join(uni, "t-elsewhere"))
    os.link(os.path.join(root, "dir03", "sub", "f00006.dat"),
            os.path.join(root, "dir03", "sub", "f00006.hl"))
    # symlinks: relative, absolute, dangling, to a directory, variant
    os.symlink("empty", os.path.join(special, "l-rel"))
    os.symlink("/cvmfs/%s/special/other" % FQRN, os.path.join(special, "l-abs"))
    os.symlink("../no/such", os.path.join(special, "l-dangling"))
    os.symlink("../dir03/sub", os.path.join(special, "l-dir"))
    os.symlink("$(ARCH:-x86_64)/lib", os.path.join(special, "l-variant"))
    # xattrs, owners, modes, a fifo
    x = os.path.join(special, "xattr.txt")
    write_file(x, b"x\n")
    os.setxattr(x, "user.color", b"green")
    os.setxattr(x, "user.note", b"hello world")
    os.setxattr(os.path.join(special, "empty-dir"), "user.dir", b"1")
    os.setxattr(os.path.join(root, "dir07", "sub"), "user.in-nested", b"\x00\xffbin")
    o = os.path.join(special, "owned")
    write_file(o, b"o\n")
    os.chown(o, 1000, 2000)
    os.chmod(o, 0o600)
    os.chmod(os.path.join(special, "other"), 0o755)
    os.mkfifo(os.path.join(special, "fifo"))
    os.chmod(os.path.join(root, "dir09"), 0o700)
    return root


def source_view(root):
    """path -> expected catalog facts, from lstat of the source tree."""
    view = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        base = "" if rel == "." else "/" + rel
        names = dirnames + filenames
        inodes = {}
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            if not stat.S_ISDIR(st.st_mode):
                inodes.setdefault(st.st_ino, []).append(n)
        for n in names:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            e = dict(mode=st.st_mode, mtime=int(st.st_mtime), uid=st.st_uid, gid=st.st_gid,
                     src=p, ino=st.st_ino)
            if stat.S_ISDIR(st.st_mode):
                subs = sum(1 for c in os.listdir(p) if os.path.isdir(os.path.join(p, c))
                           and not os.path.islink(os.path.join(p, c)))
                e.update(size=st.st_size, nlink=2 + subs)
            elif stat.S_ISLNK(st.st_mode):
                e.update(size=len(os.readlink(p).encode()), nlink=1, symlink=os.readlink(p))
            else:
                e.update(size=st.st_size if stat.S_ISREG(st.st_mode) else 0,
                         nlink=len(inodes[st.st_ino]))
            if not stat.S_ISLNK(st.st_mode):
                e["xattrs"] = {k: os.getxattr(p, k) for k in os.listxattr(p)
                               if k.startswith("user.")}
            else:
                e["xattrs"] = {}
            view[base + "/" + n] = e
    return view


def compare_with_source(tree, src):
    """Every source entry is in the repository with the same metadata and bytes."""
    view = source_view(src)
    assert set(tree.entries) - {""} == set(view)
    groups = {}
    for path, s in view.items():
        e = tree.entries[path]
        assert e["mode"] == s["mode"], path
        assert e["size"] == s["size"], path
        assert e["mtime"] == s["mtime"], path
        assert (e["uid"], e["gid"]) == (s["uid"], s["gid"]), path
        assert e["xattrs"] == s["xattrs"], path
        assert e["hardlinks"] & 0xFFFFFFFF == s["nlink"], path
        if stat.S_ISLNK(s["mode"]):
            assert e["symlink"] == s["symlink"] and e["flags"] == 12
        elif stat.S_ISREG(s["mode"]):
            with open(s["src"], "rb") as f:
                assert tree.read(path) == f.read(), path
        if s["nlink"] > 1 and not stat.S_ISDIR(s["mode"]):
            key = (os.path.dirname(path), s["ino"])
            groups.setdefault(key, set()).add((e["catalog"], e["hardlinks"]))
    # one (catalog, group value) per hard-link group, distinct between groups
    values = [v for g in groups.values() for v in g]
    assert all(len(g) == 1 for g in groups.values())
    assert len(values) == len(set(values))
    return view


@pytest.fixture(scope="module")
def fixture_repo(tmp_path_factory):
    """The real small.example.org repository, unpacked (read-only use)."""
    d = tmp_path_factory.mktemp("fixture")
    for name in ("small_example_org-repo.tar.gz", "small_example_org-keys.tar.gz"):
        with tarfile.open(os.path.join(FIXTURES, name)) as t:
            t.extractall(str(d))
    return d


def real_catalog(fixture_repo, tmp_path):
    repo = os.path.join(str(fixture_repo), "srv", "cvmfs", "small.example.org")
    return PublishedTree(repo, tmp_path)


def schema_of(db):
    return sorted(r for r in db.execute("SELECT type, name, sql FROM sqlite_master"))


# ---------------------------------------------------------------------------
# tests

@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """One generated tree published once (revision 1), shared by read-only tests."""
    d = tmp_path_factory.mktemp("pub")
    src = make_tree(os.path.join(str(d), "src"))
    info = pub.publish(src, FQRN, os.path.join(str(d), "out"), whitelist_days=7, ttl=61)
    return d, src, info


def test_round_trip_generated_tree(published, tmp_path):
    d, src, info = published
    tree = PublishedTree(info["repo_dir"], tmp_path)
    assert info["revision"] == 1 and tree.manifest["S"] == "1"
    compare_with_source(tree, src)
    # nested catalogs exactly where the markers are
    deep = "/" + "/".join("d%02d" % i for i in range(40))
    assert set(tree.catalogs) == {"", "/dir03", "/dir03/sub", "/dir07", deep}
    assert tree.entries["/dir03/.cvmfscatalog"]["hash"].hex() == EMPTY_OBJECT
    # the root keeps mkfs-style metadata, not the 0700 of a temporary source dir
    root = tree.entries[""]
    assert root["mode"] == 0o40755 and (root["uid"], root["gid"], root["size"]) == (0, 0, 4096)
    assert tree.entries["/special/fifo"]["flags"] == 20


def test_statistics_are_exact(published, tmp_path):
    d, src, info = published
    tree = PublishedTree(info["repo_dir"], tmp_path)
    own = {mp: {} for mp in tree.catalogs}
    for path, e in tree.entries.items():
        mp = max((m for m in tree.catalogs if path == m or path.startswith(m + "/")), key=len)
        if e["flags"] & 2:       # a mount point counts in its parent catalog too
            parent = max((m for m in tree.catalogs if path.startswith(m + "/") or m == ""),
                         key=len)
            own[parent]["dir"] = own[parent].get("dir", 0) + 1
        c = own[mp]
        kind = ("dir" if stat.S_ISDIR(e["mode"]) else "symlink" if stat.S_ISLNK(e["mode"])
                else "regular" if stat.S_ISREG(e["mode"]) else "special")
        c[kind] = c.get(kind, 0) + 1
        if kind == "regular":
            c["file_size"] = c.get("file_size", 0) + e["size"]
        if e["xattrs"]:
            c["xattr"] = c.get("xattr", 0) + 1
    for mp, (_, props, stats) in tree.catalogs.items():
        assert len(stats) == 24
        for k in ("dir", "regular", "symlink", "special", "file_size", "xattr"):
            assert stats["self_" + k] == own[mp].get(k, 0), (mp, k)
        children = [m for m in tree.catalogs if m != mp and m.startswith(mp + "/")]
        for k in ("dir", "regular", "file_size"):
            assert stats["subtree_" + k] == sum(tree.catalogs[c][2]["self_" + k]
                                                for c in children), (mp, k)
    assert tree.catalogs[""][2]["self_nested"] == 3


def test_signatures_whitelist_and_keys(published):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    d, src, info = published
    repo = info["repo_dir"]
    keys = os.path.join(str(d), "out", "keys")
    assert sorted(os.listdir(keys)) == sorted("%s.%s" % (FQRN, s)
                                              for s in ("crt", "key", "masterkey", "pub"))
    assert stat.S_IMODE(os.stat(os.path.join(keys, FQRN + ".masterkey")).st_mode) == 0o600
    man = open(os.path.join(repo, ".cvmfspublished"), "rb").read()
    body, rest = man.split(b"--\n", 1)
    hline, sig = rest.split(b"\n", 1)
    assert [l[:1] for l in body.split(b"\n")[:-1]] == [b"C", b"B", b"R", b"D", b"S", b"G",
                                                       b"A", b"N", b"X", b"H", b"T"]
    f = pub.parse_manifest(man)
    assert f["D"] == "61" and f["N"] == FQRN and f["R"] == hashlib.md5(b"").hexdigest()
    assert hashlib.sha1(body).hexdigest().encode() == hline and len(sig) == 256
    cert_pem = zlib.decompress(open(os.path.join(repo, "data", f["X"][:2],
                                                 f["X"][2:] + "X"), "rb").read())
    assert cert_pem == open(os.path.join(keys, FQRN + ".crt"), "rb").read()
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.public_key().verify(sig, hline, padding.PKCS1v15(), hashes.SHA1())
    # whitelist: signed with the master key, PKCS#1 type 1 without DigestInfo
    wl = open(os.path.join(repo, ".cvmfswhitelist"), "rb").read()
    wbody, wrest = wl.split(b"--\n", 1)
    whash, wsig = wrest.split(b"\n", 1)
    assert hashlib.sha1(wbody).hexdigest().encode() == whash
    master = serialization.load_pem_public_key(open(os.path.join(keys, FQRN + ".pub"),
                                                    "rb").read())
    assert master.recover_data_from_signature(wsig, padding.PKCS1v15(), None) == whash
    lines = wbody.decode().split("\n")
    fp = ":".join("%02X" % b for b in hashlib.sha1(
        cert.public_bytes(serialization.Encoding.DER)).digest())
    assert lines[2:4] == ["N" + FQRN, fp]
    created = time.strptime(lines[0], "%Y%m%d%H%M%S")
    expires = time.strptime(lines[1][1:], "%Y%m%d%H%M%S")
    import calendar
    assert calendar.timegm(expires) - calendar.timegm(created) == 7 * 86400
    assert abs(calendar.timegm(created) - int(f["T"])) <= 1


def test_every_object_is_named_by_its_hash(published):
    d, src, info = published
    data = os.path.join(info["repo_dir"], "data")
    n = 0
    for sub in os.listdir(data):
        if sub == "txn":
            assert os.listdir(os.path.join(data, sub)) == []
            continue
        for name in os.listdir(os.path.join(data, sub)):
            raw = open(os.path.join(data, sub, name), "rb").read()
            assert raw[:2] == b"\x78\x9c"
            assert sub + name.rstrip("CHXP") == hashlib.sha1(raw).hexdigest()
            n += 1
    assert n > 2000


def test_schema_and_properties_match_real_2_12(published, fixture_repo, tmp_path):
    d, src, info = published
    ours = PublishedTree(info["repo_dir"], tmp_path / "ours")
    real = real_catalog(fixture_repo, tmp_path / "real")
    for mp_ours, mp_real in (("", ""), ("/dir03", "/nested")):
        o = ours.open_db(ours.catalogs[mp_ours][0], "C")
        r = real.open_db(real.catalogs[mp_real][0], "C")
        assert schema_of(o) == schema_of(r)
        assert sorted(ours.catalogs[mp_ours][1]) == sorted(real.catalogs[mp_real][1])
        assert sorted(ours.catalogs[mp_ours][2]) == sorted(real.catalogs[mp_real][2])
        for db in (o, r):
            assert db.execute("PRAGMA page_size").fetchone() == (4096,)
            assert db.execute("SELECT typeof(value) FROM properties GROUP BY 1").fetchall() \
                == [("text",)]
    props = ours.catalogs[""][1]
    assert props["TTL"] == "61" and props["revision"] == "1"
    # previous_revision of revision 1 is the revision-0 catalog, as after mkfs
    rev0 = PublishedTree(info["repo_dir"], tmp_path / "rev0", props["previous_revision"])
    assert list(rev0.entries) == [""] and rev0.catalogs[""][1]["revision"] == "0"
    assert ours.catalogs["/dir03"][1]["previous_revision"] == "0" * 40
    oh = ours.open_db(ours.manifest["H"], "H")
    rh = real.open_db(real.manifest["H"], "H")
    assert schema_of(oh) == schema_of(rh)
    assert oh.execute("SELECT * FROM branches").fetchall() == [("", None, 0)]
    tags = {r[0]: r[1:] for r in oh.execute("SELECT name, hash, revision, description, size "
                                            "FROM tags")}
    assert tags["trunk"] == (info["root_hash"], 1, "current HEAD",
                             len(ours.object(info["root_hash"], "C")))
    assert "trunk-previous" not in tags and len(tags) == 2


def test_second_revision(tmp_path):
    src = make_tree(str(tmp_path / "src"), nfiles=300)
    out = str(tmp_path / "out")
    first = pub.publish(src, FQRN, out)
    t1 = PublishedTree(first["repo_dir"], tmp_path / "r1")
    # change a file inside the nested-in-nested catalog, add one, remove one
    write_file(os.path.join(src, "dir03", "sub", "f00006.dat"), b"changed\n")
    write_file(os.path.join(src, "special", "added.txt"), b"new\n")
    os.unlink(os.path.join(src, "dir00", "sub", "f00000.dat"))
    second = pub.publish(src, FQRN, out)
    assert second["revision"] == 2 and second["certificate"] == first["certificate"]
    t2 = PublishedTree(second["repo_dir"], tmp_path / "r2")
    compare_with_source(t2, src)
    # the hard link to the changed file changed with it
    assert t2.read("/dir03/sub/f00006.hl") == b"changed\n"
    # rewritten: root, /dir03, /dir03/sub; untouched nested catalogs are kept as they were
    for mp in ("", "/dir03", "/dir03/sub"):
        assert t2.catalogs[mp][0] != t1.catalogs[mp][0]
        assert t2.catalogs[mp][1]["revision"] == "2"
        assert t2.catalogs[mp][1]["previous_revision"] == t1.catalogs[mp][0]
    assert t2.catalogs["/dir07"][0] == t1.catalogs["/dir07"][0]
    # history: trunk, trunk-previous, and the old revision stays readable by its tag
    db = t2.open_db(t2.manifest["H"], "H")
    tags = {r[0]: r[1:] for r in db.execute("SELECT name, hash, revision FROM tags")}
    assert tags["trunk"] == (second["root_hash"], 2)
    assert tags["trunk-previous"] == (first["root_hash"], 1)
    assert len([t for t in tags if t.startswith("generic-")]) == 2
    props = dict(db.execute("SELECT * FROM properties"))
    assert props["previous_revision"] == t1.manifest["H"]
    old = PublishedTree(second["repo_dir"], tmp_path / "old", tags["trunk-previous"][0])
    assert old.read("/dir00/sub/f00000.dat") == t1.read("/dir00/sub/f00000.dat")
    assert int(t2.manifest["T"]) >= int(t1.manifest["T"])


def test_failed_publish_leaves_previous_revision_served(tmp_path, monkeypatch):
    src = make_tree(str(tmp_path / "src"), nfiles=50)
    out = str(tmp_path / "out")
    first = pub.publish(src, FQRN, out)
    repo = first["repo_dir"]
    before = {n: open(os.path.join(repo, n), "rb").read()
              for n in (".cvmfspublished", ".cvmfswhitelist")}
    write_file(os.path.join(src, "special", "added.txt"), b"new\n")

    def crash(*a, **k):   # test double: the process dies after objects and catalogs exist
        raise RuntimeError("simulated crash before signing")
    monkeypatch.setattr(pub, "make_whitelist", crash)
    with pytest.raises(RuntimeError):
        pub.publish(src, FQRN, out)
    monkeypatch.undo()
    for n, data in before.items():
        assert open(os.path.join(repo, n), "rb").read() == data
    tree = PublishedTree(repo, tmp_path / "t")
    assert tree.manifest["S"] == "1" and "/special/added.txt" not in tree.entries
    assert os.listdir(os.path.join(repo, "data", "txn")) == []
    # a bad tree is refused before anything is written, with the offending file named
    os.setxattr(os.path.join(src, "special", "empty"), "user.long", b"v" * 300)
    with pytest.raises(CvmfsexecError) as err:
        pub.publish(src, FQRN, out)
    assert "special/empty" in str(err.value) and "255" in str(err.value)
    os.removexattr(os.path.join(src, "special", "empty"), "user.long")
    assert pub.publish(src, FQRN, out)["revision"] == 2


@pytest.mark.slow
def test_100mb_file_is_chunked(tmp_path, http_server):
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big.bin"
    with open(str(big), "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(100):    # 100 MiB, distinct blocks, generated quickly
            f.write(struct.pack("<I", i) + block[4:])
    write_file(str(src / "exact8M"), b"\1" * pub.CHUNK_SIZE)
    t0 = time.monotonic()
    info = pub.publish(str(src), FQRN, str(tmp_path / "out"))
    elapsed = time.monotonic() - t0
    tree = PublishedTree(info["repo_dir"], tmp_path)
    e = tree.entries["/big.bin"]
    assert e["flags"] == 68 and e["hash"] is None and e["size"] == 100 << 20
    assert [c[1] for c in e["chunks"]] == [pub.CHUNK_SIZE] * 12 + [4 << 20]
    assert tree.catalogs[""][2]["self_chunks"] == 13
    assert tree.catalogs[""][2]["self_chunked_size"] == 100 << 20
    h = hashlib.sha256()
    with open(str(big), "rb") as f:
        h.update(f.read())
    assert hashlib.sha256(tree.read("/big.bin")).digest() == h.digest()
    assert tree.entries["/exact8M"]["flags"] == 4      # a one-chunk file is not chunked
    assert elapsed < 30
    try:
        from launcher.cvmfs.repository import Repository
    except ImportError:
        return
    server = http_server(str(tmp_path / "out" / "srv"))
    repo = Repository(FQRN, reader_config(server, tmp_path / "cache",
                                          str(tmp_path / "out" / "keys")))
    try:
        e = repo.lookup("/big.bin")
        assert e.chunked and e.size == 100 << 20
        handle = repo.open(e)
        try:   # a range across the boundary of chunks 3 and 4
            assert handle.read(3 * pub.CHUNK_SIZE - 10, 20) == \
                tree.read("/big.bin")[3 * pub.CHUNK_SIZE - 10:3 * pub.CHUNK_SIZE + 10]
        finally:
            handle.close()
        assert hashlib.sha256(reader_read(repo, e)).digest() == h.digest()
    finally:
        repo.close()


def test_command_line_and_existing_keys(tmp_path):
    src = make_tree(str(tmp_path / "src"), nfiles=20)
    out1 = str(tmp_path / "one")
    cmd = [sys.executable, os.path.join(ROOT, "build.py"), "publish"]
    r = subprocess.run(cmd + [src, "--fqrn", FQRN, "--out", out1, "--ttl", "300",
                              "--whitelist-days", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "revision 1" in r.stdout
    keys = os.path.join(out1, "keys")
    man = pub.parse_manifest(open(os.path.join(out1, "srv", "cvmfs", FQRN,
                                               ".cvmfspublished"), "rb").read())
    assert man["D"] == "300"
    # --keys with existing keys: no new keys, same certificate
    out2 = str(tmp_path / "two")
    r = subprocess.run(cmd + [src, "--fqrn", FQRN, "--out", out2, "--keys", keys],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(os.path.join(out2, "keys"))
    man2 = pub.parse_manifest(open(os.path.join(out2, "srv", "cvmfs", FQRN,
                                               ".cvmfspublished"), "rb").read())
    assert man2["X"] == man["X"]
    # user errors: one line, no traceback
    for args, code, words in (([str(tmp_path / "missing"), "--fqrn", FQRN, "--out", out1], 2,
                               "not a directory"),
                              ([src, "--fqrn", "bad/name", "--out", out1], 2,
                               "invalid repository name"),
                              ([src, "--fqrn", FQRN], 2, "")):
        r = subprocess.run(cmd + args, capture_output=True, text=True)
        assert r.returncode == code, (args, r.stderr)
        assert words in r.stderr and "Traceback" not in r.stderr
    # a repository in --out whose keys went missing is not re-keyed silently
    shutil.rmtree(keys)
    r = subprocess.run(cmd + [src, "--fqrn", FQRN, "--out", out1], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "keys" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------
# the small.example.org tree rebuilt from the real client's listing

def parse_expected():
    entries = []
    for line in open(EXPECTED, encoding="utf-8"):
        if line.startswith("E\t"):
            entries.append(line.rstrip("\n").split("\t")[1:])
    return entries


def rebuild_small_example(root):
    """Recreate the tree small_example_org-expected.txt lists (random file contents)."""
    os.makedirs(root)
    groups = {}
    entries = parse_expected()
    for typ, mode, size, nlink, group, path, target, xattrs in entries:
        p = root + path
        if typ == "d":
            os.makedirs(p, exist_ok=True)
        elif typ == "l":
            os.symlink(target, p)
        elif group != "-" and group in groups:
            os.link(groups[group], p)
        else:
            write_file(p, os.urandom(int(size)))
            groups[group] = p
        if typ != "l":
            if xattrs != "-":
                for kv in xattrs.split(";"):
                    k, v = kv.split("=", 1)
                    os.setxattr(p, k, v.encode())
    for typ, mode, size, nlink, group, path, target, xattrs in reversed(entries):
        if typ != "l":
            os.chmod(root + path, int(mode, 8))
    os.chown(root + "/owned/by-1000.txt", 1000, 1000)
    os.chown(root + "/owned/by-1000-2000.txt", 1000, 2000)
    return entries


def listing_lines(entries, nlink_of, group_of, target_of, xattrs_of, size_of, mode_of):
    """E-line fields (as in small_example_org-expected.txt) for {path: entry}."""
    lines = []
    groups = {}
    for path in sorted(entries, key=lambda p: (p or "/").encode()):
        e = entries[path]
        m = mode_of(e)
        typ = "d" if stat.S_ISDIR(m) else "l" if stat.S_ISLNK(m) else "f"
        g = group_of(e)
        if g is not None:
            g = groups.setdefault(g, str(len(groups) + 1))
        x = xattrs_of(e)
        lines.append([typ, "%04o" % stat.S_IMODE(m), str(size_of(e)), str(nlink_of(e)),
                      g or "-", path or "/", target_of(e) or "-",
                      ";".join("%s=%s" % (k, x[k].decode()) for k in sorted(x)) or "-"])
    return lines


def tree_listing(tree):
    return listing_lines(
        tree.entries, nlink_of=lambda e: e["hardlinks"] & 0xFFFFFFFF,
        group_of=lambda e: (e["catalog"], e["hardlinks"]) if e["hardlinks"] >> 32 else None,
        target_of=lambda e: e["symlink"], xattrs_of=lambda e: e["xattrs"],
        size_of=lambda e: e["size"], mode_of=lambda e: e["mode"])


def without_dir_sizes(lines):
    # directory st_size comes from the source file system (spec 7.3); ours is a fresh ext4
    # or tmpfs directory, so it is compared separately
    return [l[:2] + (["-"] if l[0] == "d" else [l[2]]) + l[3:] for l in lines]


def test_rebuilt_small_example_matches_real_listing(tmp_path, fixture_repo):
    expected = parse_expected()
    src = str(tmp_path / "src")
    rebuild_small_example(src)
    info = pub.publish(src, "small.example.org", str(tmp_path / "out"))
    ours = tree_listing(PublishedTree(info["repo_dir"], tmp_path / "ours"))
    real = tree_listing(real_catalog(fixture_repo, tmp_path / "real"))
    assert without_dir_sizes(real) == without_dir_sizes(expected)   # the walker is right
    assert without_dir_sizes(ours) == without_dir_sizes(expected)
    src_sizes = {("/" + os.path.relpath(dp, src)).replace("/.", "/").rstrip("/") or "/":
                 os.lstat(dp).st_size for dp, _, _ in os.walk(src)}
    assert [l[2] for l in ours if l[0] == "d"] == \
        [str(src_sizes[l[5]]) if l[5] != "/" else "4096" for l in ours if l[0] == "d"]
    tree = PublishedTree(info["repo_dir"], tmp_path / "t2")
    assert set(tree.catalogs) == {"", "/nested", "/nested/inner"}
    assert (tree.entries["/owned/by-1000-2000.txt"]["uid"],
            tree.entries["/owned/by-1000-2000.txt"]["gid"]) == (1000, 2000)
    assert tree.entries["/big/random24M.bin"]["flags"] == 68


def test_publishing_20000_files_is_fast(tmp_path):
    src = tmp_path / "src"
    for i in range(100):
        d = src / ("d%03d" % i)
        d.mkdir(parents=True)
        for j in range(200):
            write_file(str(d / ("f%03d" % j)), b"%d %d\n" % (i, j))
    t0 = time.monotonic()
    info = pub.publish(str(src), FQRN, str(tmp_path / "out"))
    elapsed = time.monotonic() - t0
    assert info["entries"] == 20101
    assert elapsed < 45, "publishing 20,000 files took %.1f s" % elapsed


# ---------------------------------------------------------------------------
# through the runtime reader (launcher.cvmfs.repository) over real HTTP

def reader_config(server, cache, keys_dir, **extra):
    cfg = {"CVMFS_SERVER_URL": server.url + "/cvmfs/@fqrn@", "CVMFS_HTTP_PROXY": "DIRECT",
           "CVMFS_CACHE_BASE": str(cache), "CVMFS_MAX_RETRIES": "0",
           "CVMFS_TIMEOUT_DIRECT": "5", "CVMFS_BACKOFF_INIT": "0", "CVMFS_KEYS_DIR": keys_dir}
    cfg.update(extra)
    return cfg


def reader_walk(repo):
    out = {"": repo.lookup("")}
    stack = [""]
    while stack:
        path = stack.pop()
        for e in repo.listdir(path):
            out[e.path] = e
            if e.is_dir():
                stack.append(e.path)
    return out


def reader_read(repo, entry):
    h = repo.open(entry)
    try:
        parts, offset = [], 0
        while offset < entry.size:
            block = h.read(offset, 1 << 20)
            assert block, "short read at %d of %s" % (offset, entry.path)
            parts.append(block)
            offset += len(block)
        return b"".join(parts)
    finally:
        h.close()


def compare_reader_with_source(repo, src):
    entries = reader_walk(repo)
    view = source_view(src)
    assert set(entries) - {""} == set(view)
    inodes = {}
    for path, s in view.items():
        e = entries[path]
        assert (e.mode, e.mtime, e.uid, e.gid, e.nlink) == \
            (s["mode"], s["mtime"], s["uid"], s["gid"], s["nlink"]), path
        assert repo.xattrs(e) == s["xattrs"], path
        if stat.S_ISLNK(s["mode"]):
            assert e.symlink == s["symlink"], path
            if "$(" not in s["symlink"]:
                assert repo.readlink(e) == s["symlink"] and e.size == s["size"]
        else:
            assert e.size == s["size"], path
        if stat.S_ISREG(s["mode"]):
            with open(s["src"], "rb") as f:
                assert reader_read(repo, e) == f.read(), path
            inodes.setdefault(e.inode, set()).add((os.path.dirname(path), s["ino"]))
    # names share an inode exactly when they are hard links in one directory
    assert all(len(v) == 1 for v in inodes.values())
    return entries


def test_reader_round_trip_revisions_and_tags(tmp_path, http_server):
    repository = pytest.importorskip("launcher.cvmfs.repository")
    src = make_tree(str(tmp_path / "src"), nfiles=1500)
    out = str(tmp_path / "out")
    first = pub.publish(src, FQRN, out, ttl=60)
    server = http_server(os.path.join(out, "srv"))
    keys = os.path.join(out, "keys")
    now = [time.time()]
    repo = repository.Repository(FQRN, reader_config(server, tmp_path / "cache", keys),
                                 clock=lambda: now[0])
    try:
        assert repo.revision == 1
        compare_reader_with_source(repo, src)
        old_f0 = open(os.path.join(src, "dir00", "sub", "f00000.dat"), "rb").read()
        # second revision: the running reader switches after the TTL
        write_file(os.path.join(src, "dir03", "sub", "f00006.dat"), b"changed\n")
        write_file(os.path.join(src, "special", "added.txt"), b"new\n")
        os.unlink(os.path.join(src, "dir00", "sub", "f00000.dat"))
        pub.publish(src, FQRN, out, ttl=60)
        assert not repo.reload()
        now[0] += 61
        assert repo.reload() and repo.revision == 2
        compare_reader_with_source(repo, src)
    finally:
        repo.close()
    old = repository.Repository(FQRN, reader_config(server, tmp_path / "cache2", keys,
                                                    CVMFS_REPOSITORY_TAG="trunk-previous"))
    try:
        assert old.revision == 1 and str(old.root_hash).startswith(first["root_hash"])
        assert old.read_file("/dir00/sub/f00000.dat") == old_f0
        assert old.lookup("/special/added.txt") is None
    finally:
        old.close()


def reader_listing(repo):
    """E lines of small_example_org-expected.txt as a list of fields, from a Repository."""
    entries = reader_walk(repo)
    count = {}
    for e in entries.values():
        count[e.inode] = count.get(e.inode, 0) + 1
    return listing_lines(
        entries, nlink_of=lambda e: e.nlink,
        group_of=lambda e: e.inode if count[e.inode] > 1 else None,
        target_of=lambda e: repo.readlink(e) if e.is_symlink() else None,
        xattrs_of=repo.xattrs, size_of=lambda e: e.size, mode_of=lambda e: e.mode)


def test_reader_shows_rebuilt_small_example_like_the_real_one(tmp_path, http_server,
                                                              fixture_repo):
    repository = pytest.importorskip("launcher.cvmfs.repository")
    src = str(tmp_path / "src")
    rebuild_small_example(src)
    out = str(tmp_path / "out")
    pub.publish(src, "small.example.org", out)
    ours_srv = http_server(os.path.join(out, "srv"))
    real_srv = http_server(os.path.join(str(fixture_repo), "srv"))
    listings = []
    for server, keys in ((ours_srv, os.path.join(out, "keys")),
                         (real_srv, os.path.join(str(fixture_repo), "keys"))):
        repo = repository.Repository("small.example.org", reader_config(
            server, tmp_path / ("cache%d" % len(listings)), keys))
        try:
            listings.append(reader_listing(repo))
            big = repo.lookup("/big/random24M.bin")
            assert big.chunked and len(reader_read(repo, big)) == 24 << 20
        finally:
            repo.close()
    ours, real = listings
    assert without_dir_sizes(real) == without_dir_sizes(parse_expected())
    assert without_dir_sizes(ours) == without_dir_sizes(real)


def test_output_inside_source_is_left_out(tmp_path):
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    write_file(str(src / "docs" / "a.txt"), b"a\n")
    out = str(src / "build")
    pub.publish(str(src), FQRN, out)
    info = pub.publish(str(src), FQRN, out)     # the first revision's files exist now
    tree = PublishedTree(info["repo_dir"], tmp_path / "t")
    assert info["revision"] == 2
    assert sorted(tree.entries) == ["", "/docs", "/docs/a.txt"]


def test_reader_refuses_after_whitelist_days(tmp_path, http_server):
    repository = pytest.importorskip("launcher.cvmfs.repository")
    from launcher.errors import CvmfsexecError as Refused
    src = tmp_path / "src"
    src.mkdir()
    write_file(str(src / "a"), b"a\n")
    out = str(tmp_path / "out")
    pub.publish(str(src), FQRN, out, whitelist_days=2)
    server = http_server(os.path.join(out, "srv"))
    cfg = reader_config(server, tmp_path / "c1", os.path.join(out, "keys"))
    repo = repository.Repository(FQRN, cfg, clock=lambda: time.time() + 86400)
    assert repo.read_file("/a") == b"a\n"
    repo.close()
    with pytest.raises(Refused) as err:
        repository.Repository(FQRN, dict(cfg, CVMFS_CACHE_BASE=str(tmp_path / "c2")),
                              clock=lambda: time.time() + 3 * 86400)
    assert "expired" in str(err.value)


def test_unwritable_output_is_a_user_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    blocker = tmp_path / "file"
    write_file(str(blocker), b"")
    with pytest.raises(CvmfsexecError) as err:
        pub.publish(str(src), FQRN, str(blocker / "out"))
    assert "file/out" in str(err.value)
