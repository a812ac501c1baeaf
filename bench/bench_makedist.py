"""Unpacking RPMs in pure Python (builder.rpmfile + builder.cpio) against rpm's own C code.

Builds one ~48 MB package (binary-like and text-like files) per payload compressor with
rpmbuild, then times, best of 3:
  ours       RpmFile.verify_digests() + decompress + cpio extraction to disk
  rpm2cpio   `rpm2cpio PKG > /dev/null` (decompression only, C; the reference makedist
             piped this into cpio, so a full reference run is slower than this row)
and prints the ratio ours / rpm2cpio.
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import rpmfactory as rf  # noqa: E402
from builder import cpio, rpmfile  # noqa: E402


def best(fn, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    why = rf.tools_missing()
    if why:
        print("skipped: %s" % why)
        return 0
    tmp = tempfile.mkdtemp(prefix="bench-makedist-")
    try:
        rnd = random.Random(1)
        binary = bytes(rnd.getrandbits(8) for _ in range(4 << 20)) * 4   # 16 MB, partly repetitive
        words = [b"cvmfs", b"catalog", b"chunk", b"fuse", b"proxy", b"repository", b"\n"]
        text = b" ".join(rnd.choice(words) for _ in range(2 << 20))
        text = (text * (32 * (1 << 20) // len(text) + 1))[:32 << 20]
        pkgs = []
        for comp in ("gzip", "xz", "zstd", "bzip2"):
            p = rf.Pkg("bench-" + comp, "1", "1", payload=comp)
            p.file("/usr/lib64/libbig.so", binary, 0o755)
            p.file("/usr/share/big.txt", text)
            for i in range(500):
                p.file("/usr/share/small/f%03d" % i, b"small file %d\n" % i)
            pkgs.append(p)
        built = rf.build(pkgs, os.path.join(tmp, "out"), os.path.join(tmp, "work"))
        print("%-8s %10s %10s %12s %7s" % ("payload", "rpm MB", "ours s", "rpm2cpio s", "ratio"))
        for p in pkgs:
            path = built[p.filename]

            def ours():
                dest = tempfile.mkdtemp(dir=tmp)
                rpm = rpmfile.RpmFile(path)
                rpm.verify_digests()
                with rpm.open_payload() as payload:
                    cpio.extract(payload, dest)
                shutil.rmtree(dest)

            def reference():
                with open(os.devnull, "wb") as null:
                    subprocess.run(["rpm2cpio", path], stdout=null, check=True)
            a, b = best(ours), best(reference)
            print("%-8s %10.1f %10.3f %12.3f %7.2f" % (p.payload, os.path.getsize(path) / 1e6,
                                                       a, b, a / b))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
