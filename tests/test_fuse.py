"""The builtin client through real FUSE mounts: real repositories served on 127.0.0.1.

Every mount runs the real command (``python3 -m launcher.client``) as a daemon
and is unmounted lazily in teardown; the daemon is killed if it survived.
"""

import errno
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading

import pytest

from conftest import FIXTURES, HttpServer, grant_fuse_access, python_oldest_and_newest, \
    unpriv_user
from test_fuse_helpers import (client_pid, expected_listing, force_unmount, is_mounted, kill_pid,
                       listing, pid_alive, read_errno, start_client, wait_for, write_config)

pytestmark = [pytest.mark.fuse]

SMALL = "small.example.org"
EXPECTED = os.path.join(FIXTURES, "small_example_org-expected.txt")
BIG = "/big/random24M.bin"


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory):
    """small.example.org (the real fixture) extracted and served over HTTP."""
    d = str(tmp_path_factory.mktemp("small"))
    for name in ("small_example_org-repo.tar.gz", "small_example_org-keys.tar.gz"):
        with tarfile.open(os.path.join(FIXTURES, name)) as t:
            t.extractall(d)
    os.chmod(d, 0o755)
    srv = HttpServer(os.path.join(d, "srv"), d)
    yield {"dir": d, "url": srv.url, "server": srv,
           "pubkey": os.path.join(d, "keys", SMALL + ".pub")}
    srv.stop()


class Mounts(object):
    """Factory for client mounts in a private work dir; cleans up everything it started."""

    def __init__(self, base):
        self.base = base
        self.mounted = []     # (mountpoint, pid or None)

    def config(self, url, pubkey, **extra):
        work = tempfile.mkdtemp(dir=self.base)
        os.chmod(work, 0o755)
        values = dict(CVMFS_SERVER_URL=url + "/cvmfs/@fqrn@", CVMFS_HTTP_PROXY="DIRECT",
                      CVMFS_PUBLIC_KEY=pubkey, CVMFS_CACHE_BASE=work + "/cache",
                      CVMFS_USYSLOG=work + "/client.log", CVMFS_SHARED_CACHE="no",
                      CVMFS_QUOTA_LIMIT="-1", CVMFS_TIMEOUT="3", CVMFS_TIMEOUT_DIRECT="3",
                      CVMFS_MAX_RETRIES="0")
        values.update(extra)
        os.mkdir(work + "/mnt")
        return work, write_config(work + "/client.conf", **values)

    def mount(self, fqrn, url, pubkey, python=None, **extra):
        work, conf = self.config(url, pubkey, **extra)
        mnt = work + "/mnt"
        r = start_client(python, conf, fqrn, mnt)
        if r.returncode == 0:
            pid = client_pid(mnt)
            self.mounted.append((mnt, pid))
        else:
            self.mounted.append((mnt, None))
        return r, mnt, work

    def cleanup(self):
        for mnt, pid in self.mounted:
            force_unmount(mnt)
            if pid:
                kill_pid(pid)


@pytest.fixture
def mounts(tmp_path):
    m = Mounts(str(tmp_path))
    yield m
    m.cleanup()


def mount_small(mounts, small_repo, python=None, **extra):
    r, mnt, work = mounts.mount(SMALL, small_repo["url"], small_repo["pubkey"], python, **extra)
    assert r.returncode == 0, r.stderr
    assert is_mounted(mnt)
    return mnt, work


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- the real fixture, as root ------------------------------------------------

@pytest.mark.root
@pytest.mark.parametrize("python", python_oldest_and_newest())
def test_small_example_org_shows_exactly_the_expected_tree(mounts, small_repo, python):
    mnt, work = mount_small(mounts, small_repo, python)
    got_e, got_s = listing(mnt)
    want_e, want_s = expected_listing(EXPECTED)
    assert got_e == want_e
    assert got_s == want_s
    # Hard-link groups share one inode; different groups do not.
    a, b = os.stat(mnt + "/data/hl/pair-a.txt"), os.stat(mnt + "/data/hl/pair-a.hl")
    t = os.stat(mnt + "/data/hl/triple-1.dat")
    assert a.st_ino == b.st_ino != t.st_ino
    # Owners as the catalog stores them (CVMFS_CLAIM_OWNERSHIP off).
    st = os.stat(mnt + "/owned/by-1000-2000.txt")
    assert (st.st_uid, st.st_gid) == (1000, 2000)
    assert "mounted %s" % SMALL in open(work + "/client.log").read()


@pytest.mark.root
def test_magic_xattrs_answer_like_cvmfs(mounts, small_repo):
    mnt, work = mount_small(mounts, small_repo)

    def x(path, name):
        return os.getxattr(mnt + path, name).decode()
    assert x("", "user.fqrn") == SMALL
    assert x("", "user.revision") == "2"
    assert x("", "user.root_hash") == "1d3e28b4742cadf3966971fcbd28b32d7b8ea0f4"
    assert x("", "user.host") == small_repo["url"] + "/cvmfs/" + SMALL
    assert x("", "user.proxy") == "DIRECT"
    assert pid_alive(int(x("", "user.pid")))
    assert int(x("", "user.nclg")) >= 1
    assert x("/docs", "user.fqrn") == SMALL          # answerable everywhere
    assert x(BIG, "user.chunks") == "4"
    assert x("/README.txt", "user.chunks") == "1"
    assert len(x("/README.txt", "user.hash")) == 40
    lines = x(BIG, "user.chunk_list").splitlines()
    assert lines[0] == "hash,offset,size" and len(lines) == 5
    from launcher import VERSION
    assert x("", "user.version") == VERSION
    with pytest.raises(OSError) as e:
        os.getxattr(mnt + "/docs", "user.hash")          # a directory has no content hash
    assert e.value.errno == errno.ENODATA
    # rootonly visibility: magic names listed on the root (once each), not elsewhere.
    root_names = os.listxattr(mnt)
    assert "user.fqrn" in root_names and len(root_names) == len(set(root_names))
    assert os.listxattr(mnt + "/misc/xattr-2.txt") == ["user.test.color", "user.test.note"]
    # the size protocol: a too small buffer is ERANGE (getfattr retries with the size)
    r = subprocess.run(["getfattr", "--only-values", "-n", "user.fqrn", mnt],
                       stdout=subprocess.PIPE)
    assert r.stdout == SMALL.encode()


@pytest.mark.root
def test_write_attempts_fail_with_erofs(mounts, small_repo):
    mnt, work = mount_small(mounts, small_repo)
    attempts = [
        lambda: open(mnt + "/README.txt", "ab"),
        lambda: open(mnt + "/new-file", "w"),
        lambda: os.mkdir(mnt + "/newdir"),
        lambda: os.unlink(mnt + "/README.txt"),
        lambda: os.rename(mnt + "/README.txt", mnt + "/x"),
        lambda: os.setxattr(mnt + "/README.txt", "user.x", b"1"),
        lambda: os.chmod(mnt + "/README.txt", 0o600),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS
    assert open(mnt + "/README.txt", "rb").read()      # still readable


@pytest.mark.root
def test_eight_concurrent_readers_and_ls_R_on_a_cold_cache(mounts, small_repo):
    mnt, work = mount_small(mounts, small_repo)
    want = dict((line.split("\t")[2], line.split("\t")[1])
                for line in expected_listing(EXPECTED)[1])
    paths = sorted(want)
    results, errors = {}, []

    def reader(k):
        try:
            for p in paths[k::8] + [BIG]:
                results[(k, p)] = sha256(mnt + p)
        except Exception as e:   # reported below
            errors.append(e)
    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    ls = subprocess.run(["ls", "-lR", mnt], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        universal_newlines=True, timeout=120)
    for t in threads:
        t.join(120)
    assert not errors
    assert ls.returncode == 0, ls.stderr
    assert "random24M.bin" in ls.stdout and "i-005.dat" in ls.stdout
    for (k, p), digest in results.items():
        assert digest == want[p], p


@pytest.mark.root
def test_forgotten_nodes_are_looked_up_again(mounts, small_repo):
    """Lookup counting incl. READDIRPLUS: after the kernel drops its inodes (BATCH_FORGET)
    every name must resolve again, never ESTALE."""
    mnt, work = mount_small(mounts, small_repo)
    first = listing(mnt)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")
    assert listing(mnt) == first


# --- failures ---------------------------------------------------------------------------

@pytest.mark.root
def test_http_server_killed_mid_read_gives_eio_and_mount_stays(mounts, small_repo, tmp_path):
    # A private server, so that killing it does not affect other tests.
    srv = HttpServer(os.path.join(small_repo["dir"], "srv"), tmp_path)
    try:
        r, mnt, work = mounts.mount(SMALL, srv.url, small_repo["pubkey"])
        assert r.returncode == 0, r.stderr
        cached = open(mnt + "/README.txt", "rb").read()
        with open(mnt + BIG, "rb") as f:
            assert len(f.read(1 << 20)) == 1 << 20      # the first chunk is fetched
            srv.stop()
            with pytest.raises(OSError) as e:
                f.seek(20 << 20)
                f.read(1 << 20)                          # a later chunk cannot be
            assert e.value.errno == errno.EIO
        assert read_errno(mnt + "/docs/doc-000.txt") == errno.EIO
        # The mount stays up: cached data and metadata still work.
        assert open(mnt + "/README.txt", "rb").read() == cached
        assert "doc-000.txt" in os.listdir(mnt + "/docs")
    finally:
        srv.stop()


@pytest.mark.root
def test_signature_failure_fails_the_mount_with_the_reason(mounts, small_repo, tmp_path):
    wrong = str(tmp_path / "wrong.pub")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(wrong, "wb") as f:
        f.write(key.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
    r, mnt, work = mounts.mount(SMALL, small_repo["url"], wrong)
    assert r.returncode == 16
    assert "whitelist" in r.stderr and SMALL in r.stderr
    assert "Traceback" not in r.stderr
    assert not is_mounted(mnt)
    assert "whitelist" in open(work + "/client.log").read()


@pytest.mark.root
def test_killed_client_gives_enotconn_not_a_hang(mounts, small_repo):
    mnt, work = mount_small(mounts, small_repo)
    pid = client_pid(mnt)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), what="client to die")
    # Run the access in a child with a timeout: a hang would fail, not block the suite.
    code = "import os,sys\ntry:\n os.stat(sys.argv[1] + '/README.txt')\nexcept OSError as e:\n" \
           " print(e.errno)\n"
    r = subprocess.run([sys.executable, "-c", code, mnt], stdout=subprocess.PIPE,
                       universal_newlines=True, timeout=30)
    assert r.stdout.strip() == str(errno.ENOTCONN)


# --- ending a mount ----------------------------------------------------------------

@pytest.mark.root
def test_sigterm_unmounts_and_exits(mounts, small_repo):
    mnt, work = mount_small(mounts, small_repo)
    pid = client_pid(mnt)
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not is_mounted(mnt), what="unmount after SIGTERM")
    wait_for(lambda: not pid_alive(pid), what="client exit after SIGTERM")


@pytest.mark.root
def test_unmount_from_outside_ends_the_client(mounts, small_repo):
    mnt, work = mount_small(mounts, small_repo)
    pid = client_pid(mnt)
    subprocess.check_call(["umount", mnt])
    wait_for(lambda: not pid_alive(pid), what="client exit after umount")


@pytest.mark.root
def test_sigterm_while_busy_unmounts_lazily(mounts, small_repo):
    mnt, work = mount_small(mounts, small_repo)
    pid = client_pid(mnt)
    f = open(mnt + BIG, "rb")
    try:
        f.read(1024)
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not is_mounted(mnt), what="lazy unmount")
        assert pid_alive(pid)                      # still serving the open file
        f.seek(12 << 20)
        assert len(f.read(1 << 20)) == 1 << 20
    finally:
        f.close()
    wait_for(lambda: not pid_alive(pid), what="client exit after the last close")


# --- unprivileged mounts -------------------------------------------------------------

def _unpriv_workdir(base, uid, gid):
    work = tempfile.mkdtemp(dir="/tmp", prefix="fusetest-")
    os.chmod(work, 0o755)
    os.chown(work, uid, gid)
    return work


def _unpriv_config(work, small_repo, uid, gid):
    """Config + key inside the user's work dir (pytest's tmp dirs are 0700 root)."""
    key = work + "/" + SMALL + ".pub"
    shutil.copy(small_repo["pubkey"], key)
    conf = write_config(work + "/client.conf",
                        CVMFS_SERVER_URL=small_repo["url"] + "/cvmfs/@fqrn@",
                        CVMFS_HTTP_PROXY="DIRECT", CVMFS_PUBLIC_KEY=key,
                        CVMFS_CACHE_BASE=work + "/cache", CVMFS_USYSLOG=work + "/log",
                        CVMFS_SHARED_CACHE="no", CVMFS_QUOTA_LIMIT="-1")
    for path in (key, conf):
        os.chown(path, uid, gid)
    return conf


def _as_user(uid, gid):
    def drop():
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return drop


def _system_python():
    for p in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(p, os.X_OK):
            return p
    pytest.skip("no system python3 an unprivileged user can run")


@pytest.mark.root
@pytest.mark.userns
def test_unprivileged_user_mounts_in_a_user_namespace(small_repo, tmp_path):
    grant_fuse_access()
    uid, gid = unpriv_user()
    work = _unpriv_workdir(tmp_path, uid, gid)
    try:
        conf = _unpriv_config(work, small_repo, uid, gid)
        mnt = work + "/mnt"
        os.mkdir(mnt)
        os.chown(mnt, uid, gid)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        script = """
set -e
cd %(root)s
%(py)s -m launcher.client -o config=%(conf)s %(fqrn)s %(mnt)s
grep -q ' %(mnt)s ' /proc/self/mountinfo
pid=$(getfattr --only-values -n user.pid %(mnt)s)
sha256sum %(mnt)s/README.txt %(mnt)s%(big)s
stat -c '%%i %%h %%n' %(mnt)s/data/hl/pair-a.txt %(mnt)s/data/hl/pair-a.hl
umount %(mnt)s
i=0; while kill -0 $pid 2>/dev/null; do i=$((i+1)); [ $i -lt 400 ] || exit 9; sleep 0.05; done
echo client-exited
""" % dict(root=root, py=_system_python(), conf=conf, fqrn=SMALL, mnt=mnt, big=BIG)
        r = subprocess.run(["unshare", "-Urm", "sh", "-c", script], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
                           preexec_fn=_as_user(uid, gid))
        assert r.returncode == 0, r.stdout + r.stderr
        want = dict((line.split("\t")[2], line.split("\t")[1])
                    for line in expected_listing(EXPECTED)[1])
        out = r.stdout.splitlines()
        assert out.pop(0) == "CernVM-FS: mounted cvmfs on %s" % mnt
        assert out[0].split()[0] == want["/README.txt"]
        assert out[1].split()[0] == want[BIG]
        assert out[2].split()[:2] == out[3].split()[:2]        # one inode, nlink 2
        assert out[-1] == "client-exited"
        assert "(direct," in open(work + "/log").read()
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.root
def test_unprivileged_user_mounts_with_fusermount3(small_repo, tmp_path):
    if shutil.which("fusermount3") is None:
        pytest.skip("fusermount3 not installed")
    uid, gid = unpriv_user()
    work = _unpriv_workdir(tmp_path, uid, gid)
    mnt = work + "/mnt"
    pid = None
    try:
        conf = _unpriv_config(work, small_repo, uid, gid)
        os.mkdir(mnt)
        os.chown(mnt, uid, gid)
        env = {"HOME": work, "USER": pwd.getpwuid(uid).pw_name}
        r = start_client(_system_python(), conf, SMALL, mnt, env=env,
                         preexec_fn=_as_user(uid, gid))
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)
        # Only the mounting user may enter (no allow_other): read as that user.
        r2 = subprocess.run(["sh", "-c", "getfattr --only-values -n user.pid %s; echo; "
                             "sha256sum %s/README.txt" % (mnt, mnt)],
                            stdout=subprocess.PIPE, universal_newlines=True,
                            preexec_fn=_as_user(uid, gid))
        pid = int(r2.stdout.splitlines()[0])
        want = dict((line.split("\t")[2], line.split("\t")[1])
                    for line in expected_listing(EXPECTED)[1])
        assert r2.stdout.splitlines()[1].split()[0] == want["/README.txt"]
        assert "(fusermount," in open(work + "/log").read()
        os.kill(pid, signal.SIGTERM)           # unmounts with fusermount3 -u
        wait_for(lambda: not is_mounted(mnt), what="fusermount3 -u after SIGTERM")
        wait_for(lambda: not pid_alive(pid), what="client exit")
    finally:
        force_unmount(mnt)
        if pid:
            kill_pid(pid)
        shutil.rmtree(work, ignore_errors=True)


# --- a repository written by our publisher ----------------------------------------

def _make_tree(src):
    os.makedirs(src + "/d/sub")
    os.makedirs(src + "/empty")
    with open(src + "/d/hello.txt", "w") as f:
        f.write("hello\n")
    os.link(src + "/d/hello.txt", src + "/d/hello-link.txt")
    os.symlink("hello.txt", src + "/d/rel")
    os.symlink("/cvmfs/elsewhere/x", src + "/d/abs")
    with open(src + "/d/sub/script.sh", "w") as f:
        f.write("#!/bin/sh\necho hi\n")
    os.chmod(src + "/d/sub/script.sh", 0o755)
    with open(src + "/d/tagged", "w") as f:
        f.write("x")
    os.setxattr(src + "/d/tagged", "user.color", b"blue")
    with open(src + "/large.bin", "wb") as f:
        block = hashlib.sha256(b"seed").digest() * 32768       # 1 MiB, incompressible-ish
        for i in range(20):
            f.write(hashlib.sha256(bytes([i])).digest() + block[32:])
    open(src + "/empty-file", "w").close()
    for i in range(50):
        with open(src + "/d/sub/f%02d" % i, "w") as f:
            f.write("file %d\n" % i * (i + 1))


@pytest.mark.root
def test_published_repository_matches_its_source_tree(mounts, tmp_path):
    pytest.importorskip("cryptography")
    from builder.publish import publish
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    _make_tree(src)
    fqrn = "pub.example.org"
    info = publish(src, fqrn, out)
    srv = HttpServer(out + "/srv", tmp_path)
    try:
        r, mnt, work = mounts.mount(fqrn, srv.url, os.path.join(info["keys_dir"], fqrn + ".pub"))
        assert r.returncode == 0, r.stderr
        got_e, got_s = listing(mnt)
        want_e, want_s = listing(src)

        def comparable(lines):
            # the root keeps revision-0 metadata; directory sizes depend on the source fs
            return [l.split("\t")[:3] + l.split("\t")[4:] if l.split("\t")[1] == "d" else l
                    for l in lines if l.split("\t")[6] != "/"]
        assert comparable(got_e) == comparable(want_e)
        assert got_s == want_s
        for rel in ("/d/hello.txt", "/d/sub/script.sh", "/large.bin"):
            assert int(os.stat(mnt + rel).st_mtime) == int(os.stat(src + rel).st_mtime)
        assert os.stat(mnt + "/d/hello.txt").st_ino == os.stat(mnt + "/d/hello-link.txt").st_ino
        assert int(os.getxattr(mnt + "/large.bin", "user.chunks")) > 1
        assert os.getxattr(mnt, "user.revision") == str(info["revision"]).encode()
    finally:
        srv.stop()


@pytest.mark.root
@pytest.mark.slow
def test_new_revision_replaces_cached_names_and_pages(mounts, tmp_path):
    """After the TTL the client switches revision and invalidates the kernel caches:
    changed contents, new and removed names show without remounting."""
    pytest.importorskip("cryptography")
    from builder.publish import publish
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    os.makedirs(src + "/d")
    with open(src + "/d/changing.txt", "w") as f:
        f.write("revision one\n")
    with open(src + "/d/going.txt", "w") as f:
        f.write("bye\n")
    fqrn = "ttl.example.org"
    info = publish(src, fqrn, out, ttl=1)
    srv = HttpServer(out + "/srv", tmp_path)
    try:
        r, mnt, work = mounts.mount(fqrn, srv.url, os.path.join(info["keys_dir"], fqrn + ".pub"),
                                    CVMFS_KCACHE_TIMEOUT="3600")
        assert r.returncode == 0, r.stderr
        assert open(mnt + "/d/changing.txt").read() == "revision one\n"
        assert sorted(os.listdir(mnt + "/d")) == ["changing.txt", "going.txt"]
        with open(src + "/d/changing.txt", "w") as f:
            f.write("revision two, longer\n")
        os.unlink(src + "/d/going.txt")
        with open(src + "/d/new.txt", "w") as f:
            f.write("new\n")
        info2 = publish(src, fqrn, out, ttl=1)
        wait_for(lambda: os.getxattr(mnt, "user.revision") == str(info2["revision"]).encode(),
                 timeout=30, what="switch to the new revision")
        # KCACHE timeout is an hour: only the invalidation notifications can make these pass.
        wait_for(lambda: open(mnt + "/d/changing.txt").read() == "revision two, longer\n",
                 timeout=10, what="new content")
        assert sorted(os.listdir(mnt + "/d")) == ["changing.txt", "new.txt"]
        assert not os.path.exists(mnt + "/d/going.txt")
    finally:
        srv.stop()


@pytest.fixture
def legacy_mount(mounts, tmp_path):
    d = str(tmp_path)
    for name in ("legacy_aufs_repo_21-repo.tar.gz", "legacy_aufs_repo_21-keys.tar.gz"):
        with tarfile.open(os.path.join(FIXTURES, name)) as t:
            t.extractall(d)
    fqrn = "legacy_aufs.cern.ch"
    srv = HttpServer(d + "/srv", tmp_path)
    try:
        r, mnt, work = mounts.mount(
            fqrn, srv.url, d + "/etc/cvmfs/keys/%s.pub" % fqrn,
            CVMFS_ROOT_HASH="6ed3d49a5c64f21f36936ab350d49aaf57585b9a")
        assert r.returncode == 0, r.stderr
        yield mnt
    finally:
        srv.stop()


@pytest.mark.root
def test_legacy_aufs_repository_shows_its_documented_tree(legacy_mount):
    mnt = legacy_mount
    entries = listing(mnt)[0]
    assert len(entries) == 64
    for line in entries:
        kind, path = line.split("\t")[1], line.split("\t")[6]
        name = path.rsplit("/", 1)[-1]
        if kind == "f" and name != ".cvmfscatalog" and not name.startswith("symlink_"):
            base = name[len("hardlink_"):] if name.startswith("hardlink_") else name
            if name.startswith("hardlink_") and base[-2:] in ("_1", "_2"):
                base = base[:-2]
            assert open(mnt + path).read() == base + "\n", path
    paths = dict((l.split("\t")[6], l.split("\t")) for l in entries)
    assert paths["/needs_migration/symlink_foo"][7] == "foo"
    assert paths["/needs_migration/symlink_foo"][4] == "3"
    ino = os.lstat(mnt + "/needs_migration/symlink_foo").st_ino
    assert os.lstat(mnt + "/needs_migration/hardlink_symlink_foo_2").st_ino == ino
    assert os.stat(mnt + "/foo").st_ino == os.stat(mnt + "/hardlink_foo").st_ino
    assert os.stat(mnt + "/foo").st_nlink == 2
    triple = [os.stat(mnt + "/needs_commit_due_to_child/needs_migration/" + n)
              for n in ("bar", "hardlink_bar_1", "hardlink_bar_2")]
    assert len(set(s.st_ino for s in triple)) == 1 and triple[0].st_nlink == 3
    assert os.getxattr(mnt, "user.expires") == b"never (fixed root catalog)"


@pytest.mark.root
def test_legacy_aufs_symlinks_in_nested_catalogs_are_what_the_catalogs_say(legacy_mount):
    # The fixture README lists doesnt_need_migration_either/symlink_foo as a symlink, but
    # the real catalog (the only one holding that path) stores a regular file, mode
    # 0100664, content "foo\n"; the repository outranks the README.
    mnt = legacy_mount
    for d in ("doesnt_need_migration", "doesnt_need_migration/simple_directory",
              "needs_migration", "needs_migration/simple_directory"):
        assert os.readlink(mnt + "/" + d + "/symlink_foo") == "foo", d
    odd = mnt + "/doesnt_need_migration/doesnt_need_migration_either/symlink_foo"
    assert not os.path.islink(odd)
    with open(odd, "rb") as f:
        assert f.read() == b"foo\n"


@pytest.mark.root
def test_debug_option_writes_the_debug_log(mounts, small_repo, tmp_path):
    work, conf = mounts.config(small_repo["url"], small_repo["pubkey"],
                               CVMFS_DEBUGLOG=str(tmp_path / "debug.log"))
    mnt = work + "/mnt"
    r = start_client(None, conf, SMALL, mnt, extra_opts="debug")
    assert r.returncode == 0, r.stderr
    mounts.mounted.append((mnt, client_pid(mnt)))
    assert "mounted %s" % SMALL in open(str(tmp_path / "debug.log")).read()


@pytest.mark.root
def test_foreground_client_serves_until_sigint(mounts, small_repo):
    work, conf = mounts.config(small_repo["url"], small_repo["pubkey"])
    mnt = work + "/mnt"
    proc = subprocess.Popen([sys.executable, "-m", "launcher.client", "-f", "-o",
                             "config=" + conf, SMALL, mnt],
                            env=dict(os.environ, PYTHONPATH=os.path.dirname(
                                os.path.dirname(os.path.abspath(__file__)))),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    mounts.mounted.append((mnt, proc.pid))
    try:
        wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, what="foreground mount")
        assert proc.poll() is None
        assert int(os.getxattr(mnt, "user.pid")) == proc.pid      # no fork in -f mode
        assert open(mnt + "/README.txt", "rb").read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert not is_mounted(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_missing_mountpoint_fails_with_mount_error(mounts, small_repo):
    work, conf = mounts.config(small_repo["url"], small_repo["pubkey"])
    r = start_client(None, conf, SMALL, work + "/no/such/dir")
    assert r.returncode == 4
    assert "mount point" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.root
def test_second_client_on_a_live_mount_is_refused_as_double_mount(mounts, small_repo):
    """Regression: running the client twice on one mount point stacked a second mount
    over the first and left two clients; cvmfs2 refuses this with code 21."""
    mnt, work = mount_small(mounts, small_repo)
    r = start_client(None, work + "/client.conf", SMALL, mnt)
    assert r.returncode == 21, r.stderr
    assert "already mounted" in r.stderr and "Traceback" not in r.stderr
    with open("/proc/self/mountinfo") as f:
        assert sum(1 for line in f if line.split()[4] == os.path.realpath(mnt)) == 1
    assert os.listdir(mnt)                          # the first client still serves


def test_help_prints_usage_and_exits_0():
    r = subprocess.run([sys.executable, "-m", "launcher.client", "-h"],
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert r.returncode == 0 and r.stdout.startswith("usage:") and r.stderr == ""


def test_usage_errors_exit_2_without_traceback():
    r = subprocess.run([sys.executable, "-m", "launcher.client", SMALL],
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert r.returncode == 2 and "usage" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.root
def test_premounted_descriptor_via_dev_fd(mounts, small_repo):
    """cvmfs2's /dev/fd/N convention: someone else mounted, the client only serves."""
    from launcher.fuse import mount as fmount
    work, conf = mounts.config(small_repo["url"], small_repo["pubkey"])
    mnt = work + "/mnt"
    fd = fmount.mount_direct(mnt, "premounted-test")
    mounts.mounted.append((mnt, None))
    try:
        r = subprocess.run([sys.executable, "-m", "launcher.client", "-o", "config=" + conf,
                            SMALL, "/dev/fd/%d" % fd], pass_fds=(fd,),
                           env=dict(os.environ, PYTHONPATH=os.path.dirname(
                               os.path.dirname(os.path.abspath(__file__)))),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=60)
    finally:
        os.close(fd)
    assert r.returncode == 0, r.stderr
    pid = client_pid(mnt)
    mounts.mounted.append((mnt, pid))
    assert os.listdir(mnt + "/nested/inner")
    subprocess.check_call(["umount", mnt])
    wait_for(lambda: not pid_alive(pid), what="client exit after umount")
