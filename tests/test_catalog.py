"""Catalog, history and object-store layers on real catalogs from the fixture tarballs.

Catalog objects (suffix C) and history objects (suffix H) are zlib-compressed
SQLite files; these tests read them straight out of the tarballs, so they
cover both schemas in the fixtures: 2.5 rev 2 (2.1 era) and 2.5 rev 7 (2.12).
"""
import errno
import hashlib
import os
import tarfile
import zlib

import pytest

from conftest import FIXTURES
from launcher.cvmfs import catalog as cat
from launcher.cvmfs.catalog import Catalog, CatalogError
from launcher.cvmfs.hashes import ContentHash
from launcher.cvmfs.history import History, HistoryError, parse_date
from launcher.cvmfs.objects import ObjectError, ObjectStore

SMALL_TAR = os.path.join(FIXTURES, "small_example_org-repo.tar.gz")
LEGACY_TAR = os.path.join(FIXTURES, "legacy_aufs_repo_21-repo.tar.gz")
SMALL_ROOT = "1d3e28b4742cadf3966971fcbd28b32d7b8ea0f4"
SMALL_NESTED = "144b95a02f0a7537f62a1474e66a4f01afd898f9"
SMALL_HISTORY = "7b135a7855eb9af05f435196671ffb43a4dfcf90"
LEGACY_ROOT = "6ed3d49a5c64f21f36936ab350d49aaf57585b9a"


def object_from_tar(tar_path, fqrn, hash_hex, suffix, dest):
    """Decompress one object of a fixture tarball into ``dest``; return its path."""
    name = "srv/cvmfs/%s/data/%s/%s%s" % (fqrn, hash_hex[:2], hash_hex[2:], suffix)
    with tarfile.open(tar_path) as tar:
        member = [m for m in tar.getmembers() if m.name.lstrip("./") == name][0]
        raw = tar.extractfile(member).read()
    assert hashlib.sha1(raw).hexdigest() == hash_hex       # what is hashed: the stored bytes
    path = os.path.join(str(dest), hash_hex + suffix)
    with open(path, "wb") as f:
        f.write(zlib.decompress(raw))
    return path


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    c = Catalog(object_from_tar(SMALL_TAR, "small.example.org", SMALL_ROOT, "C",
                                tmp_path_factory.mktemp("cat")), SMALL_ROOT)
    yield c
    c.close()


@pytest.fixture(scope="module")
def legacy_root(tmp_path_factory):
    c = Catalog(object_from_tar(LEGACY_TAR, "legacy_aufs.cern.ch", LEGACY_ROOT, "C",
                                tmp_path_factory.mktemp("cat")), LEGACY_ROOT)
    yield c
    c.close()


def test_path_keys_match_the_real_rows(small_root):
    assert cat.path_key("") == (338333539836370388, 9098107892288553193)
    assert cat.path_key("/misc/xattr-2.txt") == (-1550597414905353502, -7692015911369297844)
    row = small_root.lookup("/misc/ünïcödé-名前.txt")
    assert row is not None and row.size == 20 and row.name == "ünïcödé-名前.txt"
    assert small_root.lookup("/misc/with space.txt").size == 25
    assert small_root.lookup("/misc/nope") is None


def test_current_schema_rows_flags_and_xattrs(small_root):
    assert (small_root.schema, small_root.schema_revision) == (2.5, 7)
    assert small_root.revision == 2 and small_root.ttl == 240 and small_root.root_prefix == ""
    row = small_root.lookup("/misc/xattr-2.txt")
    assert row.content_hash() == "5cde1d61642f6a722e52750cf47efa112254d1b6"
    assert row.mode == 0o100644 and row.mtime == 1717243464 and row.mtimens is None
    assert cat.parse_xattrs(row.xattr) == {"user.test.color": b"green",
                                           "user.test.note": b"hello world"}
    link = small_root.lookup("/links/abs-file")
    assert link.symlink == "/cvmfs/small.example.org/docs/doc-001.txt" and link.size == 41
    assert link.content_hash() is None
    mnt = small_root.lookup("/nested")
    assert mnt.is_mountpoint and mnt.linkcount == 3
    triple = [small_root.lookup("/data/hl/triple-%d.dat" % i) for i in (1, 2, 3)]
    assert set(r.hardlinks for r in triple) == {(1 << 32) | 3}
    leaders = set(small_root.hardlink_leader(r) for r in triple)
    assert leaders == {min(r.rowid for r in triple)}


def test_chunks_are_read_in_offset_order(small_root):
    row = small_root.lookup("/big/random24M.bin")
    assert row.chunked and row.content_hash() is None
    chunks = small_root.chunks(row)
    assert [(o, s) for o, s, _h in chunks] == [(0, 4687020), (4687020, 8714814),
                                              (13401834, 6129487), (19531321, 5634503)]
    assert chunks[0][2].startswith("21502cc7") and chunks[0][2].endswith("P")
    assert sum(s for _o, s, _h in chunks) == row.size


def test_nested_catalog_lookup_and_listing(small_root, tmp_path):
    assert small_root.nested_for("/nested/inner/i-000.dat") == ("/nested", SMALL_NESTED, False)
    assert small_root.nested_for("/nested") == ("/nested", SMALL_NESTED, False)
    assert small_root.nested_for("/nestedx") is None
    assert small_root.nested_catalogs() == [("/nested", SMALL_NESTED, 57344)]
    child = Catalog(object_from_tar(SMALL_TAR, "small.example.org", SMALL_NESTED, "C", tmp_path))
    try:
        assert child.root_prefix == "/nested"
        root_row = child.lookup("/nested")
        assert root_row.flags & cat.FLAG_DIR_NESTED_ROOT and root_row.parent == cat.path_key("")
        names = sorted(r.name for r in child.listing("/nested"))
        assert ".cvmfscatalog" in names and "inner" in names and len(names) == 33
        assert child.nested_for("/nested/inner/x")[0] == "/nested/inner"
        # the parent holds no children of the mount point
        assert small_root.listing("/nested") == []
    finally:
        child.close()


def test_statistics_counters(small_root, legacy_root):
    stats = small_root.statistics()
    assert len(stats) == 24
    counters = small_root.counters()
    # the whole repository: 340 entries with two mount points counted twice
    assert counters["regular"] + counters["dir"] + counters["symlink"] + counters["special"] == 342
    assert counters["chunked"] == 1 and counters["chunks"] == 4 and counters["nested"] == 2
    assert len(legacy_root.statistics()) == 18           # 2.1 era: no special/external


def test_legacy_schema(legacy_root):
    assert (legacy_root.schema, legacy_root.schema_revision) == (2.5, 2)
    assert not legacy_root._has_bind
    row = legacy_root.lookup("/hardlink_foo")
    assert row.md5path == (7963712584545083376, 5360891605679100489)
    assert row.hardlinks == 4294967298 and row.mode == 33204 and row.uid == 1000
    assert row.content_hash() == "d85ab7e835750785b0535d4fbba7d59e921b1f48"
    assert row.mtimens is None and row.xattr is None
    names = [r.name for r in legacy_root.listing("")]
    assert sorted(names) == ["bar", "baz", "doesnt_need_migration", "foo", "hardlink_bar",
                             "hardlink_baz", "hardlink_foo", "needs_commit_due_to_child",
                             "needs_migration"]
    assert legacy_root.ttl == 240          # no TTL property: the default, not manifest D900


def test_not_a_catalog_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CatalogError) as info:
        Catalog(str(junk), "abc")
    assert "abc" in str(info.value)


def test_xattr_blob_corruption_means_no_xattrs():
    good = b"\x01\x01\x08\x03user.foobar"
    assert cat.parse_xattrs(good) == {"user.foo": b"bar"}
    assert cat.parse_xattrs(good[:-1]) == {}        # truncated
    assert cat.parse_xattrs(b"\x02" + good[1:]) == {}   # unknown version
    assert cat.parse_xattrs(None) == {}


def test_variant_symlink_expansion():
    env = {"FEAT_VAR": "hello", "EMPTY": ""}.get
    assert cat.expand_variant_symlink("$(FEAT_VAR)/x", env) == "hello/x"
    assert cat.expand_variant_symlink("$(FEAT_UNSET:-dflt)/y", env) == "dflt/y"
    assert cat.expand_variant_symlink("$(FEAT_VAR:-dflt)/y", env) == "hello/y"
    assert cat.expand_variant_symlink("a$(NOCLOSE", env) == "a$(NOCLOSE"
    assert cat.expand_variant_symlink("$(EMPTY:-d)z", env) == "z"     # set but empty
    assert cat.expand_variant_symlink("$(UNSET)z", env) == "z"
    assert cat.expand_variant_symlink("/a/$(FEAT_VAR)/$(X:-1)", env) == "/a/hello/1"


def test_history_tags_by_name_and_date(tmp_path):
    h = History(object_from_tar(SMALL_TAR, "small.example.org", SMALL_HISTORY, "H", tmp_path),
                "small.example.org")
    try:
        assert h.by_name("trunk").revision == 2
        prev = h.by_name("trunk-previous")
        assert prev.revision == 1 and prev.hash == "8081d97f5d901980d7ab953f43e698a688b28e09"
        assert h.by_date(parse_date("2026-11-24T16:56:15Z")).revision == 1
        assert h.by_date(parse_date("2030-01-01T00:00:00Z")).revision == 2
        with pytest.raises(HistoryError):
            h.by_date(parse_date("2020-01-01T00:00:00Z"))
        with pytest.raises(HistoryError) as info:
            h.by_name("nope")
        assert "trunk-previous" in info.value.hint
    finally:
        h.close()
    with pytest.raises(HistoryError):
        parse_date("yesterday")


# --- ObjectStore over a real HTTP server ----------------------------------------------------
def _object_server(http_server, tmp_path, objects):
    """Serve {ContentHash: stored bytes} under /cvmfs/t.example.org/data/."""
    for h, data in objects.items():
        p = tmp_path / "srv" / "cvmfs" / "t.example.org" / h.url_path()
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (tmp_path / "srv").mkdir(exist_ok=True)
    return http_server(str(tmp_path / "srv"))


def _store(url, tmp_path):
    from launcher.cvmfs.cache import Cache
    from launcher.cvmfs.download import Downloader
    cfg = {"CVMFS_SERVER_URL": url + "/cvmfs/@fqrn@", "CVMFS_HTTP_PROXY": "DIRECT",
           "CVMFS_CACHE_BASE": str(tmp_path / "cache"), "CVMFS_MAX_RETRIES": "0"}
    return ObjectStore(Downloader(cfg, "t.example.org"), Cache(cfg, "t.example.org"))


def test_object_store_zlib_raw_and_corrupt(http_server, tmp_path):
    content = os.urandom(3 * 1024 * 1024)       # above the streaming threshold compressed
    zblob = zlib.compress(content)
    zh = ContentHash.of_data(zblob)
    rh = ContentHash.of_data(b"raw bytes, stored uncompressed")
    bad = ContentHash.of_data(b"what the catalog promised")
    trunc_blob = zlib.compress(b"x" * 1000)[:-3]
    th = ContentHash.of_data(trunc_blob)
    srv = _object_server(http_server, tmp_path, {zh: zblob, rh: b"raw bytes, stored uncompressed",
                                                 bad: b"something else", th: trunc_blob})
    store = _store(srv.url, tmp_path)
    with open(store.get_path(zh), "rb") as f:
        assert f.read() == content
    with open(store.get_path(rh, compressed=False), "rb") as f:
        assert f.read() == b"raw bytes, stored uncompressed"
    assert store.stats["misses"] == 2
    store.get_path(zh)
    assert store.stats["hits"] == 1                  # second time from the cache
    for h, word in ((bad, str(bad)), (th, "decompress"),
                    (ContentHash.of_data(b"absent"), "absent")):
        with pytest.raises(ObjectError) as info:
            store.get_path(h)
        assert info.value.errno == errno.EIO
        if word != "absent":
            assert word in str(info.value)
    assert store.cache.lookup(bad) is None and store.cache.lookup(th) is None
