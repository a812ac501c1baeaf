"""The Repository facade against real repositories served by a real HTTP server.

small.example.org (written by the real cvmfs 2.12 server tools) must look
exactly as the real cvmfs 2.12 client showed it (small_example_org-expected.txt);
legacy_aufs.cern.ch (2.1 era) as its README documents.  Attacks (tampered
objects and catalogs) must be refused with EIO / a clear error, and a warm cache
must keep the repository readable when every server is down.
"""
import errno
import hashlib
import os
import subprocess
import tarfile
import time

import pytest

from conftest import FIXTURES
from launcher.errors import CvmfsexecError
from launcher.cvmfs.objects import ObjectError
from launcher.cvmfs.repository import Repository, RepositoryError

SMALL = "small.example.org"
LEGACY = "legacy_aufs.cern.ch"
EXPECTED = os.path.join(FIXTURES, "small_example_org-expected.txt")
LEGACY_ROOT = "6ed3d49a5c64f21f36936ab350d49aaf57585b9a"
BEFORE_LEGACY_EXPIRY = 1445500000       # 2015-10-22, the whitelist expired 2015-11-20


# --- fixtures ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def fixtures_dir(tmp_path_factory):
    """The fixture tarballs extracted once per module (never copied into the project)."""
    root = tmp_path_factory.mktemp("fixtures")
    for name in ("small_example_org-repo", "small_example_org-keys",
                 "legacy_aufs_repo_21-repo", "legacy_aufs_repo_21-keys"):
        with tarfile.open(os.path.join(FIXTURES, name + ".tar.gz")) as tar:
            tar.extractall(str(root / name))
    return root


def small_srv(fixtures_dir):
    return str(fixtures_dir / "small_example_org-repo" / "srv")


def small_keys(fixtures_dir):
    return str(fixtures_dir / "small_example_org-keys" / "keys")


def legacy_srv(fixtures_dir):
    return str(fixtures_dir / "legacy_aufs_repo_21-repo" / "srv")


def legacy_keys(fixtures_dir):
    return str(fixtures_dir / "legacy_aufs_repo_21-keys" / "etc" / "cvmfs" / "keys")


def config_for(server_urls, cache_base, keys_dir=None, **extra):
    cfg = {
        "CVMFS_SERVER_URL": ";".join(u + "/cvmfs/@fqrn@" for u in server_urls),
        "CVMFS_HTTP_PROXY": "DIRECT",
        "CVMFS_CACHE_BASE": str(cache_base),
        "CVMFS_MAX_RETRIES": "0",
        "CVMFS_TIMEOUT_DIRECT": "5",
        "CVMFS_BACKOFF_INIT": "0",
    }
    if keys_dir:
        cfg["CVMFS_KEYS_DIR"] = keys_dir
    cfg.update(extra)
    return cfg


def linked_copy(src, dest):
    """A copy of a served tree made of hard links: cheap; replace files, never edit them."""
    subprocess.check_call(["cp", "-al", src, dest])
    return dest


def replace_file(path, data):
    os.unlink(path)
    with open(path, "wb") as f:
        f.write(data)


def object_file(srv, fqrn, hash_hex, suffix=""):
    return os.path.join(srv, "cvmfs", fqrn, "data", hash_hex[:2], hash_hex[2:] + suffix)


# --- the listing format of small_example_org-expected.txt ----------------------------
def walk(repo):
    """Every entry of the repository (root included), recursively."""
    out = [repo.lookup("")]
    stack = [""]
    while stack:
        path = stack.pop()
        for e in repo.listdir(path):
            out.append(e)
            if e.is_dir():
                stack.append(e.path)
    return out


def render_listing(repo):
    """E and S lines exactly as in small_example_org-expected.txt (TAB-separated)."""
    entries = sorted(walk(repo), key=lambda e: (e.path or "/").encode("utf-8"))
    names_per_inode = {}
    for e in entries:
        names_per_inode[e.inode] = names_per_inode.get(e.inode, 0) + 1
    groups = {}
    lines, sums = [], []
    for e in entries:
        kind = "d" if e.is_dir() else "l" if e.is_symlink() else "f"
        group = "-"
        if names_per_inode[e.inode] > 1:
            group = str(groups.setdefault(e.inode, len(groups) + 1))
        xattrs = repo.xattrs(e)
        xtext = ";".join("%s=%s" % (k, xattrs[k].decode("utf-8"))
                         for k in sorted(xattrs)) or "-"
        target = repo.readlink(e) if e.is_symlink() else "-"
        lines.append("\t".join(["E", kind, "%04o" % (e.mode & 0o7777), str(e.size), str(e.nlink),
                                group, e.path or "/", target, xtext]))
        if e.is_file():
            sums.append("\t".join(["S", sha256_of(repo, e), e.path]))
    return lines + sums


def sha256_of(repo, entry):
    h = hashlib.sha256()
    handle = repo.open(entry)
    try:
        offset = 0
        while offset < entry.size:
            block = handle.read(offset, 1 << 20)
            assert block, "short read at %d of %s" % (offset, entry.path)
            h.update(block)
            offset += len(block)
    finally:
        handle.close()
    return h.hexdigest()


def expected_lines():
    with open(EXPECTED, encoding="utf-8") as f:
        return [ln.rstrip("\n") for ln in f if ln[:2] in ("E\t", "S\t")]


def expected_r1_lines():
    """Revision 1: the newest listing with the documented differences applied."""
    by_key = {}
    order = []
    for ln in expected_lines():
        f = ln.split("\t")
        key = (f[0], f[6] if f[0] == "E" else f[2])
        by_key[key] = ln
        order.append(key)
    with open(EXPECTED, encoding="utf-8") as f:
        r1 = [ln.split("r1: ", 1)[1].rstrip("\n").split(" | ") for ln in f if ln.startswith("#   r1: ")]
    assert len(r1) == 4
    for f in r1:
        key = (f[0], f[6] if f[0] == "E" else f[2])
        if key not in by_key:
            order.append(key)
        by_key[key] = "\t".join(f)
    for key in (("E", "/docs/added-in-r2.txt"), ("S", "/docs/added-in-r2.txt")):
        del by_key[key]
        order.remove(key)
    es = sorted((k for k in order if k[0] == "E"), key=lambda k: k[1].encode("utf-8"))
    ss = sorted((k for k in order if k[0] == "S"), key=lambda k: k[1].encode("utf-8"))
    return [by_key[k] for k in es + ss]


def assert_same_lines(got, want):
    assert len(got) == len(want), "got %d lines, expected %d" % (len(got), len(want))
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, "line %d differs:\n got      %r\n expected %r" % (i, g, w)


# --- small.example.org ------------------------------------------------------------------
def test_small_example_matches_the_real_client_exactly(fixtures_dir, http_server, tmp_path):
    srv = http_server(small_srv(fixtures_dir))
    repo = Repository(SMALL, config_for([srv.url], tmp_path / "cache", small_keys(fixtures_dir)))
    try:
        assert repo.revision == 2
        assert repo.root_hash == "1d3e28b4742cadf3966971fcbd28b32d7b8ea0f4"
        assert_same_lines(render_listing(repo), expected_lines())
        # owners are not in the columns; the expected file's notes give them
        assert (repo.lookup("/owned/by-1000-2000.txt").uid,
                repo.lookup("/owned/by-1000-2000.txt").gid) == (1000, 2000)
        assert repo.lookup("/README.txt").uid == 0
        # every nested catalog got attached by the walk: root, /nested, /nested/inner
        assert repo.info()["nclg"] == 3
        # statistics: entries of all three catalogs (mount points counted twice), as statfs
        assert repo.statfs()["files"] == 342
        assert repo.repo_counters()["chunked"] == 1
        assert repo.info()["expires"] == "3"       # whole minutes left of the 240 s TTL
    finally:
        repo.close()


def test_small_example_revision_1_through_tag(fixtures_dir, http_server, tmp_path):
    srv = http_server(small_srv(fixtures_dir))
    cfg = config_for([srv.url], tmp_path / "cache", small_keys(fixtures_dir),
                     CVMFS_REPOSITORY_TAG="trunk-previous")
    repo = Repository(SMALL, cfg)
    try:
        assert repo.revision == 1
        assert repo.root_hash == "8081d97f5d901980d7ab953f43e698a688b28e09"
        assert repo.info()["expires"] == "never (fixed root catalog)"
        assert repo.reload() is False
        assert_same_lines(render_listing(repo), expected_r1_lines())
    finally:
        repo.close()


def test_small_example_repository_date_and_unknown_tag(fixtures_dir, http_server, tmp_path):
    srv = http_server(small_srv(fixtures_dir))
    base = config_for([srv.url], tmp_path / "cache", small_keys(fixtures_dir))
    # between the two publishes (16:56:10 and 16:56:21): revision 1
    repo = Repository(SMALL, dict(base, CVMFS_REPOSITORY_DATE="2026-11-24T16:56:15Z"))
    assert repo.revision == 1 and repo.lookup("/data/b/b-010.bin") is not None
    repo.close()
    with pytest.raises(CvmfsexecError) as info:
        Repository(SMALL, dict(base, CVMFS_REPOSITORY_TAG="no-such-tag"))
    assert "no-such-tag" in str(info.value) and "trunk-previous" in info.value.hint


def test_chunked_file_byte_ranges_fetch_chunks_lazily(fixtures_dir, http_server, tmp_path):
    srv = http_server(small_srv(fixtures_dir))
    repo = Repository(SMALL, config_for([srv.url], tmp_path / "cache", small_keys(fixtures_dir)))
    try:
        e = repo.lookup("/big/random24M.bin")
        assert e.chunked and e.content_hash is None and e.size == 25165824
        chunks = repo.chunk_list(e)
        assert [c[1] for c in chunks] == [0, 4687020, 13401834, 19531321]
        assert chunks[0][0] == "21502cc7180a7eaee9e2abc83183956b491f9acb"   # user.chunk_list form
        from launcher.cvmfs.hashes import ContentHash
        before = repo.objects.stats["misses"]
        h = repo.open(e)
        try:
            assert repo.objects.stats["misses"] == before      # nothing fetched on open
            # a range inside the last chunk fetches that chunk only
            assert len(h.read(19531321 + 10, 20)) == 20
            assert repo.objects.stats["misses"] - before == 1
            cached = [repo.cache.lookup(ContentHash.parse(c[0])) is not None for c in chunks]
            assert cached == [False, False, False, True]
            # a range across the boundary of chunks 0 and 1
            data = h.read(4687020 - 10, 20)
            assert len(data) == 20
            assert h.read(e.size - 5, 100) == h.read(e.size - 5, 5) and len(h.read(e.size - 5, 100)) == 5
            assert h.read(e.size, 10) == b""
            whole = b"".join(h.read(off, 3000000) for off in range(0, e.size, 3000000))
        finally:
            h.close()
        assert hashlib.sha256(whole).hexdigest() == \
            "b0d06194a4d4ebfb24d857d837eab1c76b86a2fb07df4ba39c745c68874c942b"
        assert whole[4687020 - 10:4687020 + 10] == data
    finally:
        repo.close()


def test_inodes_hardlinks_and_mountpoints(fixtures_dir, http_server, tmp_path):
    srv = http_server(small_srv(fixtures_dir))
    repo = Repository(SMALL, config_for([srv.url], tmp_path / "cache", small_keys(fixtures_dir)))
    try:
        root = repo.lookup("/")
        assert root.inode == 256 and root.nlink == 11 and repo.lookup("") .inode == 256
        triple = [repo.lookup("/data/hl/triple-%d.dat" % i) for i in (1, 2, 3)]
        assert len(set(e.inode for e in triple)) == 1 and all(e.nlink == 3 for e in triple)
        # a mount point has the inode of its row in the parent catalog, however reached
        nested_by_lookup = repo.lookup("/nested")
        listed = [e for e in repo.listdir("") if e.name == "nested"][0]
        assert nested_by_lookup.inode == listed.inode and listed.is_nested_root
        inner = repo.lookup("/nested/inner")
        assert inner.inode == [e for e in repo.listdir("/nested") if e.name == "inner"][0].inode
        pair = [repo.lookup("/nested/inner/pair-b." + s) for s in ("bin", "hl")]
        assert pair[0].inode == pair[1].inode != triple[0].inode
        # inodes stay stable within the revision
        assert repo.lookup("/data/hl/triple-2.dat").inode == triple[0].inode
        assert repo.lookup("/no/such/path") is None
        assert repo.lookup("/nested/inner/no-such") is None
        with pytest.raises(OSError) as info:
            repo.listdir("/README.txt")
        assert info.value.errno == errno.ENOTDIR
    finally:
        repo.close()


# --- legacy_aufs.cern.ch ---------------------------------------------------------------------
LEGACY_TREE = """\
bar baz foo hardlink_bar hardlink_baz hardlink_foo
doesnt_need_migration/{.cvmfscatalog,bar,baz,foo,symlink_bar->bar,symlink_foo->foo}
doesnt_need_migration/doesnt_need_migration_either/{.cvmfscatalog,bar,baz,foo,symlink_foo->foo}
doesnt_need_migration/simple_directory/{bar,baz,foo,symlink_foo->foo}
needs_commit_due_to_child/{.cvmfscatalog,bar,baz,foo,symlink_baz->baz}
needs_commit_due_to_child/needs_migration/{.cvmfscatalog,bar,baz,foo,hardlink_bar_1,hardlink_bar_2,hardlink_foo}
needs_commit_due_to_child/simple_directory/{bar,baz,foo,symlink_foo->foo}
needs_migration/{.cvmfscatalog,bar,baz,foo,hardlink_bar,symlink_foo->foo,hardlink_symlink_foo_1,hardlink_symlink_foo_2}
needs_migration/doesnt_need_migration/{.cvmfscatalog,bar,baz,foo}
needs_migration/simple_directory/{bar,baz,foo,hardlink_foo,symlink_foo->foo}
"""
LEGACY_HARDLINKS = [
    ["/foo", "/hardlink_foo"], ["/bar", "/hardlink_bar"], ["/baz", "/hardlink_baz"],
    ["/needs_commit_due_to_child/needs_migration/" + n for n in ("bar", "hardlink_bar_1",
                                                                 "hardlink_bar_2")],
    ["/needs_commit_due_to_child/needs_migration/" + n for n in ("foo", "hardlink_foo")],
    ["/needs_migration/bar", "/needs_migration/hardlink_bar"],
    ["/needs_migration/" + n for n in ("symlink_foo", "hardlink_symlink_foo_1",
                                       "hardlink_symlink_foo_2")],
    ["/needs_migration/simple_directory/foo", "/needs_migration/simple_directory/hardlink_foo"],
]


def legacy_expected():
    """{path: symlink target or None} of every non-directory entry the README lists."""
    out = {}
    for line in LEGACY_TREE.splitlines():
        if "/{" in line:
            d, names = line.split("/{")
            d, names = "/" + d, names.rstrip("}").split(",")
        else:
            d, names = "", line.split()
        for n in names:
            name, _, target = n.partition("->")
            out[d + "/" + name] = target or None
    # the symlinks hard-linked to needs_migration/symlink_foo point to foo too
    for n in ("hardlink_symlink_foo_1", "hardlink_symlink_foo_2"):
        out["/needs_migration/" + n] = "foo"
    # The README lists this one as a symlink, but the real catalog (a5/6911fb...C) has a
    # regular file (mode 0100664, flags 4) holding "foo\n": the repository wins.
    out["/doesnt_need_migration/doesnt_need_migration_either/symlink_foo"] = None
    return out


def legacy_content(path):
    name = path.rsplit("/", 1)[1]
    if name == ".cvmfscatalog":
        return b""
    for prefix in ("hardlink_", "symlink_"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    base = name
    return (base.split("_")[0] + "\n").encode()


def check_legacy_tree(repo):
    entries = walk(repo)
    assert len(entries) == 64
    by_path = dict((e.path, e) for e in entries)
    expected = legacy_expected()
    files = dict((p, e) for p, e in by_path.items() if not e.is_dir())
    assert sorted(files) == sorted(expected)
    for path, target in expected.items():
        e = files[path]
        if target is not None:
            assert e.is_symlink() and repo.readlink(e) == target and e.size == len(target), path
        else:
            assert e.is_file() and repo.read_file(path) == legacy_content(path), path
    for group in LEGACY_HARDLINKS:
        members = [by_path[p] for p in group]
        assert len(set(m.inode for m in members)) == 1, group
        assert all(m.nlink == len(group) for m in members), group
    ungrouped = [e for p, e in files.items() if not any(p in g for g in LEGACY_HARDLINKS)]
    assert len(set(e.inode for e in ungrouped)) == len(ungrouped)
    assert repo.info()["nclg"] == 7          # the root and the six directories with a .cvmfscatalog


def test_legacy_full_chain_with_clock_before_expiry(fixtures_dir, http_server, tmp_path):
    srv = http_server(legacy_srv(fixtures_dir))
    cfg = config_for([srv.url], tmp_path / "cache", legacy_keys(fixtures_dir))
    repo = Repository(LEGACY, cfg, clock=lambda: BEFORE_LEGACY_EXPIRY)
    try:
        assert repo.revision == 2 and repo.root_hash == LEGACY_ROOT
        check_legacy_tree(repo)
    finally:
        repo.close()
    # today the whitelist has expired: refused, naming the link that failed
    with pytest.raises(CvmfsexecError) as info:
        Repository(LEGACY, cfg)
    assert "expired" in str(info.value)


def test_legacy_root_hash_pin_today(fixtures_dir, http_server, tmp_path):
    srv = http_server(legacy_srv(fixtures_dir))
    # no keys at all: a pinned root catalog skips manifest and whitelist, as in cvmfs
    cfg = config_for([srv.url], tmp_path / "cache", None, CVMFS_ROOT_HASH=LEGACY_ROOT,
                     CVMFS_KEYS_DIR=str(tmp_path / "no-keys"))
    repo = Repository(LEGACY, cfg)
    try:
        assert repo.root_hash == LEGACY_ROOT and repo.fixed
        check_legacy_tree(repo)
    finally:
        repo.close()


# --- attacks -----------------------------------------------------------------------------------
def test_tampered_object_is_eio_never_data(fixtures_dir, http_server, tmp_path):
    srv_dir = linked_copy(legacy_srv(fixtures_dir), str(tmp_path / "srv"))
    foo = object_file(srv_dir, LEGACY, "d85ab7e835750785b0535d4fbba7d59e921b1f48")
    import zlib
    replace_file(foo, zlib.compress(b"evil\n"))
    srv = http_server(srv_dir)
    repo = Repository(LEGACY, config_for([srv.url], tmp_path / "cache", None,
                                         CVMFS_ROOT_HASH=LEGACY_ROOT))
    try:
        e = repo.lookup("/foo")
        with pytest.raises(ObjectError) as info:
            repo.open(e)
        assert info.value.errno == errno.EIO and isinstance(info.value, OSError)
        assert "d85ab7e8" in str(info.value)
        assert repo.read_file("/bar") == b"bar\n"     # other objects still fine
    finally:
        repo.close()


def test_tampered_catalogs_are_refused(fixtures_dir, http_server, tmp_path):
    import zlib
    srv_dir = linked_copy(legacy_srv(fixtures_dir), str(tmp_path / "srv"))
    # a nested catalog whose bytes changed: paths below it are EIO, the rest works
    nested = object_file(srv_dir, LEGACY, "8e2b7e33e9f84d5104be60a8338d1d9fd6f0ce51", "C")
    with open(nested, "rb") as f:
        db = bytearray(zlib.decompress(f.read()))
    db[-100] ^= 0xFF
    replace_file(nested, zlib.compress(bytes(db)))
    srv = http_server(srv_dir)
    cfg = config_for([srv.url], tmp_path / "cache", legacy_keys(fixtures_dir))
    repo = Repository(LEGACY, cfg, clock=lambda: BEFORE_LEGACY_EXPIRY)
    try:
        assert repo.lookup("/needs_migration").is_dir()       # the row lives in the root catalog
        with pytest.raises(ObjectError) as info:
            repo.lookup("/needs_migration/foo")
        assert info.value.errno == errno.EIO
        with pytest.raises(ObjectError):
            repo.listdir("/needs_migration")
        assert repo.read_file("/doesnt_need_migration/foo") == b"foo\n"
    finally:
        repo.close()
    # a root catalog that does not match the signed manifest: the open fails clearly
    root = object_file(srv_dir, LEGACY, LEGACY_ROOT, "C")
    with open(root, "rb") as f:
        data = f.read()
    replace_file(root, data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(RepositoryError) as info:
        Repository(LEGACY, dict(cfg, CVMFS_CACHE_BASE=str(tmp_path / "cache2")),
                   clock=lambda: BEFORE_LEGACY_EXPIRY)
    assert "root catalog" in str(info.value) and LEGACY_ROOT in str(info.value)


# --- offline ---------------------------------------------------------------------------------------
def test_all_servers_down_with_warm_cache(fixtures_dir, http_server, tmp_path):
    srv = http_server(small_srv(fixtures_dir))
    cfg = config_for([srv.url], tmp_path / "cache", small_keys(fixtures_dir))
    repo = Repository(SMALL, cfg)
    assert repo.read_file("/nested/inner/i-005.dat")
    assert len(repo.listdir("/data/a")) == 60
    repo.close()
    srv.stop()
    # a second server that was never up: both hosts are down
    cfg["CVMFS_SERVER_URL"] += ";http://127.0.0.1:9/cvmfs/@fqrn@"
    repo = Repository(SMALL, cfg)
    try:
        assert repo.offline and repo.revision == 2
        assert hashlib.sha256(repo.read_file("/nested/inner/i-005.dat")).hexdigest() == \
            "a0c520d19a71aa22cc762e7321cf5e62237287da96da527d9e0976e676a01618"
        assert len(repo.listdir("/data/a")) == 60
        # an object that was never fetched cannot be read: EIO, not a hang or a traceback
        with pytest.raises(ObjectError) as info:
            repo.read_file("/README.txt")
        assert info.value.errno == errno.EIO
    finally:
        repo.close()
    # without a cache there is nothing to fall back on: a clear error
    with pytest.raises(RepositoryError) as info:
        Repository(SMALL, dict(cfg, CVMFS_CACHE_BASE=str(tmp_path / "empty")))
    assert "no copy in the cache" in str(info.value)


# --- published repositories (builder.publish): updates, variant symlinks ----------------------
def test_ttl_reload_switches_revision_and_variant_symlinks(http_server, tmp_path):
    from builder.publish import publish
    fqrn = "reload.example.org"
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("one\n")
    os.symlink("$(FEAT_VAR)/x", str(src / "var"))
    os.symlink("$(FEAT_UNSET:-dflt)/y", str(src / "var-default"))
    info = publish(str(src), fqrn, str(tmp_path / "out"), ttl=60)
    srv = http_server(str(tmp_path / "out" / "srv"))
    now = [time.time()]
    cfg = config_for([srv.url], tmp_path / "cache", info["keys_dir"], FEAT_VAR="hello")
    repo = Repository(fqrn, cfg, clock=lambda: now[0])
    try:
        first = repo.revision
        var = repo.lookup("/var")
        assert repo.readlink(var) == "hello/x" and var.size == len("hello/x")
        assert repo.readlink(repo.lookup("/var-default")) == "dflt/y"
        old = repo.lookup("/a.txt")
        (src / "a.txt").write_text("two!\n")
        (src / "b.txt").write_text("new\n")
        publish(str(src), fqrn, str(tmp_path / "out"), ttl=60)
        assert repo.reload() is False                      # TTL not over: same revision
        assert repo.read_file("/a.txt") == b"one\n" and repo.lookup("/b.txt") is None
        now[0] += 61
        assert repo.reload() is True
        assert repo.revision == first + 1
        assert repo.read_file("/a.txt") == b"two!\n" and repo.read_file("/b.txt") == b"new\n"
        h = repo.open(old)                                  # an old entry still reads its data
        assert h.read(0, 100) == b"one\n"
        h.close()
        # servers gone: the update check fails quietly, the revision keeps working
        srv.stop()
        now[0] += 61
        assert repo.reload() is False
        assert repo.read_file("/b.txt") == b"new\n"
        assert repo.expires_in() == pytest.approx(180, abs=1)
    finally:
        repo.close()


# --- catalog features the fixtures lack, on an edited copy of a real catalog ------------------------
def edited_legacy_repository(fixtures_dir, http_server, tmp_path, edit):
    """The real legacy repository with its root catalog changed by edit(sqlite3 connection,
    srv_dir), served on 127.0.0.1 and opened pinned to the new root (CVMFS_ROOT_HASH, as
    cvmfs allows), since an edited catalog no longer matches the signed manifest."""
    import sqlite3
    import zlib
    srv_dir = linked_copy(legacy_srv(fixtures_dir), str(tmp_path / "srv"))
    db = str(tmp_path / "root.db")
    with open(object_file(srv_dir, LEGACY, LEGACY_ROOT, "C"), "rb") as f:
        open(db, "wb").write(zlib.decompress(f.read()))
    conn = sqlite3.connect(db)
    edit(conn, srv_dir)
    conn.commit()
    conn.close()
    blob = zlib.compress(open(db, "rb").read())
    new_root = hashlib.sha1(blob).hexdigest()
    with open(object_file(srv_dir, LEGACY, new_root, "C"), "wb") as f:
        f.write(blob)
    srv = http_server(srv_dir)
    return Repository(LEGACY, config_for([srv.url], tmp_path / "cache", None,
                                         CVMFS_ROOT_HASH=new_root))


def test_hidden_entries_and_uncompressed_objects(fixtures_dir, http_server, tmp_path):
    """/baz gets the hidden flag, /bar points to an object stored raw (compression bits = none)."""
    from launcher.cvmfs.catalog import path_key
    raw = b"stored raw\n"
    raw_hash = hashlib.sha1(raw).hexdigest()

    def edit(conn, srv_dir):
        with open(object_file(srv_dir, LEGACY, raw_hash), "wb") as f:
            f.write(raw)
        conn.execute("UPDATE catalog SET flags = flags | 32768 WHERE md5path_1=? AND md5path_2=?",
                     path_key("/baz"))
        conn.execute("UPDATE catalog SET flags = 4 | 2048, hash=?, size=? "
                     "WHERE md5path_1=? AND md5path_2=?",
                     (bytes.fromhex(raw_hash), len(raw)) + path_key("/bar"))
    repo = edited_legacy_repository(fixtures_dir, http_server, tmp_path, edit)
    try:
        names = [e.name for e in repo.listdir("")]
        assert "baz" not in names and "hardlink_baz" in names and "foo" in names
        baz = repo.lookup("/baz")                   # hidden: not listed, but resolvable
        assert baz is not None and baz.hidden and repo.read_file("/baz") == b"baz\n"
        bar = repo.lookup("/bar")
        assert not bar.compressed and bar.size == len(raw)
        assert repo.read_file("/bar") == raw
        assert repo.read_file("/needs_migration/foo") == b"foo\n"   # nested catalogs as before
    finally:
        repo.close()


SUBPROCESS_WALK = r"""
import binascii, sys
sys.path.insert(0, sys.argv[1])
from launcher.cvmfs.repository import Repository
cfg = {"CVMFS_SERVER_URL": sys.argv[2], "CVMFS_HTTP_PROXY": "DIRECT",
       "CVMFS_CACHE_BASE": sys.argv[3], "CVMFS_ROOT_HASH": sys.argv[4], "CVMFS_MAX_RETRIES": "0"}
repo = Repository("legacy_aufs.cern.ch", cfg)
stack = [""]
while stack:
    for e in repo.listdir(stack.pop()):
        if e.is_dir():
            stack.append(e.path)
        elif e.is_file():
            print(e.path, binascii.hexlify(repo.read_file(e.path)).decode())
        else:
            print(e.path, "->" + repo.readlink(e))
repo.close()
"""


def _python_params():
    from conftest import python_oldest_and_newest
    return python_oldest_and_newest()


@pytest.mark.parametrize("python", _python_params())
def test_runs_on_oldest_and_newest_python(python, fixtures_dir, http_server, tmp_path):
    """The runtime library must work on EL8's Python 3.6 as on the newest one."""
    srv = http_server(legacy_srv(fixtures_dir))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.check_output(
        [python, "-c", SUBPROCESS_WALK, root, srv.url + "/cvmfs/@fqrn@",
         str(tmp_path / "cache"), LEGACY_ROOT], universal_newlines=True, timeout=120)
    got = dict(line.split(" ", 1) for line in out.splitlines())
    want = {}
    for path, target in legacy_expected().items():
        want[path] = "->" + target if target else legacy_content(path).hex()
    assert got == want


def test_concurrent_threads_see_the_same_tree(fixtures_dir, http_server, tmp_path):
    """A multi-threaded FUSE server calls in from several threads at once."""
    import threading
    srv = http_server(legacy_srv(fixtures_dir))
    repo = Repository(LEGACY, config_for([srv.url], tmp_path / "cache", None,
                                         CVMFS_ROOT_HASH=LEGACY_ROOT))
    results, errors = [], []

    def work():
        try:
            seen = {}
            for e in walk(repo):
                seen[e.path] = (e.inode, repo.read_file(e.path) if e.is_file() else None)
            results.append(seen)
        except Exception as exc:       # reported below with the thread's failure
            errors.append(exc)
    threads = [threading.Thread(target=work) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and len(results) == 4
        assert all(r == results[0] for r in results[1:]) and len(results[0]) == 64
        assert repo.info()["nclg"] == 7          # each nested catalog attached once
    finally:
        repo.close()


def test_damaged_cached_catalog_is_fetched_again(fixtures_dir, http_server, tmp_path):
    from launcher.cvmfs.hashes import ContentHash
    srv = http_server(legacy_srv(fixtures_dir))
    cfg = config_for([srv.url], tmp_path / "cache", None, CVMFS_ROOT_HASH=LEGACY_ROOT)
    repo = Repository(LEGACY, cfg)
    cached = repo.cache.path(ContentHash.parse(LEGACY_ROOT, suffix="C"))
    repo.close()
    os.unlink(cached)
    with open(cached, "wb") as f:
        f.write(b"\0" * 4096)            # e.g. a disk error: not an SQLite file any more
    repo = Repository(LEGACY, cfg)
    try:
        assert repo.read_file("/foo") == b"foo\n"
        with open(cached, "rb") as f:
            assert f.read(16) == b"SQLite format 3\0"
    finally:
        repo.close()


def test_ownership_world_readable_and_max_ttl(fixtures_dir, http_server, tmp_path):
    srv = http_server(legacy_srv(fixtures_dir))
    cfg = config_for([srv.url], tmp_path / "cache", legacy_keys(fixtures_dir))
    repo = Repository(LEGACY, cfg, clock=lambda: BEFORE_LEGACY_EXPIRY)
    foo = repo.lookup("/foo")
    assert (foo.uid, foo.gid) == (1000, 1000)           # catalog values by default
    assert repo.expires_in() == 240                      # no TTL property: 240 s, not D900
    repo.close()
    repo = Repository(LEGACY, dict(cfg, CVMFS_CLAIM_OWNERSHIP="yes", CVMFS_MAX_TTL="1"),
                      clock=lambda: BEFORE_LEGACY_EXPIRY)
    try:
        foo = repo.lookup("/foo")
        assert (foo.uid, foo.gid) == (os.getuid(), os.getgid())
        assert repo.expires_in() == 60                   # CVMFS_MAX_TTL is in minutes
    finally:
        repo.close()


# --- anti-rollback (breadcrumb) and the blacklist (spec 10 steps 2 and 8) ----------------------
def publish_two_revisions(tmp_path, fqrn):
    """Revisions 1 and 2 published 10 s apart; -> (publish info, manifest path, rev-1 bytes)."""
    from builder.publish import publish
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("one\n")
    t0 = int(time.time()) - 60
    info = publish(str(src), fqrn, str(tmp_path / "out"), now=t0)
    manifest = os.path.join(info["repo_dir"], ".cvmfspublished")
    with open(manifest, "rb") as f:
        first = f.read()
    (src / "a.txt").write_text("two\n")
    publish(str(src), fqrn, str(tmp_path / "out"), now=t0 + 10)
    return info, manifest, first


def test_replayed_old_manifest_is_refused_as_a_rollback(http_server, tmp_path):
    fqrn = "rollback.example.org"
    info, manifest, first = publish_two_revisions(tmp_path, fqrn)
    srv = http_server(str(tmp_path / "out" / "srv"))
    now = [time.time()]
    cfg = config_for([srv.url], tmp_path / "cache", info["keys_dir"])
    repo = Repository(fqrn, cfg, clock=lambda: now[0])
    try:
        assert repo.revision == 2 and repo.read_file("/a.txt") == b"two\n"
        assert repo.cache.read_breadcrumb()[2] == 2
        replace_file(manifest, first)               # a server or proxy replays revision 1
        with pytest.raises(CvmfsexecError) as err:
            Repository(fqrn, cfg)
        message = str(err.value)
        assert "manifest is older than the one seen before (revision 2 " in message
        assert "offers revision 1 " in message and "rollback" in message
        assert "\n" not in message and "cvmfschecksum." + fqrn in err.value.hint
        # the running client's update check refuses it too and keeps revision 2
        now[0] += 241
        assert repo.reload() is False
        assert repo.revision == 2 and repo.read_file("/a.txt") == b"two\n"
        assert repo.cache.read_breadcrumb()[2] == 2
    finally:
        repo.close()
    # the refusal comes from the breadcrumb: a cache that never saw revision 2 takes it
    fresh = Repository(fqrn, dict(cfg, CVMFS_CACHE_BASE=str(tmp_path / "cache2")))
    try:
        assert fresh.revision == 1 and fresh.read_file("/a.txt") == b"one\n"
    finally:
        fresh.close()
    # the warm cache still works as before: its own manifest is never a rollback
    srv.stop()
    repo = Repository(fqrn, dict(cfg, CVMFS_SERVER_URL="http://127.0.0.1:9/cvmfs/@fqrn@"))
    try:
        assert repo.offline and repo.revision == 2 and repo.read_file("/a.txt") == b"two\n"
    finally:
        repo.close()


def test_certificate_in_the_dist_blacklist_is_refused(fixtures_dir, http_server, tmp_path):
    """mountconf points CVMFS_BLACKLIST at dist/etc/cvmfs/blacklist (cvmfs2's built-in
    /etc/cvmfs/blacklist is not a config value the relocation could move)."""
    from launcher import mountconf
    srv = http_server(small_srv(fixtures_dir))
    cfg = config_for([srv.url], tmp_path / "cache", small_keys(fixtures_dir))
    repo = Repository(SMALL, cfg)
    fingerprint = repo.manifest.certificate_object.fingerprint_text()
    repo.close()
    etc = tmp_path / "dist" / "etc" / "cvmfs"
    etc.mkdir(parents=True)
    (etc / "default.conf").write_text("".join("%s=%s\n" % kv for kv in sorted(cfg.items())))
    assert "CVMFS_BLACKLIST" not in mountconf.assemble(SMALL, str(tmp_path))
    (etc / "blacklist").write_text("# compromised\n%s\n" % fingerprint)
    dist_cfg = mountconf.assemble(SMALL, str(tmp_path))
    assert dist_cfg["CVMFS_BLACKLIST"] == str(etc / "blacklist")
    for cache in ("cache", "cache2"):               # warm or cold: refused either way
        with pytest.raises(CvmfsexecError) as err:
            Repository(SMALL, dict(dist_cfg, CVMFS_CACHE_BASE=str(tmp_path / cache)))
        assert "certificate is blacklisted (fingerprint %s)" % fingerprint in str(err.value)
    # set but empty: no blacklist at all, as with cvmfs2
    Repository(SMALL, dict(dist_cfg, CVMFS_BLACKLIST="")).close()


def test_blacklisted_revisions_in_the_config_repository(fixtures_dir, http_server, tmp_path):
    srv = http_server(small_srv(fixtures_dir))
    mount_dir = tmp_path / "cvmfs"
    blacklist = mount_dir / "cfg.example.org" / "etc" / "cvmfs" / "blacklist"
    blacklist.parent.mkdir(parents=True)
    cfg = config_for([srv.url], tmp_path / "cache", small_keys(fixtures_dir),
                     CVMFS_BLACKLIST=str(tmp_path / "no-such-blacklist"),
                     CVMFS_MOUNT_DIR=str(mount_dir), CVMFS_CONFIG_REPOSITORY="cfg.example.org")
    blacklist.write_text("<other.example.org 9\n<%s 3\n" % SMALL)
    with pytest.raises(CvmfsexecError) as err:
        Repository(SMALL, cfg)
    assert "revision 2 is blacklisted (revisions below 3 are refused)" in str(err.value)
    # the config repository's own blacklist does not apply to itself (cvmfs2's rule)
    Repository(SMALL, dict(cfg, CVMFS_CONFIG_REPOSITORY=SMALL)).close()
    blacklist.write_text("<%s 2\n" % SMALL)
    repo = Repository(SMALL, cfg)
    try:
        assert repo.revision == 2
    finally:
        repo.close()


def test_listing_refuses_names_that_escape_their_directory(fixtures_dir, http_server, tmp_path):
    """A damaged catalog whose rows are named '..', 'x/y', '.' or '': listings leave them
    out instead of handing them to find, tar or the kernel."""
    from launcher.cvmfs.catalog import path_key

    def edit(conn, srv_dir):
        for old, bad in (("/foo", ".."), ("/bar", "x/y"), ("/baz", "."), ("/hardlink_foo", "")):
            conn.execute("UPDATE catalog SET name=? WHERE md5path_1=? AND md5path_2=?",
                         (bad,) + path_key(old))
    repo = edited_legacy_repository(fixtures_dir, http_server, tmp_path, edit)
    try:
        names = sorted(e.name for e in repo.listdir(""))
        assert names == ["doesnt_need_migration", "hardlink_bar", "hardlink_baz",
                         "needs_commit_due_to_child", "needs_migration"]
    finally:
        repo.close()
