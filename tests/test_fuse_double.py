"""FUSE server tests against a test double of the repository, and the double itself.

The double is a read-only Repository over a local directory (FUSE-layer tests only).

It stands in for launcher.cvmfs.repository.Repository where the tests exercise
the kernel protocol, mounting and the server rather than the repository format:
same facade (lookup/listdir/readlink/open/xattrs/statfs/info), fed by os.lstat.
Run as a script it mounts SRC at MNT and serves until unmounted:

    python tests/test_fuse_double.py SRC MNT [direct|fusermount] [--slow-open SECONDS]

The tests here need what a real repository cannot easily give on demand: a
download that takes seconds (``--slow-open``: opening any file named ``slow*``
sleeps), to prove one slow request does not hold up the others.
"""

import os
import stat
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Entry(object):
    def __init__(self, path, st, real):
        self.name = path.rsplit("/", 1)[-1]
        self.path = path
        self.inode = st.st_ino
        self.mode = st.st_mode
        self.size = st.st_size
        self.mtime = int(st.st_mtime)
        self.uid = st.st_uid
        self.gid = st.st_gid
        self.nlink = st.st_nlink
        self.symlink = os.readlink(real) if stat.S_ISLNK(st.st_mode) else None
        self.content_hash = ("%040x" % st.st_ino) if stat.S_ISREG(st.st_mode) else None
        self.chunked = False
        self.has_xattrs = bool(os.listxattr(real, follow_symlinks=False)) \
            if not stat.S_ISLNK(st.st_mode) else False
        self.is_nested_root = False


class Handle(object):
    def __init__(self, real):
        self.fd = os.open(real, os.O_RDONLY)

    def read(self, offset, size):
        return os.pread(self.fd, size, offset)

    def close(self):
        os.close(self.fd)


class LocalTreeRepository(object):
    """The Repository facade over a directory (a test double, see the module docstring)."""

    def __init__(self, root, fqrn="double.example.org", slow_open=0.0):
        self.root = os.path.abspath(root)
        self.fqrn = fqrn
        self.revision = 7
        self.root_hash = "0" * 40
        self.slow_open = slow_open

    def _real(self, path):
        return self.root + path

    def lookup(self, path):
        try:
            st = os.lstat(self._real(path))
        except OSError:
            return None
        return Entry(path, st, self._real(path))

    def listdir(self, path):
        return [self.lookup(path + "/" + n) for n in sorted(os.listdir(self._real(path)))]

    def readlink(self, entry):
        return entry.symlink

    def open(self, entry):
        if self.slow_open and entry.name.startswith("slow"):
            open(self.root + ".slow-started", "w").close()   # tests wait for this
            time.sleep(self.slow_open)    # stands in for a slow download
        if os.path.basename(entry.path).startswith("ioerror"):
            raise OSError(5, "download failed (test double)")
        return Handle(self._real(entry.path))

    def xattrs(self, entry):
        real = self._real(entry.path)
        return dict((n, os.getxattr(real, n)) for n in os.listxattr(real))

    def statfs(self):
        return {"total_bytes": 1 << 30, "free_bytes": 1 << 29, "files": 100}

    def reload(self):
        return False

    def info(self):
        return {"host": "http://double.invalid/cvmfs/" + self.fqrn, "proxy": "DIRECT",
                "revision": self.revision, "root_hash": self.root_hash, "nclg": 1}

    def close(self):
        pass


def serve(src, mnt, method=None, slow_open=0.0):
    from launcher.fuse import mount as fmount
    from launcher.fuse.channel import Channel
    from launcher.fuse.cvmfsops import CvmfsOperations
    from launcher.fuse.server import Server
    import signal
    repo = LocalTreeRepository(src, slow_open=slow_open)
    ops = CvmfsOperations(repo, {"CVMFS_CLAIM_OWNERSHIP": "no"})
    fd, how = fmount.mount(mnt, options=("allow_other",) if os.geteuid() == 0 else (),
                           method=method)
    ch = Channel(fd)
    ch.handshake()
    server = Server(ops, ch, log=lambda m: sys.stderr.write(m + "\n"))
    signal.signal(signal.SIGTERM, lambda *a: fmount.unmount(mnt, how))
    sys.stdout.write("ready %s %d\n" % (how, ch.minor))
    sys.stdout.flush()
    server.run()


if __name__ == "__main__":
    args = sys.argv[1:]
    slow = 0.0
    if "--slow-open" in args:
        i = args.index("--slow-open")
        slow = float(args[i + 1])
        del args[i:i + 2]
    serve(args[0], args[1], args[2] if len(args) > 2 else None, slow)


# --- tests -----------------------------------------------------------------------
try:
    import pytest
except ImportError:          # run as a script by the tests: pytest not needed
    pytest = None

if pytest is not None:
    from test_fuse_helpers import force_unmount, is_mounted, wait_for

    @pytest.fixture
    def double_mount(tmp_path):
        """Factory: mount a directory through the double in a child process."""
        started = []

        def start(src, *args):
            mnt = str(tmp_path / ("mnt%d" % len(started)))
            os.mkdir(mnt)
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), src, mnt]
                                    + list(args), stdout=subprocess.PIPE)
            started.append((mnt, proc))
            wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, what="double mount")
            assert proc.poll() is None, "the double's server exited"
            return mnt
        yield start
        for mnt, proc in started:
            force_unmount(mnt)
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    @pytest.mark.fuse
    @pytest.mark.root
    def test_a_slow_download_does_not_block_other_requests(double_mount, tmp_path):
        src = tmp_path / "src"
        (src / "d").mkdir(parents=True)
        (src / "slow.bin").write_bytes(b"s" * 100000)
        for i in range(20):
            (src / "d" / ("f%d" % i)).write_text("%d\n" % i)
        mnt = double_mount(str(src), "--slow-open", "3")
        done = {}

        def slow_reader():
            t0 = time.time()
            with open(mnt + "/slow.bin", "rb") as f:
                done["data"] = f.read()
            done["seconds"] = time.time() - t0
        t = threading.Thread(target=slow_reader)
        t.start()
        wait_for(lambda: os.path.exists(str(src) + ".slow-started"), what="slow read")
        t0 = time.time()
        names = sorted(os.listdir(mnt + "/d"))
        contents = [open(mnt + "/d/" + n).read() for n in names]
        fast = time.time() - t0
        t.join(30)
        assert len(names) == 20 and contents[0] == "0\n"
        assert fast < 1.5, "other requests waited %.1f s behind the slow download" % fast
        assert done["data"] == b"s" * 100000 and done["seconds"] >= 2.5

    @pytest.mark.fuse
    @pytest.mark.root
    def test_large_directory_listing_in_slices(double_mount, tmp_path):
        """READDIR(PLUS) slices: offsets continue where the kernel left off, nothing lost."""
        src = tmp_path / "src"
        src.mkdir()
        names = ["file-with-a-longer-name-%04d" % i for i in range(1500)]
        for n in names:
            (src / n).write_text(n)
        mnt = double_mount(str(src))
        assert sorted(os.listdir(mnt)) == names
        r = subprocess.run(["ls", "-l", mnt], stdout=subprocess.PIPE, universal_newlines=True)
        assert r.returncode == 0 and r.stdout.count("file-with-a-longer-name-") == 1500
        assert open(mnt + "/" + names[1234]).read() == names[1234]
