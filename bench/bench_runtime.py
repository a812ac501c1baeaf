#!/usr/bin/env python3
"""Runtime start-up cost: `./cvmfsexec demo.cvmfs.local -- true` (warm cache) against
`true` alone, against `./cvmfsexec -- true` (namespaces only) and against mounting
and unmounting the same repository with the builtin client by hand.

    .venv/bin/python bench/bench_runtime.py [RUNS]
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import runtime_util  # noqa: E402
from builder import artifact  # noqa: E402
from builder.demo import FQRN, start_server  # noqa: E402
import builder.demo as demo  # noqa: E402
from builder.publish import publish  # noqa: E402


def timed(argv, runs, **kw):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(argv, stdout=subprocess.DEVNULL, **kw)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise SystemExit("benchmark command failed: %r" % (argv,))
    return statistics.median(times)


def by_hand(base, runs):
    """Mount with `python -m launcher.client` (daemon), then unmount and wait for it."""
    from launcher import mountconf
    from launcher.mountrepo import umount_path, poll_until
    conf, _ = mountconf.write(FQRN, base)
    mp = os.path.join(base, "hand")
    os.makedirs(mp, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=base)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "launcher.client", "-o", "config=" + conf,
                            FQRN, mp], env=env, stdout=subprocess.DEVNULL)
        if p.returncode != 0:
            raise SystemExit("client mount failed")
        subprocess.run(["true"], cwd=mp)
        umount_path(mp)
        poll_until(lambda: b"launcher.client" not in subprocess.run(
            ["pgrep", "-af", mp], stdout=subprocess.PIPE).stdout, 10)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    work = tempfile.mkdtemp(prefix="bench-runtime-")
    demo.WORK = work
    server = None
    try:
        src = os.path.join(work, "src")
        os.makedirs(os.path.join(src, "d"))
        for i in range(50):
            with open(os.path.join(src, "d", "f%d" % i), "w") as f:
                f.write("file %d\n" % i)
        publish(src, FQRN, os.path.join(work, "pub"))
        server, port = start_server(os.path.join(work, "pub", "srv"))
        dist = os.path.join(work, "dist")
        runtime_util.make_dist(dist, [(FQRN, os.path.join(work, "pub", "keys", FQRN + ".pub"))],
                               server_url="http://127.0.0.1:%d/cvmfs/@fqrn@" % port)
        exe = os.path.join(work, "cvmfsexec")
        artifact.build(dist, exe)
        # the node's python3 first (a pyenv shim on PATH adds ~0.3 s of bash per run)
        os.environ["PATH"] = "/usr/bin:/bin:" + os.environ.get("PATH", "")
        subprocess.run([exe, FQRN, "--", "true"], check=True)          # extract + warm cache
        rows = [("true", timed(["true"], runs))]
        rows.append(("cvmfsexec -- true (no repository)", timed([exe, "--", "true"], runs)))
        rows.append(("cvmfsexec %s -- true (warm)" % FQRN, timed([exe, FQRN, "--", "true"],
                                                                    runs)))
        base = os.path.join(work, ".cvmfsexec")
        rows.append(("client mount + umount by hand", by_hand(base, runs)))
        ref_true, ref_hand = rows[0][1], rows[3][1]
        print("%-44s %10s %10s %10s" % ("command (median of %d)" % runs, "seconds",
                                         "x true", "x by hand"))
        for name, t in rows:
            print("%-44s %10.3f %10.0f %10.2f" % (name, t, t / ref_true, t / ref_hand))
    finally:
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
