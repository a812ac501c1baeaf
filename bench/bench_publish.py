#!/usr/bin/env python3
"""Benchmark of the publisher (builder/publish.py).

    python3 bench/bench_publish.py [--files 20000] [--big-mb 256] [--keep DIR]

Workloads: (1) --files small files (random 0-4 KiB) in directories of 200,
(2) one --big-mb MiB random file (chunked), (3) a second revision of (1) with
1% of the files changed.  Reference, measured in the same run on the same
trees: mksquashfs (squashfs-tools, gzip, one processor -- also reads,
compresses and indexes every file), and for (2) a plain Python loop doing
zlib.compress + sha1 + write of 8 MiB blocks (the floor of what the publisher
must do).  Prints a table with the ratio publisher / reference.
"""
import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from builder import publish as pub  # noqa: E402

FQRN = "bench.example.org"


def timed(func, *args, **kwargs):
    t0 = time.monotonic()
    func(*args, **kwargs)
    return time.monotonic() - t0


def make_small(root, n):
    rnd = random.Random(7)
    for i in range(n):
        d = os.path.join(root, "d%04d" % (i // 200))
        if i % 200 == 0:
            os.makedirs(d)
        with open(os.path.join(d, "f%06d" % i), "wb") as f:
            f.write(os.urandom(rnd.randrange(0, 4096)))


def make_big(root, mb):
    os.makedirs(root)
    with open(os.path.join(root, "big.bin"), "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(mb):
            f.write(i.to_bytes(4, "little") + block[4:])


def mksquashfs(src, dest):
    if not shutil.which("mksquashfs"):
        return None
    t0 = time.monotonic()
    subprocess.run(["mksquashfs", src, dest, "-comp", "gzip", "-processors", "1", "-noappend",
                    "-quiet", "-no-progress"], check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def zlib_floor(path, out_dir):
    os.makedirs(out_dir)
    t0 = time.monotonic()
    with open(path, "rb") as f:
        i = 0
        while True:
            block = f.read(pub.CHUNK_SIZE)
            if not block:
                break
            blob = zlib.compress(block)
            name = hashlib.sha1(blob).hexdigest()
            with open(os.path.join(out_dir, name), "wb") as o:
                o.write(blob)
            i += 1
    return time.monotonic() - t0


def row(name, ours, ref, ref_name):
    ratio = "%.2f" % (ours / ref) if ref else "-"
    print("%-34s %9.2f s %9s %-26s %6s" % (name, ours, "%.2f s" % ref if ref else "-",
                                         ref_name, ratio))


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--big-mb", type=int, default=256)
    ap.add_argument("--keep", metavar="DIR")
    args = ap.parse_args(argv)
    work = args.keep or tempfile.mkdtemp(prefix="bench-publish-")
    try:
        small = os.path.join(work, "small")
        make_small(small, args.files)
        big = os.path.join(work, "big")
        make_big(big, args.big_mb)
        print("%-34s %11s %9s %-26s %6s" % ("workload", "publisher", "reference", "", "ratio"))
        out = os.path.join(work, "out-small")
        t = timed(pub.publish, small, FQRN, out)
        row("%d files, revision 1" % args.files, t,
            mksquashfs(small, os.path.join(work, "small.sqfs")), "mksquashfs -processors 1")
        rnd = random.Random(3)
        for i in rnd.sample(range(args.files), args.files // 100):
            with open(os.path.join(small, "d%04d" % (i // 200), "f%06d" % i), "ab") as f:
                f.write(b"changed")
        t = timed(pub.publish, small, FQRN, out)
        row("  revision 2 (1% changed)", t,
            mksquashfs(small, os.path.join(work, "small2.sqfs")), "mksquashfs -processors 1")
        t = timed(pub.publish, big, FQRN, os.path.join(work, "out-big"))
        row("%d MiB file (chunked)" % args.big_mb, t,
            zlib_floor(os.path.join(big, "big.bin"), os.path.join(work, "floor")),
            "zlib+sha1+write loop")
        row("  same, mksquashfs", t, mksquashfs(big, os.path.join(work, "big.sqfs")),
            "mksquashfs -processors 1")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
