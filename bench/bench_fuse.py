"""Benchmark: the builtin client's FUSE mount against squashfuse and the local disk.

    sudo .venv/bin/python bench/bench_fuse.py [--files 20000] [--big-mb 1024] [--keep]

Builds one tree (N small files in 100 directories, 2,000 of them read in the
small-file test, and one big file), then serves it three ways, all measured in
this run:
  * cvmfs   -- published with builder.publish, served by tests/httpd.py on
               127.0.0.1, mounted by ``python3 -m launcher.client``;
  * squashfuse -- a squashfs image (mksquashfs) of the same tree, the FUSE reference;
  * local   -- the tree on local disk, the limit.
Metrics: ``find -type f | xargs stat`` cold (fresh mount, empty client cache,
dropped kernel caches) and warm; reading 2,000 small files warm; sequential
read of the big file warm; peak RSS (VmHWM) of the client and of squashfuse.
Prints a table with ratios cvmfs/squashfuse and cvmfs/local.
Needs root (drop_caches, mounts), mksquashfs and squashfuse.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FQRN = "bench.example.org"


def build_tree(src, nfiles, big_mb):
    ndirs = 100
    per = max(1, nfiles // ndirs)
    payload = os.urandom(4096)
    n = 0
    for d in range(ndirs):
        dd = os.path.join(src, "dir%03d" % d)
        os.makedirs(dd)
        for i in range(per):
            size = 200 + (n * 37) % 3800
            with open(os.path.join(dd, "f%05d" % i), "wb") as f:
                f.write(b"%08d" % n + payload[:size])
            n += 1
    block = os.urandom(1 << 20)
    with open(os.path.join(src, "big.bin"), "wb") as f:
        for i in range(big_mb):
            f.write(b"%016d" % i + block[16:])     # every MiB distinct: no chunk dedup
    return n


def timed(cmd, cwd):
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def vm_hwm_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def wait_port(port_file, proc):
    deadline = time.time() + 20
    while not os.path.exists(port_file) or not open(port_file).read().strip():
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("HTTP server did not start")
        time.sleep(0.05)
    return int(open(port_file).read())


class Cvmfs(object):
    def __init__(self, work, out, url, python):
        self.work, self.out, self.url, self.python = work, out, url, python
        self.mnt = self.pid = None
        self.n = 0

    def mount(self):
        self.n += 1
        d = os.path.join(self.work, "cvmfs%d" % self.n)
        os.makedirs(d + "/mnt")
        conf = d + "/client.conf"
        with open(conf, "w") as f:
            f.write("CVMFS_SERVER_URL=%s/cvmfs/@fqrn@\nCVMFS_HTTP_PROXY=DIRECT\n"
                    "CVMFS_PUBLIC_KEY=%s/keys/%s.pub\nCVMFS_CACHE_BASE=%s/cache\n"
                    "CVMFS_SHARED_CACHE=no\nCVMFS_QUOTA_LIMIT=-1\nCVMFS_USYSLOG=%s/log\n"
                    % (self.url, self.out, FQRN, d, d))
        subprocess.run([self.python, "-m", "launcher.client", "-o", "config=" + conf, FQRN,
                        d + "/mnt"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        self.mnt = d + "/mnt"
        self.pid = int(os.getxattr(self.mnt, "user.pid"))

    def umount(self):
        subprocess.run(["umount", "-l", self.mnt])
        deadline = time.time() + 20
        while os.path.exists("/proc/%d" % self.pid) and time.time() < deadline:
            time.sleep(0.05)


class Squash(object):
    def __init__(self, work, image):
        self.work, self.image = work, image
        self.mnt = os.path.join(work, "sqmnt")
        os.makedirs(self.mnt, exist_ok=True)
        self.proc = None

    def mount(self):
        self.proc = subprocess.Popen(["squashfuse", "-f", self.image, self.mnt])
        deadline = time.time() + 20
        while not os.path.ismount(self.mnt):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("squashfuse did not mount")
            time.sleep(0.02)
        self.pid = self.proc.pid

    def umount(self):
        subprocess.run(["umount", "-l", self.mnt])
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def measure(name, mnt, small_list, big, results, remount=None):
    stat_cmd = "find . -type f -print0 | xargs -0 stat > /dev/null"
    drop_caches()
    if remount:
        remount()
        mnt = remount.__self__.mnt
    results[(name, "stat cold")] = timed(stat_cmd, mnt)
    results[(name, "stat warm")] = min(timed(stat_cmd, mnt) for _ in range(3))
    cat_small = "xargs cat < %s > /dev/null" % small_list
    timed(cat_small, mnt)
    results[(name, "2000 files warm")] = min(timed(cat_small, mnt) for _ in range(3))
    timed("cat %s > /dev/null" % big, mnt)
    results[(name, "big read warm")] = min(timed("cat %s > /dev/null" % big, mnt)
                                           for _ in range(2))
    return mnt


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--big-mb", type=int, default=1024)
    ap.add_argument("--dir", default=None, help="work directory parent (default /tmp)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the client")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench_fuse: needs root (drop_caches, mounts)")
    for tool in ("mksquashfs", "squashfuse"):
        if shutil.which(tool) is None:
            sys.exit("bench_fuse: %s not installed" % tool)
    work = tempfile.mkdtemp(prefix="bench-fuse-", dir=args.dir)
    src, out = work + "/src", work + "/out"
    httpd = cvmfs = squash = None
    results = {}
    try:
        t = time.perf_counter()
        n = build_tree(src, args.files, args.big_mb)
        print("tree: %d files + %d MiB file (%.1f s)" % (n, args.big_mb, time.perf_counter() - t))
        small_list = work + "/small.list"
        with open(small_list, "w") as f:
            for i in range(2000):
                f.write("dir%03d/f%05d\n" % (i % 100, i // 100))
        from builder.publish import publish
        t = time.perf_counter()
        publish(src, FQRN, out)
        print("published (%.1f s)" % (time.perf_counter() - t))
        t = time.perf_counter()
        subprocess.run(["mksquashfs", src, work + "/tree.sqfs", "-noappend", "-quiet",
                        "-no-progress"], check=True, stdout=subprocess.DEVNULL)
        print("mksquashfs (%.1f s)" % (time.perf_counter() - t))
        port_file = work + "/port"
        httpd = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "httpd.py"),
                                  out + "/srv", "--port-file", port_file])
        url = "http://127.0.0.1:%d" % wait_port(port_file, httpd)

        cvmfs = Cvmfs(work, out, url, args.python)
        measure("cvmfs", None, small_list, "big.bin", results, remount=cvmfs.mount)
        results[("cvmfs", "peak RSS MB")] = vm_hwm_mb(cvmfs.pid)
        cvmfs.umount()

        squash = Squash(work, work + "/tree.sqfs")
        measure("squashfuse", None, small_list, "big.bin", results, remount=squash.mount)
        results[("squashfuse", "peak RSS MB")] = vm_hwm_mb(squash.pid)
        squash.umount()

        measure("local", src, small_list, "big.bin", results)
    finally:
        if cvmfs and cvmfs.mnt:
            subprocess.run(["umount", "-l", cvmfs.mnt], stderr=subprocess.DEVNULL)
        if squash and squash.proc and squash.proc.poll() is None:
            squash.umount()
        if httpd:
            httpd.kill()
            httpd.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results, args)


def print_table(results, args):
    metrics = ["stat cold", "stat warm", "2000 files warm", "big read warm", "peak RSS MB"]
    print()
    print("bench_fuse: %d files, %d MiB big file" % (args.files, args.big_mb))
    print("| metric | cvmfs (builtin) | squashfuse | local | cvmfs/squashfuse | cvmfs/local |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for m in metrics:
        c = results.get(("cvmfs", m))
        s = results.get(("squashfuse", m))
        loc = results.get(("local", m))
        unit = "" if m.endswith("MB") else " s"

        def fmt(v):
            return "-" if v is None else ("%.3f%s" % (v, unit))

        def ratio(a, b):
            return "-" if a is None or not b else "%.2fx" % (a / b)
        print("| %s | %s | %s | %s | %s | %s |" % (m, fmt(c), fmt(s), fmt(loc), ratio(c, s),
                                                 ratio(c, loc)))


if __name__ == "__main__":
    main(sys.argv[1:])
