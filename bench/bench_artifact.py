#!/usr/bin/env python3
"""Benchmark the self-extracting artifact (issue 3) against references measured in the same run.

    python3 bench/bench_artifact.py [--mb 60] [--runs 5]

Makes a synthetic dist of realistic shape (~60 MB of compressible binaries and
libraries, symlink chains, hardlinks; tests/test_artifact.make_dist), builds
the artifact, and prints:
  size:  artifact vs `tar czf` of the same dist (target: ratio <= 1);
  first run (extraction + `-v`) vs `tar xzf` of the dist (target: < 1.5 s);
  warm run of `./cvmfsexec -v` vs the command script run directly and a bare
  `python -S -c pass` (target: < 100 ms);
under Python 3.6 and the newest pyenv Python (the preamble finds python3 on PATH).
Wall-clock medians; the machine may be shared, so read the ratios.
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from builder import artifact  # noqa: E402
from launcher import extract  # noqa: E402
from tests.conftest import pyenv_pythons  # noqa: E402
from tests.test_artifact import make_dist  # noqa: E402


CPU = {}     # label -> [cpu seconds of the child processes per run]


def timed(cmd, env=None, cwd=None, label=None):
    """Wall seconds of cmd; with label, also records its CPU seconds (user+sys, all children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if label:
        CPU.setdefault(label, []).append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall


def median_of(runs, fn):
    return statistics.median(fn(i) for i in range(runs))


def pythons():
    pys = pyenv_pythons()
    key = lambda v: tuple(int(x) for x in v.split(".")[:3])  # noqa: E731
    out = [(v, pys[v]) for v in pys if v.startswith("3.6.")][:1]
    if pys:
        newest = max(pys, key=key)
        if not out or out[0][0] != newest:
            out.append((newest, pys[newest]))
    return out or [("system", sys.executable)]


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int, default=60)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="bench-artifact-")
    try:
        return bench(work, args.mb, args.runs)
    finally:
        extract.remove_tree(work)


def bench(work, mb, runs):
    dist = make_dist(os.path.join(work, "dist"), total_bytes=mb << 20)
    rows = []
    tgz = os.path.join(work, "dist.tar.gz")
    t_tar_c = timed(["tar", "czf", tgz, "-C", work, "dist"])
    art = os.path.join(work, "cvmfsexec")
    start = time.perf_counter()
    artifact.build(dist, art)
    t_build = time.perf_counter() - start
    size_tgz, size_art = os.path.getsize(tgz), os.path.getsize(art)
    rows.append(("size: artifact vs dist tar.gz (MB)", size_art / 1e6, size_tgz / 1e6, "<= 1"))
    rows.append(("build: build.py -o vs tar czf (s)", t_build, t_tar_c, "-"))

    def untar(i):
        d = os.path.join(work, "untar%d" % i)
        os.mkdir(d)
        t = timed(["tar", "xzf", tgz, "-C", d], label="untar")
        extract.remove_tree(d)
        return t
    t_untar = median_of(runs, untar)

    for ver, py in pythons():
        bindir = os.path.join(work, "bin-" + ver)
        os.mkdir(bindir)
        os.symlink(py, os.path.join(bindir, "python3"))
        env = dict(os.environ, PATH=bindir + ":/usr/bin:/bin")
        env.pop("CVMFSEXEC_EXTRACT_DIR", None)

        def first(i):
            job = os.path.join(work, "job-%s-%d" % (ver, i))
            os.mkdir(job)
            shutil.copy(art, job)
            t = timed([os.path.join(job, "cvmfsexec"), "-v"], env=env, label="first" + ver)
            if i:
                extract.remove_tree(job)
            return t
        t_first = median_of(runs, first)
        job = os.path.join(work, "job-%s-0" % ver)
        t_warm = median_of(runs * 2, lambda i: timed([os.path.join(job, "cvmfsexec"), "-v"], env=env,
                                                      label="warm" + ver))
        t_script = median_of(runs * 2, lambda i: timed(
            [py, "-S", os.path.join(job, ".cvmfsexec", "cvmfsexec"), "-v"], env=env, label="script" + ver))
        t_bare = median_of(runs * 2, lambda i: timed([py, "-S", "-c", "pass"], env=env))
        rows.append(("first run py%s vs tar xzf (s)" % ver, t_first, t_untar, "< 1.5 s"))
        rows.append(("  cpu of it: user+sys (s)", statistics.median(CPU["first" + ver]),
                     statistics.median(CPU["untar"]), "-"))
        rows.append(("warm run py%s vs script direct (ms)" % ver, t_warm * 1e3, t_script * 1e3, "< 100 ms"))
        rows.append(("  cpu of the warm run: user+sys (ms)", statistics.median(CPU["warm" + ver]) * 1e3,
                     statistics.median(CPU["script" + ver]) * 1e3, "-"))
        rows.append(("warm run py%s vs bare python -S (ms)" % ver, t_warm * 1e3, t_bare * 1e3, "-"))
        extract.remove_tree(job)

    print("dist: %d MB of files (%s), artifact sha256 payload; %d runs, medians, load %s"
          % (mb, dist, runs, open("/proc/loadavg").read().split()[0]))
    print("| measure | artifact | reference | ratio | target |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, value, ref, target in rows:
        print("| %s | %.3f | %.3f | %.2f | %s |" % (name, value, ref, value / ref if ref else 0, target))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
