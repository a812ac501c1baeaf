"""Cache: cvmfs layout, atomic inserts shared by processes, quota with LRU and pins."""
import hashlib
import io
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, pyenv_pythons
from launcher.cvmfs.cache import Cache, object_name
from launcher.errors import CvmfsexecError

FQRN = "test.example.org"


def sha1(data):
    return hashlib.sha1(data).hexdigest()


def make_cache(tmp_path, **extra):
    cfg = {"CVMFS_CACHE_BASE": str(tmp_path / "cache")}
    cfg.update(extra)
    return Cache(cfg, FQRN)


def cached_objects(cache_dir):
    """{name: content} of every object file under the 00..ff directories."""
    found = {}
    for i in range(256):
        sub = os.path.join(cache_dir, "%02x" % i)
        for n in os.listdir(sub):
            with open(os.path.join(sub, n), "rb") as f:
                found["%02x" % i + n] = f.read()
    return found


def test_layout_matches_cvmfs(tmp_path):
    c = make_cache(tmp_path)
    assert c.dir == str(tmp_path / "cache" / "shared")
    for sub in ("00", "7f", "ff", "txn", "quarantaine"):
        assert os.stat(os.path.join(c.dir, sub)).st_mode & 0o777 == 0o700
    assert os.path.isfile(os.path.join(c.dir, ".cvmfscache"))
    exclusive = make_cache(tmp_path, CVMFS_SHARED_CACHE="no")
    assert exclusive.dir == str(tmp_path / "cache" / FQRN)


def test_object_names_drop_suffix_keep_algorithm(tmp_path):
    h = "0123456789abcdef0123456789abcdef01234567"
    assert object_name(h + "C") == h
    assert object_name(h + "-rmd160X") == h + "-rmd160"
    c = make_cache(tmp_path)
    assert c.path(h + "-shake128") == os.path.join(c.dir, "01", h[2:] + "-shake128")


def test_content_hash_objects_and_strings_share_one_entry(tmp_path):
    from launcher.cvmfs.hashes import ContentHash
    c = make_cache(tmp_path)
    data = b"certificate PEM"
    h = ContentHash.of_data(data, algorithm="rmd160", suffix="X")
    p = c.insert(h, data)
    assert p == os.path.join(c.dir, h.digest_hex[:2], h.digest_hex[2:] + "-rmd160")
    assert c.lookup(str(h)) == p
    assert c.lookup(h.digest_hex + "-rmd160") == p


def test_insert_lookup_roundtrip_and_file_mode(tmp_path):
    c = make_cache(tmp_path)
    data = b"decompressed catalog" * 100
    h = sha1(data) + "C"
    assert c.lookup(h) is None
    p = c.insert(h, data)
    assert c.lookup(h) == p
    assert open(p, "rb").read() == data
    assert os.stat(p).st_mode & 0o777 == 0o600
    big = os.urandom(3 * 1024 * 1024)
    p2 = c.insert(sha1(big), io.BytesIO(big))        # from a file object
    assert open(p2, "rb").read() == big
    assert c.insert(h, data) == p                   # inserting twice is harmless
    assert os.listdir(os.path.join(c.dir, "txn")) == []


def test_lookup_marks_object_recently_used(tmp_path):
    c = make_cache(tmp_path)
    p = c.insert(sha1(b"x"), b"x")
    os.utime(p, (1000, 1000))
    c.lookup(sha1(b"x"))
    assert os.stat(p).st_mtime > time.time() - 60


def test_refuses_cvmfs_20_cache(tmp_path):
    d = tmp_path / "cache" / "shared"
    d.mkdir(parents=True)
    (d / "cvmfscatalog.cache").write_bytes(b"")
    with pytest.raises(CvmfsexecError, match="2.0"):
        make_cache(tmp_path)


def test_meta_per_repository_and_breadcrumb(tmp_path):
    a = make_cache(tmp_path)
    b = Cache({"CVMFS_CACHE_BASE": str(tmp_path / "cache")}, "other.example.org")
    assert a.load_meta("manifest") is None
    a.store_meta("manifest", b"manifest A")
    b.store_meta("manifest", b"manifest B")
    a.store_meta("manifest", b"manifest A2")
    assert a.load_meta("manifest") == b"manifest A2"
    assert b.load_meta("manifest") == b"manifest B"
    h = "a" * 40
    a.write_breadcrumb(h, 1700000000, 7)
    raw = open(os.path.join(a.dir, "cvmfschecksum." + FQRN)).read()
    assert raw == h + "T1700000000R7"     # cvmfs's exact format, no newline
    assert a.read_breadcrumb() == (h, 1700000000, 7)
    assert b.read_breadcrumb() is None


# --- quota -------------------------------------------------------------------------
def fill(c, count, size, start_age=10000):
    """Insert count new objects of size bytes with increasing (old) access times."""
    hashes = []
    now = time.time()
    for i in range(count):
        data = os.urandom(size)
        h = sha1(data)
        os.utime(c.insert(h, data), (now - start_age + i, now - start_age + i))
        hashes.append(h)
    return hashes


def test_quota_evicts_least_recently_used_to_half_the_limit(tmp_path):
    c = make_cache(tmp_path, CVMFS_QUOTA_LIMIT="1")            # 1 MB
    old = fill(c, 8, 120000)                                   # 960 kB: under the limit
    assert c.usage() == c.scan_usage() == 960000
    assert c.lookup(old[0])                                    # oldest, but used now
    new = fill(c, 1, 120000, start_age=10)                     # crosses 1 MB
    assert c.scan_usage() <= 512 * 1024                        # cleaned down to half
    assert c.usage() == c.scan_usage()
    assert c.lookup(new[0])
    assert c.lookup(old[0])                                    # LRU, not FIFO
    assert [c.lookup(h) is None for h in old[1:]] == [True] * 5 + [False] * 2


def test_quota_eviction_never_removes_pinned_objects(tmp_path):
    c = make_cache(tmp_path, CVMFS_QUOTA_LIMIT="1")
    old = fill(c, 8, 120000)
    assert c.pin(old[0]) and c.pin(old[1])
    fill(c, 4, 120000, start_age=10)
    assert c.lookup(old[0]) and c.lookup(old[1])              # oldest, but pinned
    assert c.lookup(old[2]) is None
    c.unpin(old[0])
    c.cleanup(0)
    assert c.lookup(old[0]) is None and c.lookup(old[1])     # still pinned once
    c.close()


def test_pin_held_by_another_process_protects_object(tmp_path):
    c = make_cache(tmp_path, CVMFS_QUOTA_LIMIT="1")
    h = fill(c, 1, 1000)[0]
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from launcher.cvmfs.cache import Cache\n"
            "c = Cache({'CVMFS_CACHE_BASE': %r}, %r)\n"
            "assert c.pin(%r)\n"
            "print('pinned', flush=True)\n"
            "sys.stdin.read()\n" % (ROOT, str(tmp_path / "cache"), FQRN, h))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert proc.stdout.readline().strip() == "pinned"
        c.cleanup(0)
        assert c.lookup(h)
    finally:
        proc.stdin.close()
        proc.wait(30)
    c.cleanup(0)              # the pinning process is gone: its lock went with it
    assert c.lookup(h) is None


WRITER = r"""
import hashlib, os, sys
sys.path.insert(0, sys.argv[1])
from launcher.cvmfs.cache import Cache
c = Cache({"CVMFS_CACHE_BASE": sys.argv[2], "CVMFS_QUOTA_LIMIT": sys.argv[3]}, "test.example.org")
seed = int(sys.argv[4])
for i in range(300):
    n = (i * 7 + seed * 13) % 400          # overlapping object sets across writers
    data = (b"%05d" % n) * (200 + n * 50)
    h = hashlib.sha1(data).hexdigest()
    p = c.lookup(h)
    if p is not None:
        try:
            with open(p, "rb") as f:
                seen = f.read()
        except FileNotFoundError:       # evicted by another writer meanwhile
            seen = data
        if seen != data:
            sys.exit("saw a partial object %s" % h)
    else:
        p = c.insert(h, data)
    if sys.argv[3] == "-1" and not os.path.exists(p):
        sys.exit("lost object %s" % h)
"""


@pytest.mark.parametrize("quota", ["-1", "2"], ids=["unmanaged", "quota-2MB"])
def test_several_processes_fill_one_cache(tmp_path, quota):
    base = str(tmp_path / "cache")
    Cache({"CVMFS_CACHE_BASE": base}, FQRN)
    # half the writers run on Python 3.6 (EL8's platform-python) when pyenv has it
    py36 = [p for v, p in pyenv_pythons().items() if v.startswith("3.6.")]
    pythons = [sys.executable, py36[0] if py36 else sys.executable]
    procs = [subprocess.Popen([pythons[k % 2], "-c", WRITER, ROOT, base, quota, str(k)])
             for k in range(4)]
    for p in procs:
        assert p.wait(120) == 0
    objects = cached_objects(os.path.join(base, "shared"))
    # every object under its final name is complete: its content hashes to its name
    bad = [n for n, data in objects.items() if sha1(data) != n]
    assert not bad
    assert os.listdir(os.path.join(base, "shared", "txn")) == []
    if quota == "-1":
        assert len(objects) == len(set((i * 7 + k * 13) % 400
                                       for i in range(300) for k in range(4)))
    else:
        total = sum(len(d) for d in objects.values())
        assert total <= 2 * 1024 * 1024
        assert int(open(os.path.join(base, "shared", "cvmfsexec_usage")).read()) == total
