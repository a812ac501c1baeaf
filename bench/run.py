#!/usr/bin/env python3
"""Run every benchmark in bench/ (bench_*.py) in turn; each prints its own table.

    make bench                  # all of them
    python3 bench/run.py fuse   # only bench_fuse.py
"""
import glob
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv):
    wanted = set(argv)
    status = 0
    for path in sorted(glob.glob(os.path.join(HERE, "bench_*.py"))):
        name = os.path.basename(path)[len("bench_"):-len(".py")]
        if wanted and name not in wanted:
            continue
        print("=" * 72)
        print("bench: %s" % name, flush=True)
        r = subprocess.run([sys.executable, path], cwd=os.path.dirname(HERE))
        if r.returncode != 0:
            print("bench %s FAILED with status %d" % (name, r.returncode))
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
